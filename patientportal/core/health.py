"""Liveness (/healthz) and readiness (/readyz) probes. No authentication, no details leaked."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:
        logger.warning("Readiness: database unreachable (%s)", type(exc).__name__)
        return False


def broker_ready() -> bool:
    from patientportal.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception as exc:
        logger.warning("Readiness: broker unreachable (%s)", type(exc).__name__)
        return False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The process can do its work: database and broker reachable."""
    checks = {"database": database_ready(), "broker": broker_ready()}
    ready = all(checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: "ok" if ok else "unreachable" for name, ok in checks.items()},
    }
    if not ready:
        body["code"] = "not_ready"
    return JsonResponse(body, status=200 if ready else 503)
