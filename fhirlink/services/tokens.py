"""The token vault's use by connections: sealing, opening, refresh, needs-reauth.

Refresh (CERNER.md §3): one refresh per connection at a time across every worker (a lease taken
with one conditional UPDATE, so no transaction is held open across the HTTP call, which also
works on SQLite), never more than one attempt a minute, the old refresh token kept when the
response carries none, `invalid_grant` -> needs_reauth (+ the engagement hook after commit),
network/5xx -> retry later. `grant_last_used_at` records each use of the grant (Cerner drops
offline grants unused for 3 months).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fhirlink import hooks, http, vault
from fhirlink.exceptions import (
    ConnectionGone,
    ConnectionNotFound,
    EhrUnavailable,
    ReauthRequired,
    RefreshInProgress,
    RefreshThrottled,
)
from fhirlink.models import Connection, ConnectionStatus
from fhirlink.services import oauth_client
from fhirlink.services.discovery import discover

logger = logging.getLogger(__name__)

USABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING)
TOKEN_FIELDS = [
    "token_key_id",
    "access_token_blob",
    "refresh_token_blob",
    "access_token_expires_at",
]


def _aad(connection_id: Any, field: str) -> str:
    return f"fhirlink.connection:{connection_id}:{field}"


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def tokens_seal(
    connection: Connection,
    *,
    access_token: str,
    refresh_token: str | None,
    expires_in: Any,
    now: datetime,
) -> list[str]:
    """Seal new tokens onto the row (not saved). A None refresh token keeps the stored one,
    re-wrapped if needed so the row has one key id. Returns the fields to save."""
    sealed_access = vault.seal(access_token, aad=_aad(connection.pk, "access_token"))
    if refresh_token:
        connection.refresh_token_blob = vault.seal(
            refresh_token, aad=_aad(connection.pk, "refresh_token")
        ).blob
    elif connection.refresh_token_blob and connection.token_key_id != sealed_access.key_id:
        connection.refresh_token_blob = vault.rewrap(
            connection.refresh_token_blob,
            key_id=connection.token_key_id,
            aad=_aad(connection.pk, "refresh_token"),
            new_key_id=sealed_access.key_id,
        )
    connection.access_token_blob = sealed_access.blob
    connection.token_key_id = sealed_access.key_id
    try:
        lifetime = int(expires_in) if expires_in is not None else 570
    except (TypeError, ValueError):
        lifetime = 570
    connection.access_token_expires_at = now + timedelta(seconds=max(lifetime, 0))
    return list(TOKEN_FIELDS)


def tokens_destroy(connection: Connection) -> list[str]:
    connection.access_token_blob = None
    connection.refresh_token_blob = None
    connection.token_key_id = ""
    connection.access_token_expires_at = None
    return list(TOKEN_FIELDS)


def token_open(connection: Connection, field: str) -> str | None:
    """Plaintext of `access_token` or `refresh_token` (for this module and disconnect only)."""
    blob = getattr(connection, f"{field}_blob")
    if not blob:
        return None
    return vault.open_sealed(blob, key_id=connection.token_key_id, aad=_aad(connection.pk, field))


def connection_mark_needs_reauth(*, connection_id: Any, reason: str) -> None:
    """The grant is gone: drop the tokens, flag the connection, tell engagement after commit."""
    now = timezone.now()
    with transaction.atomic():
        connection = Connection.objects.select_for_update().filter(pk=connection_id).first()
        if connection is None or connection.status not in USABLE:
            return
        fields = tokens_destroy(connection)
        connection.status = ConnectionStatus.NEEDS_REAUTH
        connection.needs_reauth_at = now
        connection.last_outcome = reason
        connection.save(
            update_fields=[*fields, "status", "needs_reauth_at", "last_outcome", "updated_at"]
        )
        cid = str(connection.pk)
        transaction.on_commit(lambda: hooks.needs_reauth_notify(connection_id=cid))
    logger.warning("connection %s needs reauthorization (%s)", connection_id, reason)


def _acquire_lease(connection_id: Any, owner: str, now: datetime) -> bool:
    lease = timedelta(seconds=_setting("FHIRLINK_REFRESH_LEASE_SECONDS", 60))
    return (
        Connection.objects.filter(pk=connection_id, status__in=USABLE)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
        .update(refresh_lease_until=now + lease, refresh_lease_owner=owner)
        == 1
    )


def _release_lease(connection_id: Any, owner: str) -> None:
    Connection.objects.filter(pk=connection_id, refresh_lease_owner=owner).update(
        refresh_lease_until=None, refresh_lease_owner=""
    )


def _check_usable(connection: Connection) -> None:
    if connection.status == ConnectionStatus.DISCONNECTED:
        raise ConnectionGone()
    if connection.status not in USABLE:
        raise ReauthRequired()


def _fresh(connection: Connection, now: datetime, margin: int) -> bool:
    return bool(
        connection.access_token_blob
        and connection.access_token_expires_at
        and connection.access_token_expires_at > now + timedelta(seconds=margin)
    )


def connection_refresh(*, connection_id: Any, force: bool = False) -> str:
    """Refresh the connection's access token if due (or `force`).

    Returns "refreshed", "not_needed" (still fresh), "throttled" (refreshed < 1 min ago, current
    token still valid) or "refreshed_elsewhere" (another worker just did it). Raises
    ReauthRequired, ConnectionGone, RefreshThrottled, RefreshInProgress, EhrUnavailable or
    http.EhrTerminal.
    """
    margin = _setting("FHIRLINK_REFRESH_MARGIN_SECONDS", 120)
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + _setting("FHIRLINK_REFRESH_WAIT_SECONDS", 15)
    while not _acquire_lease(connection_id, owner, timezone.now()):
        connection = Connection.objects.filter(pk=connection_id).first()
        if connection is None:
            raise ConnectionNotFound()
        _check_usable(connection)
        if time.monotonic() > deadline:
            raise RefreshInProgress()
        time.sleep(0.25)
        connection = Connection.objects.filter(pk=connection_id).first()
        if connection and not force and _fresh(connection, timezone.now(), margin):
            return "refreshed_elsewhere"
    try:
        return _refresh_locked(connection_id=connection_id, force=force, margin=margin)
    finally:
        _release_lease(connection_id, owner)


def _refresh_locked(*, connection_id: Any, force: bool, margin: int) -> str:
    connection = Connection.objects.select_related("health_system").get(pk=connection_id)
    _check_usable(connection)
    now = timezone.now()
    if not force and _fresh(connection, now, margin):
        return "not_needed"
    min_interval = _setting("FHIRLINK_REFRESH_MIN_INTERVAL_SECONDS", 60)
    last = connection.last_refresh_attempt_at
    if last and last > now - timedelta(seconds=min_interval):
        if _fresh(connection, now, 0):
            return "throttled"
        retry_after = int((last + timedelta(seconds=min_interval) - now).total_seconds()) + 1
        raise RefreshThrottled(extra={"retry_after": retry_after})
    refresh_token = token_open(connection, "refresh_token")
    if not refresh_token:
        connection_mark_needs_reauth(connection_id=connection.pk, reason="no_refresh_token")
        raise ReauthRequired()

    connection.last_refresh_attempt_at = now
    connection.save(update_fields=["last_refresh_attempt_at", "updated_at"])
    try:
        doc = discover(connection.health_system)
        response = oauth_client.refresh(
            connection.health_system,
            token_endpoint=doc["token_endpoint"],
            refresh_token=refresh_token,
        )
    except (http.EhrRetryable, EhrUnavailable) as exc:
        Connection.objects.filter(pk=connection.pk).update(
            refresh_failures=connection.refresh_failures + 1,
            last_refresh_error=(
                f"http_{exc.status}"
                if isinstance(exc, http.EhrHttpError) and exc.status
                else "network"
            ),
        )
        logger.warning("connection %s: refresh failed, will retry", connection.pk)
        raise
    except http.EhrTerminal as exc:
        Connection.objects.filter(pk=connection.pk).update(
            refresh_failures=connection.refresh_failures + 1,
            last_refresh_error=exc.oauth_error or f"http_{exc.status}",
        )
        if exc.oauth_error == "invalid_grant":
            connection_mark_needs_reauth(connection_id=connection.pk, reason="invalid_grant")
            raise ReauthRequired() from None
        logger.warning("connection %s: refresh refused (%s)", connection.pk, exc.oauth_error)
        raise

    done = timezone.now()
    with transaction.atomic():
        current = Connection.objects.select_for_update().get(pk=connection.pk)
        _check_usable(current)
        fields = tokens_seal(
            current,
            access_token=str(response["access_token"]),
            refresh_token=response.get("refresh_token") or None,
            expires_in=response.get("expires_in"),
            now=done,
        )
        current.last_refreshed_at = done
        current.grant_last_used_at = done
        current.refresh_failures = 0
        current.last_refresh_error = ""
        current.save(
            update_fields=[
                *fields,
                "last_refreshed_at",
                "grant_last_used_at",
                "refresh_failures",
                "last_refresh_error",
                "updated_at",
            ]
        )
    logger.info("connection %s: access token refreshed", connection.pk)
    return "refreshed"


def connection_access_token(*, connection_id: Any) -> str:
    """A usable access token for the sync engine: refreshed first when it expires within the
    margin (proactive refresh). Never log or persist the result."""
    margin = _setting("FHIRLINK_REFRESH_MARGIN_SECONDS", 120)
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        raise ConnectionNotFound()
    _check_usable(connection)
    if not _fresh(connection, timezone.now(), margin):
        connection_refresh(connection_id=connection_id)
        connection = Connection.objects.get(pk=connection_id)
        _check_usable(connection)
    token = token_open(connection, "access_token")
    if not token:
        raise ReauthRequired()
    return token
