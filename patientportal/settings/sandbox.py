"""The Cerner sandbox as its own origin (127.0.0.1:8001 in the demo). Dev and demo only.

Run with ``DJANGO_SETTINGS_MODULE=patientportal.settings.sandbox`` (deploy/Procfile.demo). The
sandbox reads ``SANDBOX_FAULTS`` (JSON, see ``fhirlink/sandbox/faults.py``) on every request.
"""

from __future__ import annotations

from .dev import *  # noqa: F403

# SANDBOX_PROFILE=generic serves the second profile instead (a standards-only SMART App Launch
# 2.x server, fhirlink/sandbox/urls_generic.py; 127.0.0.1:8002 in the demo).
SANDBOX_PROFILE = env.str("SANDBOX_PROFILE", default="cerner")  # noqa: F405
ROOT_URLCONF = (
    "fhirlink.sandbox.urls_generic" if SANDBOX_PROFILE == "generic" else "fhirlink.sandbox.urls"
)

# Browsers send cookies by host, not port: the sandbox on :8001 must never read or touch the
# main app's session and CSRF cookies on :8000 (and vice versa).
SESSION_COOKIE_NAME = "sandbox_sessionid"
CSRF_COOKIE_NAME = "sandbox_csrftoken"
