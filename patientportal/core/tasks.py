"""Project-wide housekeeping tasks."""

from __future__ import annotations

import socket

from celery import shared_task
from django.core.cache import cache
from django.core.management import call_command


@shared_task(name="patientportal.ping")
def ping(nonce: str) -> str:
    """Round-trip check for operators and tests: leaves `worker-ping:<nonce>` in the cache."""
    cache.set(f"worker-ping:{nonce[:64]}", socket.gethostname(), timeout=300)
    return "pong"


@shared_task(name="patientportal.clear_expired_oauth_tokens", ignore_result=True)
def clear_expired_oauth_tokens() -> None:
    """Drop expired and revoked mobile-app OAuth tokens (django-oauth-toolkit's cleartokens)."""
    call_command("cleartokens")
