"""The Cerner sandbox as its own origin (127.0.0.1:8001 in the demo). Dev and demo only."""

from __future__ import annotations

from .dev import *  # noqa: F403

ROOT_URLCONF = "fhirlink.sandbox.urls"
