"""Endpoint health: a scheduled check of every endpoint that has connections (each at most every
`FHIRLINK_ENDPOINT_CHECK_MINUTES`) and, slowly, of the rest of the directory (a few per tick, each
every `FHIRLINK_ENDPOINT_IDLE_CHECK_DAYS`). A check fetches the smart-configuration and the
CapabilityStatement; a change (its `date`, resources added or removed, SMART endpoints moved) is
recorded; failures are counted, and after `FHIRLINK_ENDPOINT_DOWN_AFTER` in a row the endpoint
is down, which the connections API tells the patient (`connection_ehr_status`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from fhirlink import http
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    DirectoryEntry,
    EndpointChange,
    EndpointHealth,
    EndpointState,
    EntryStatus,
)
from fhirlink.services.discovery import _oauth_uris, _resources

logger = logging.getLogger(__name__)

CHECK_LEASE = timedelta(minutes=15)
WATCHED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "jwks_uri")
CONNECTED_STATUSES = (
    ConnectionStatus.PENDING,
    ConnectionStatus.ACTIVE,
    ConnectionStatus.SYNCING,
    ConnectionStatus.NEEDS_REAUTH,
    ConnectionStatus.ERROR,
)


def base_url(url: str) -> str:
    return url.strip().rstrip("/")


def _connected_urls() -> set[str]:
    urls = (
        Connection.objects.filter(status__in=CONNECTED_STATUSES)
        .values_list("health_system__fhir_base_url", flat=True)
        .distinct()
    )
    return {base_url(u) for u in urls}


def _snapshot(base: str) -> dict[str, Any]:
    """Fetch and summarise; raises `http.EhrHttpError` (or ValueError for a non-R4 server)."""
    try:
        smart: dict[str, Any] = http.get_json(f"{base}/.well-known/smart-configuration")
    except http.EhrTerminal:
        smart = {}  # Discovery falls back to the CapabilityStatement's oauth-uris.
    metadata = http.request("GET", f"{base}/metadata", accept="application/fhir+json")
    capability = metadata.json_object()
    if capability.get("resourceType") != "CapabilityStatement":
        raise http.EhrTerminal("not a CapabilityStatement")
    uris = _oauth_uris(capability)
    return {
        "capability_date": str(capability.get("date") or "")[:40],
        "fhir_version": str(capability.get("fhirVersion") or "")[:20],
        "resources": _resources(capability),
        "authorization_endpoint": smart.get("authorization_endpoint") or uris.get("authorize", ""),
        "token_endpoint": smart.get("token_endpoint") or uris.get("token", ""),
        "revocation_endpoint": smart.get("revocation_endpoint") or uris.get("revoke", ""),
        "jwks_uri": smart.get("jwks_uri") or "",
    }


def _error_code(exc: http.EhrHttpError) -> str:
    if isinstance(exc, http.EhrRetryable):
        return f"http_{exc.status}" if exc.status else "unreachable"
    return f"http_{exc.status}" if exc.status else "invalid_response"


def _next_check(*, connected: bool, now: datetime) -> datetime:
    if connected:
        return now + timedelta(minutes=int(settings.FHIRLINK_ENDPOINT_CHECK_MINUTES))
    return now + timedelta(days=int(settings.FHIRLINK_ENDPOINT_IDLE_CHECK_DAYS))


def _record_change(
    row: EndpointHealth, before: dict[str, Any], after: dict[str, Any], now: datetime
) -> EndpointChange | None:
    old, new = set(before.get("resources") or []), set(after.get("resources") or [])
    moved = {
        name: [before.get(name) or "", after.get(name) or ""]
        for name in WATCHED_ENDPOINTS
        if (before.get(name) or "") != (after.get(name) or "")
    }
    date_before, date_after = before.get("capability_date", ""), after.get("capability_date", "")
    if old == new and not moved and date_before == date_after:
        return None
    return EndpointChange.objects.create(
        endpoint=row,
        detected_at=now,
        capability_date_before=date_before,
        capability_date_after=date_after,
        resources_added=sorted(new - old),
        resources_removed=sorted(old - new),
        endpoints_moved=moved,
    )


def endpoint_check(*, fhir_base_url: str) -> EndpointHealth:
    """Check one endpoint now and record the outcome (idempotent per check)."""
    base = base_url(fhir_base_url)
    now = timezone.now()
    connected = base in _connected_urls()
    error = ""
    snapshot: dict[str, Any] | None = None
    try:
        snapshot = _snapshot(base)
        if not snapshot["fhir_version"].startswith("4.0."):
            error, snapshot = "not_fhir_r4", None
    except http.EhrHttpError as exc:
        error = _error_code(exc)
    with transaction.atomic():
        row, _ = EndpointHealth.objects.select_for_update().get_or_create(fhir_base_url=base)
        row.last_checked_at = now
        row.check_count = F("check_count") + 1
        row.next_check_at = _next_check(connected=connected, now=now)
        if snapshot is not None:
            if row.snapshot:
                _record_change(row, row.snapshot, snapshot, now)
            row.snapshot = snapshot
            row.state = EndpointState.UP
            row.consecutive_failures = 0
            row.down_since = None
            row.last_ok_at = now
            row.last_error = ""
        else:
            row.failure_count = F("failure_count") + 1
            row.consecutive_failures = F("consecutive_failures") + 1
            row.last_error = error[:64]
        row.save()
        row.refresh_from_db()
        if (
            snapshot is None
            and row.consecutive_failures >= int(settings.FHIRLINK_ENDPOINT_DOWN_AFTER)
            and row.state != EndpointState.DOWN
        ):
            row.state = EndpointState.DOWN
            row.down_since = now
            row.save(update_fields=["state", "down_since"])
    logger.info("endpoint health %s: %s (%s)", row.pk, row.state, row.last_error or "ok")
    return row


def endpoint_checks_due(*, now: datetime | None = None) -> list[str]:
    """The endpoints to check this tick (leased for `CHECK_LEASE` so a tick never doubles)."""
    now = now or timezone.now()
    connected = _connected_urls()
    EndpointHealth.objects.bulk_create(
        [EndpointHealth(fhir_base_url=url) for url in connected], ignore_conflicts=True
    )
    due_q = Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)
    due = list(
        EndpointHealth.objects.filter(due_q, fhir_base_url__in=connected).values_list(
            "fhir_base_url", flat=True
        )
    )
    fresh = EndpointHealth.objects.filter(next_check_at__gt=now).values("fhir_base_url")
    idle = list(
        DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE, held_back=False)
        .exclude(fhir_base_url__in=fresh)
        .exclude(fhir_base_url__in=connected)
        .order_by("updated_at", "pk")
        .values_list("fhir_base_url", flat=True)[: int(settings.FHIRLINK_ENDPOINT_IDLE_PER_TICK)]
    )
    urls = list(dict.fromkeys([*due, *idle]))
    EndpointHealth.objects.bulk_create(
        [EndpointHealth(fhir_base_url=url) for url in idle], ignore_conflicts=True
    )
    EndpointHealth.objects.filter(fhir_base_url__in=urls).update(next_check_at=now + CHECK_LEASE)
    return urls


def endpoint_states(*, urls: list[str]) -> dict[str, EndpointHealth]:
    rows = EndpointHealth.objects.filter(fhir_base_url__in=[base_url(u) for u in urls])
    return {row.fhir_base_url: row for row in rows}


def endpoints_down() -> list[str]:
    """The FHIR bases the checks find down, as stored and with a trailing slash (a health
    system's `fhir_base_url` may have one), for `fhir_base_url__in` filters."""
    down = EndpointHealth.objects.filter(state=EndpointState.DOWN)
    return [
        url for base in down.values_list("fhir_base_url", flat=True) for url in (base, base + "/")
    ]


def connection_ehr_status(*, connection: Connection) -> dict[str, Any]:
    """What the connections API tells the patient about their health system's endpoint."""
    health_system = connection.health_system
    retired = DirectoryEntry.objects.filter(
        health_system_id=health_system.pk, status=EntryStatus.RETIRED
    ).values_list("retired_at", flat=True)
    for retired_at in retired:
        return {
            "state": "retired",
            "since": retired_at,
            "message": (
                "This health system no longer publishes this connection. Search for it again "
                "and reconnect."
            ),
        }
    row = endpoint_states(urls=[health_system.fhir_base_url]).get(
        base_url(health_system.fhir_base_url)
    )
    if row is not None and row.state == EndpointState.DOWN:
        return {
            "state": "down",
            "since": row.down_since,
            "message": (
                "Your health system is not answering right now. Your record will update when "
                "it is back."
            ),
        }
    return {
        "state": row.state if row is not None else EndpointState.UNKNOWN,
        "since": None,
        "message": None,
    }
