"""What every step of a run does before and around its one request: check that the run may go
on (cancelled, consent, connection), renew its lease, open the FHIR client with the
connection's token, take a slot of the health system's limits, record errors."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from functools import cache
from typing import Any

from django.db import transaction
from django.utils import timezone

from fhirlink import http
from fhirlink.conf import sync_settings
from fhirlink.ehr.fhir import FhirClient, retry_delay
from fhirlink.ehr.limiter import HealthSystemLimiter, Slot
from fhirlink.exceptions import (
    ConnectionGone,
    ConnectionNotFound,
    EhrUnavailable,
    ReauthRequired,
    RefreshInProgress,
    RefreshThrottled,
)
from fhirlink.models import ConnectionStatus, SyncRun, SyncRunStatus
from fhirlink.services.tokens import connection_access_token, connection_refresh
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted

logger = logging.getLogger(__name__)

USABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING)
# The token could not be had now: ask again later (the refresh is another worker's, or the
# EHR is down for a moment).
TOKEN_RETRYABLE = (RefreshInProgress, RefreshThrottled, EhrUnavailable, http.EhrRetryable)
# The connection can no longer be used: the run ends with the error's code.
CONNECTION_ENDED = (ReauthRequired, ConnectionGone, ConnectionNotFound)
# A step finding no slot of its health system's limits asks again this often, for at most
# this long, before it re-enqueues itself.
SLOT_POLL_SECONDS = 0.02
SLOT_WAIT_SECONDS_MAX = 2.0


def run_check(run: SyncRun) -> str:
    """ "" when the run may take its next step, else the code it stops with. `run` was read
    with its connection. When a quarter of the lease has passed, the lease is renewed and the
    `ehr_sync` consent checked again (its revocation also sets `cancel_requested`)."""
    if run.status != SyncRunStatus.RUNNING:
        return "not_running"
    connection = run.connection
    if run.cancel_requested:
        # Cancelled by the consent revocation handler, or by a disconnect erasing the data.
        if not consent_is_granted(patient=connection.patient_id, purpose=Purpose.EHR_SYNC):
            return "consent_revoked"
        return "cancelled"
    if connection.status not in USABLE:
        return f"connection_{connection.status}"
    lease = timedelta(seconds=sync_settings().lease_seconds)
    now = timezone.now()
    if run.lease_until is None or run.lease_until - now < lease * 3 / 4:
        SyncRun.objects.filter(pk=run.pk, status=SyncRunStatus.RUNNING).update(
            lease_until=now + lease
        )
        if not consent_is_granted(patient=connection.patient_id, purpose=Purpose.EHR_SYNC):
            return "consent_revoked"
    return ""


def fhir_client(run: SyncRun) -> FhirClient:
    """The FHIR client of the run's connection, with a usable token (refreshed first when it
    is about to expire; once more on a 401). Raises CONNECTION_ENDED or TOKEN_RETRYABLE."""
    connection = run.connection
    cfg = sync_settings()

    def refreshed() -> str:
        connection_refresh(connection_id=connection.pk, force=True)
        return connection_access_token(connection_id=connection.pk)

    return FhirClient(
        base_url=base_url(run),
        token=connection_access_token(connection_id=connection.pk),
        on_unauthorized=refreshed,
        max_page_bytes=cfg.max_page_bytes,
        max_binary_bytes=cfg.max_binary_bytes,
    )


def base_url(run: SyncRun) -> str:
    return run.connection.fhir_base_url or run.connection.health_system.fhir_base_url


@cache
def _limiter(url: str, concurrency: int, rate: int, lease: float) -> HealthSystemLimiter:
    return HealthSystemLimiter(url=url, concurrency=concurrency, rate_per_second=rate, lease=lease)


def slot_take(run: SyncRun) -> Slot | None:
    """A slot of the health system's limits for one request. Its lease outlives the longest
    request (and a 401's refresh and second try).

    When every slot is held (or the second's rate is spent), the step asks again every
    SLOT_POLL_SECONDS: a slot frees as soon as another worker's request ends, usually well
    within one request's time. Only after `SLOT_WAIT_SECONDS_MAX` without one does it give
    up (None: the step re-enqueues itself with a countdown), so a busy health system holds a
    worker process for a bounded time, and a summary step keeps its place instead of going
    to the back of the queue."""
    cfg = sync_settings()
    limiter = _limiter(
        cfg.limiter_url,
        cfg.concurrency,
        cfg.rate_per_second,
        2 * (cfg.http_connect_timeout + cfg.http_read_timeout) + 5,
    )
    key = str(run.connection.health_system_id)
    deadline = time.monotonic() + SLOT_WAIT_SECONDS_MAX
    while True:
        slot = limiter.try_acquire(key)
        if slot is not None or time.monotonic() >= deadline:
            return slot
        time.sleep(SLOT_POLL_SECONDS)


def slot_release(slot: Slot) -> None:
    cfg = sync_settings()
    _limiter(
        cfg.limiter_url,
        cfg.concurrency,
        cfg.rate_per_second,
        2 * (cfg.http_connect_timeout + cfg.http_read_timeout) + 5,
    ).release(slot)


def backoff(attempt: int, retry_after: int | None) -> float:
    cfg = sync_settings()
    return retry_delay(attempt, retry_after, base=cfg.backoff_base, cap=cfg.backoff_max)


def http_error_code(exc: http.EhrHttpError) -> str:
    if isinstance(exc, http.EhrRetryable):
        return f"retries_exhausted_{exc.status or 'network'}"
    return f"http_{exc.status or 'error'}"


def run_error_add(run_id: Any, resource_type: str, code: str, **extra: Any) -> None:
    """Append an error (codes and FHIR ids only, never a URL or content) to the run."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().only("errors").get(pk=run_id)
        run.errors = [*run.errors, {"type": resource_type, "code": code, **extra}][-100:]
        run.save(update_fields=["errors"])
