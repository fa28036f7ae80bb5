"""Thin Celery wrappers for fhirlink (the sync engine adds `fhirlink.sync_connection` here)."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from fhirlink import http
from fhirlink.exceptions import (
    ConnectionGone,
    ConnectionNotFound,
    EhrUnavailable,
    ReauthRequired,
    RefreshInProgress,
    RefreshThrottled,
)
from fhirlink.models import Connection, ConnectionStatus, LaunchAttempt
from fhirlink.records.tasks import records_export  # noqa: F401  (registers the records tasks)
from fhirlink.services.tokens import connection_refresh
from fhirlink.sync.tasks import sync_connection  # noqa: F401  (registers the sync tasks)

logger = logging.getLogger(__name__)

RETRYABLE = (http.EhrRetryable, EhrUnavailable, RefreshInProgress, RefreshThrottled)


@shared_task(
    name="fhirlink.refresh_connection",
    autoretry_for=RETRYABLE,
    retry_backoff=30,
    retry_backoff_max=1800,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
)
def refresh_connection(connection_id: str, force: bool = False) -> str:
    """Refresh one connection's access token (idempotent: a fresh token is left alone)."""
    try:
        return connection_refresh(connection_id=connection_id, force=force)
    except (ReauthRequired, ConnectionGone, ConnectionNotFound) as exc:
        return exc.code
    except http.EhrTerminal as exc:
        logger.warning(
            "connection %s: refresh failed for good (%s)", connection_id, exc.oauth_error
        )
        return "terminal_error"


@shared_task(name="fhirlink.grants_check", soft_time_limit=300, time_limit=360)
def grants_check() -> int:
    """Enqueue a forced refresh of every usable connection whose grant was last exercised more
    than FHIRLINK_GRANT_CHECK_MINUTES ago, spread over one beat tick. A revoked grant answers
    invalid_grant (needs_reauth + the patient's nudge); a live one is kept from going idle."""
    now = timezone.now()
    cutoff = now - timedelta(minutes=settings.FHIRLINK_GRANT_CHECK_MINUTES)
    ids = list(
        Connection.objects.filter(
            status__in=[ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING],
            refresh_token_blob__isnull=False,
        )
        .filter(Q(last_refresh_attempt_at__isnull=True) | Q(last_refresh_attempt_at__lt=cutoff))
        .order_by(F("last_refresh_attempt_at").asc(nulls_first=True))
        .values_list("pk", flat=True)[: settings.FHIRLINK_GRANT_CHECK_BATCH]
    )
    spread = max(1, settings.FHIRLINK_GRANT_CHECK_TICK_MINUTES * 60 - 30)
    for index, connection_id in enumerate(ids):
        refresh_connection.apply_async(
            args=(str(connection_id), True), countdown=index * spread // max(1, len(ids))
        )
    return len(ids)


@shared_task(name="fhirlink.launch_attempts_purge", soft_time_limit=300, time_limit=360)
def launch_attempts_purge() -> int:
    """Delete launch attempts a day past their expiry (their state is useless by then)."""
    cutoff = timezone.now() - timedelta(days=1)
    deleted, _ = LaunchAttempt.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


@shared_task(
    name="fhirlink.patient_connections_erase",
    acks_late=True,
    soft_time_limit=300,
    time_limit=360,
)
def patient_connections_erase(patient_id: str) -> int:
    """Account deletion: revoke and destroy every connection's tokens, erase synced data."""
    from fhirlink.services.connections import connection_disconnect_all
    from patientportal.accounts.models import Patient

    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        return 0
    return len(connection_disconnect_all(patient=patient, purge=True))


def on_account_deletion_requested(*, patient_id: object) -> None:
    """ACCOUNT_DELETION_REQUEST_HANDLERS entry (called after commit): erase in the background,
    because revocation calls the health systems."""
    patient_connections_erase.delay(str(patient_id))


@shared_task(
    name="fhirlink.directory_import",
    autoretry_for=(http.EhrRetryable,),
    retry_backoff=300,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=600,
    time_limit=660,
)
def directory_import_published() -> int:
    """Beat: re-import the published directory (FHIRLINK_DIRECTORY_URL); idempotent."""
    from fhirlink.directory.importer import (
        directory_default_url,
        directory_fetch,
        directory_import,
    )

    url = directory_default_url()
    run = directory_import(
        raw=directory_fetch(url=url), source=settings.FHIRLINK_DIRECTORY_SOURCE, origin=url
    )
    return run.pk


@shared_task(name="fhirlink.endpoint_health_tick", soft_time_limit=120, time_limit=180)
def endpoint_health_tick() -> int:
    """Beat: enqueue the endpoint checks due (connected endpoints, then a few of the rest)."""
    from fhirlink.directory.health import endpoint_checks_due

    urls = endpoint_checks_due()
    for url in urls:
        endpoint_check.delay(url)
    return len(urls)


@shared_task(name="fhirlink.endpoint_check", soft_time_limit=90, time_limit=120)
def endpoint_check(fhir_base_url: str) -> str:
    """Check one endpoint (smart-configuration + CapabilityStatement) and record the result."""
    from fhirlink.directory.health import endpoint_check as check

    return check(fhir_base_url=fhir_base_url).state
