"""Disconnect (RFC 7009 revocation, token destruction, optional purge) and status reads."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from fhirlink import audit, hooks, http, vault
from fhirlink.exceptions import ConnectionNotFound, EhrUnavailable
from fhirlink.models import Connection, ConnectionStatus, HealthSystem
from fhirlink.services import oauth_client
from fhirlink.services.discovery import discover
from fhirlink.services.tokens import token_open, tokens_destroy
from patientportal.accounts.models import Patient

logger = logging.getLogger(__name__)


def tokens_revoke(
    *,
    health_system: HealthSystem,
    access_token: str | None,
    refresh_token: str | None,
    label: str,
) -> dict[str, Any]:
    """RFC 7009: revoke the refresh then the access token at the server, when it advertises a
    revocation endpoint. Never raises for the server's answer (the receipt says what happened).
    Used by disconnect and by a launch that fails after its code exchange."""
    result: dict[str, Any] = {
        "endpoint_advertised": False,
        "refresh_token": None,
        "access_token": None,
    }
    if not access_token and not refresh_token:
        return result
    try:
        doc = discover(health_system)
    except (EhrUnavailable, http.EhrHttpError):
        result["error"] = "discovery_failed"
        return result
    except Exception:  # misconfiguration must not block a patient's disconnect
        logger.exception("%s: discovery failed during revocation", label)
        result["error"] = "discovery_failed"
        return result
    endpoint = doc.get("revocation_endpoint") or ""
    if not endpoint:
        return result
    result["endpoint_advertised"] = True
    for field, token in (("refresh_token", refresh_token), ("access_token", access_token)):
        if not token:
            continue
        try:
            oauth_client.revoke(
                health_system, revocation_endpoint=endpoint, token=token, hint=field
            )
            result[field] = "revoked"
        except http.EhrHttpError as exc:
            result[field] = "failed"
            logger.warning("%s: revocation of %s failed (status %s)", label, field, exc.status)
    return result


def _revoke_all(connection: Connection) -> dict[str, Any]:
    """Revoke the connection's stored refresh and access tokens at the server."""
    if not connection.has_tokens:
        return {"endpoint_advertised": False, "refresh_token": None, "access_token": None}
    return tokens_revoke(
        health_system=connection.health_system,
        access_token=token_open(connection, "access_token"),
        refresh_token=token_open(connection, "refresh_token"),
        label=f"connection {connection.pk}",
    )


def connection_disconnect(
    *, patient: Patient, connection_id: Any, purge: bool = False, request: Any | None = None
) -> dict[str, Any]:
    """Revoke at the server, destroy local tokens, mark disconnected, optionally erase the
    synced data. Returns (and stores on the row) a receipt. Idempotent."""
    connection = (
        Connection.objects.select_related("health_system")
        .filter(pk=connection_id, patient=patient)
        .first()
    )
    if connection is None:
        raise ConnectionNotFound()
    revocation = _revoke_all(connection)
    now = timezone.now()
    erased: dict[str, int] = {}
    key_destroyed = False
    with transaction.atomic():
        current = Connection.objects.select_for_update().get(pk=connection.pk)
        had_tokens = current.has_tokens
        fields = tokens_destroy(current)
        if purge:
            erased = hooks.synced_data_erase(
                connection_id=str(current.pk), patient_id=str(patient.pk)
            )
            # Exports prepared before the purge hold the erased data: voided with it.
            from fhirlink.records.export import exports_void

            exports_void(patient_id=patient.pk)
            # Another connection (even a disconnected one the patient kept) may hold data
            # under the same key: then the store's row deletion is the erasure.
            others = Connection.objects.filter(patient=patient).exclude(pk=current.pk).exists()
            if not others:
                key_destroyed = vault.patient_key_destroy(patient_id=patient.pk)
        receipt = {
            "connection": str(current.pk),
            "health_system": current.health_system.name,
            "disconnected_at": now.isoformat(),
            "revocation": revocation,
            "local_tokens_destroyed": had_tokens,
            "purged": purge,
            "erased": erased,
            "data_key_destroyed": key_destroyed,
        }
        current.status = ConnectionStatus.DISCONNECTED
        current.disconnected_at = now
        current.last_outcome = "disconnected"
        current.disconnect_receipt = receipt
        current.refresh_lease_until = None
        current.refresh_lease_owner = ""
        current.save(
            update_fields=[
                *fields,
                "status",
                "disconnected_at",
                "last_outcome",
                "disconnect_receipt",
                "refresh_lease_until",
                "refresh_lease_owner",
                "updated_at",
            ]
        )
        audit.log_connection(
            action=audit.AccessAction.DISCONNECT,
            patient_id=patient.pk,
            actor_user_id=patient.user_id,
            connection_ids=[str(current.pk)],
            query={"purge": purge, "revoked": revocation.get("refresh_token") == "revoked"},
            request=request,
        )
    logger.info("connection %s: disconnected (purge=%s)", connection.pk, purge)
    return receipt


def connection_disconnect_all(*, patient: Patient, purge: bool = True) -> list[dict[str, Any]]:
    """Disconnect every connection of the patient (account deletion): revoke, destroy and, with
    `purge`, erase what was synced, even through connections disconnected earlier. Returns one
    receipt per connection processed."""
    receipts = []
    connections = Connection.objects.filter(patient=patient)
    if not purge:
        connections = connections.exclude(status=ConnectionStatus.DISCONNECTED)
    ids = list(connections.values_list("pk", flat=True))
    for connection_id in ids:
        receipts.append(
            connection_disconnect(patient=patient, connection_id=connection_id, purge=purge)
        )
    if purge:
        vault.patient_key_destroy(patient_id=patient.pk)
    return receipts
