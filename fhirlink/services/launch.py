"""SMART patient standalone launch: start (authorize URL) and callback (code -> tokens).

State: 256 random bits, stored as SHA-256 only, single use, bound to the patient, this attempt
and the authorization server's issuer, 10-minute life. PKCE S256 always (the verifier is sealed
by the vault). A nonce (stored hashed) checked against the id_token. `aud` = the FHIR base URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from fhirlink import audit, hooks, http, vault
from fhirlink.directory.platform import directory_health_system_resolve
from fhirlink.exceptions import (
    ConnectionNotFound,
    EhrMisconfigured,
    EhrUnavailable,
    HealthSystemNotFound,
    LaunchRefused,
)
from fhirlink.models import ClientAuth, Connection, ConnectionStatus, HealthSystem, LaunchAttempt
from fhirlink.scopes import compare_grant, parse_scope_string, requested_resources
from fhirlink.services import oauth_client
from fhirlink.services.discovery import discover, launch_scopes
from fhirlink.services.oidc import issuer_trusted, verify_id_token
from fhirlink.services.tokens import tokens_seal
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted, consent_require
from patientportal.core.errors import ApplicationError, ValidationFailed

logger = logging.getLogger(__name__)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def app_return_uris() -> list[str]:
    return list(getattr(settings, "FHIRLINK_APP_RETURN_URIS", []))


def return_uri_allowed(uri: str) -> bool:
    """Exact match against the allow-list (no prefixes, no open redirect)."""
    return uri in app_return_uris()


def app_redirect(return_uri: str, *, connection_id: str | None, outcome: str) -> str:
    """The deep link the browser is sent to: only the connection id and an outcome code."""
    if not return_uri_allowed(return_uri):
        return_uri = app_return_uris()[0]
    params = {"outcome": outcome}
    if connection_id:
        params = {"connection": connection_id, **params}
    separator = "&" if urlsplit(return_uri).query else "?"
    return f"{return_uri}{separator}{urlencode(params)}"


@dataclass
class LaunchStart:
    connection: Connection
    authorize_url: str
    expires_at: Any
    requested_resources: list[str]


def _target_connection(
    *, patient: Patient, health_system: HealthSystem, connection_id: Any | None
) -> Connection:
    if connection_id is not None:
        connection = Connection.objects.filter(
            pk=connection_id, patient=patient, health_system=health_system
        ).first()
        if connection is None:
            raise ConnectionNotFound()
        return connection
    # Reconnect: the patient's one existing connection to this health system, if exactly one.
    existing = list(
        Connection.objects.filter(patient=patient, health_system=health_system).order_by(
            "-created_at"
        )[:2]
    )
    if len(existing) == 1:
        return existing[0]
    pending = next(
        (c for c in existing if c.status == ConnectionStatus.PENDING and not c.fhir_patient_id),
        None,
    )
    if pending is not None:
        return pending
    return Connection.objects.create(
        patient=patient,
        health_system=health_system,
        fhir_base_url=health_system.fhir_base_url,
    )


def connection_start(
    *,
    patient: Patient,
    health_system_id: Any,
    return_uri: str | None = None,
    connection_id: Any | None = None,
    request: Any | None = None,
) -> LaunchStart:
    """Begin a launch: consent gate, discovery, scopes, state/PKCE/nonce; the authorize URL."""
    consent_require(patient=patient, purpose=Purpose.EHR_SYNC)
    # A registration, or a directory entry turned into one now (its source's platform app).
    health_system = directory_health_system_resolve(health_system_id=health_system_id)
    if health_system is None:
        raise HealthSystemNotFound()
    allowed = app_return_uris()
    if return_uri is None:
        return_uri = allowed[0]
    elif not return_uri_allowed(return_uri):
        raise ValidationFailed(extra={"field": "return_uri", "reason": "not_registered"})

    doc = discover(health_system)
    methods = doc.get("token_endpoint_auth_methods_supported")
    if (
        health_system.client_auth != ClientAuth.PUBLIC
        and isinstance(methods, list)
        and health_system.client_auth not in methods
    ):
        raise EhrMisconfigured("The health system does not support this client authentication.")
    scopes, resources = launch_scopes(health_system, doc)
    if not resources:
        raise EhrMisconfigured("None of the configured resources is supported by the server.")
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier, challenge = _pkce_pair()
    now = timezone.now()
    expires_at = now + timedelta(seconds=int(getattr(settings, "FHIRLINK_LAUNCH_TTL", 600)))
    aud = health_system.fhir_base_url.rstrip("/")

    with transaction.atomic():
        connection = _target_connection(
            patient=patient, health_system=health_system, connection_id=connection_id
        )
        attempt = LaunchAttempt(
            connection=connection,
            patient=patient,
            health_system=health_system,
            state_hash=_sha(state),
            nonce_hash=_sha(nonce),
            issuer=doc.get("issuer") or "",
            aud=aud,
            token_endpoint=doc["token_endpoint"],
            requested_scopes=" ".join(scopes),
            return_uri=return_uri,
            expires_at=expires_at,
        )
        sealed = vault.seal(verifier, aad=f"fhirlink.launchattempt:{attempt.pk}:verifier")
        attempt.verifier_key_id = sealed.key_id
        attempt.verifier_blob = sealed.blob
        attempt.save()
        audit.log_connection(
            action=audit.AccessAction.CONNECT,
            patient_id=patient.pk,
            actor_user_id=patient.user_id,
            connection_ids=[str(connection.pk)],
            query={"step": "start", "health_system": str(health_system.pk)},
            request=request,
        )

    params = {
        "response_type": "code",
        "client_id": health_system.client_id,
        "redirect_uri": health_system.redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "aud": aud,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = doc["authorization_endpoint"]
    separator = "&" if urlsplit(endpoint).query else "?"
    logger.info("connection %s: launch started (attempt %s)", connection.pk, attempt.pk)
    return LaunchStart(
        connection=connection,
        authorize_url=f"{endpoint}{separator}{urlencode(params)}",
        expires_at=expires_at,
        requested_resources=resources,
    )


# --- Callback -----------------------------------------------------------------------------------


@dataclass
class CallbackResult:
    connection_id: str | None
    outcome: str
    return_uri: str

    @property
    def redirect_to(self) -> str:
        return app_redirect(self.return_uri, connection_id=self.connection_id, outcome=self.outcome)


AUTHZ_ERRORS = {
    "access_denied",
    "invalid_scope",
    "unauthorized_client",
    "invalid_request",
    "server_error",
    "temporarily_unavailable",
    "unsupported_response_type",
}


def _claim_attempt(state: str) -> LaunchAttempt:
    """Find the attempt for `state` and consume it (single use), or refuse."""
    if not state or len(state) > 512:
        raise LaunchRefused("invalid_state")
    attempt = (
        LaunchAttempt.objects.select_related("health_system", "connection", "patient")
        .filter(state_hash=_sha(state))
        .first()
    )
    if attempt is None:
        raise LaunchRefused("invalid_state")
    now = timezone.now()
    consumed = LaunchAttempt.objects.filter(pk=attempt.pk, consumed_at__isnull=True).update(
        consumed_at=now
    )
    if consumed != 1:
        raise LaunchRefused("state_replayed")
    if attempt.expires_at <= now:
        _finish_attempt(attempt, "state_expired")
        raise LaunchRefused("state_expired")
    if attempt.connection.patient_id != attempt.patient_id:
        _finish_attempt(attempt, "state_foreign")
        raise LaunchRefused("state_foreign")
    return attempt


def _finish_attempt(attempt: LaunchAttempt, outcome: str) -> None:
    LaunchAttempt.objects.filter(pk=attempt.pk).update(outcome=outcome)


def _record_failure(attempt: LaunchAttempt, outcome: str) -> None:
    _finish_attempt(attempt, outcome)
    connection = attempt.connection
    fields = ["last_outcome", "updated_at"]
    connection.last_outcome = outcome
    if connection.status == ConnectionStatus.PENDING:
        connection.status = ConnectionStatus.ERROR
        fields.append("status")
    connection.save(update_fields=fields)
    audit.log_connection(
        action=audit.AccessAction.CONNECT,
        patient_id=attempt.patient_id,
        actor_user_id=attempt.patient.user_id,
        connection_ids=[str(connection.pk)],
        outcome=audit.Outcome.DENIED,
        query={"step": "callback", "outcome": outcome},
    )


def _check_iss(attempt: LaunchAttempt, iss: str | None, doc: dict[str, Any]) -> None:
    """RFC 9207: the `iss` in the response must be the issuer this attempt was sent to."""
    if iss is None or iss == "":
        if doc.get("authorization_response_iss_parameter_supported"):
            raise LaunchRefused("iss_missing")
        return
    expected = attempt.issuer or doc.get("issuer") or ""
    if not expected:
        # No issuer advertised: only the authorization server's own origin, for this tenant.
        if not issuer_trusted(iss, discovery=doc, tenant=attempt.health_system.tenant):
            raise LaunchRefused("iss_mismatch")
        return
    if not hmac.compare_digest(iss.rstrip("/").encode(), expected.rstrip("/").encode()):
        raise LaunchRefused("iss_mismatch")


def callback_complete(*, params: dict[str, str], request: Any | None = None) -> CallbackResult:
    """Handle the redirect from the authorization server. Never raises for bad input: returns
    the outcome the browser carries back to the app."""
    default_return = app_return_uris()[0]
    try:
        attempt = _claim_attempt(params.get("state", ""))
    except LaunchRefused as refused:
        logger.warning("launch callback refused: %s", refused.outcome)
        return CallbackResult(None, refused.outcome, default_return)

    result_connection = str(attempt.connection_id)
    try:
        outcome, result_connection = _complete(attempt, params, request=request)
    except LaunchRefused as refused:
        outcome = refused.outcome
        _record_failure(attempt, outcome)
        logger.warning("connection %s: launch refused (%s)", attempt.connection_id, outcome)
    except (http.EhrRetryable, EhrUnavailable):
        outcome = "ehr_unavailable"
        _record_failure(attempt, outcome)
    except http.EhrTerminal as exc:
        outcome = "token_exchange_failed"
        _record_failure(attempt, outcome)
        logger.warning(
            "connection %s: token exchange refused (%s)", attempt.connection_id, exc.oauth_error
        )
    except ApplicationError as exc:  # discovery refused the server (FHIR version, endpoints)
        outcome = "ehr_misconfigured"
        _record_failure(attempt, outcome)
        logger.warning("connection %s: launch failed (%s)", attempt.connection_id, exc.code)
    except Exception:
        # The browser must still reach the app with an outcome, never a stack trace.
        outcome = "internal_error"
        _record_failure(attempt, outcome)
        logger.exception("connection %s: launch failed unexpectedly", attempt.connection_id)
    return CallbackResult(result_connection, outcome, attempt.return_uri)


def _complete(
    attempt: LaunchAttempt, params: dict[str, str], *, request: Any | None
) -> tuple[str, str]:
    health_system = attempt.health_system
    doc = discover(health_system)
    _check_iss(attempt, params.get("iss"), doc)
    error = params.get("error")
    if error:
        raise LaunchRefused(error if error in AUTHZ_ERRORS else "authorization_error")
    code = params.get("code", "")
    if not code:
        raise LaunchRefused("missing_code")
    if not consent_is_granted(patient=attempt.patient_id, purpose=Purpose.EHR_SYNC):
        raise LaunchRefused("consent_required")
    verifier = vault.open_sealed(
        attempt.verifier_blob,
        key_id=attempt.verifier_key_id,
        aad=f"fhirlink.launchattempt:{attempt.pk}:verifier",
    )
    token = oauth_client.exchange_code(
        health_system,
        token_endpoint=attempt.token_endpoint,
        code=code,
        redirect_uri=health_system.redirect_uri,
        code_verifier=verifier,
    )
    fhir_patient = str(token.get("patient") or "")
    if not fhir_patient:
        raise LaunchRefused("no_patient_context")
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise LaunchRefused("id_token_missing")
    identity = verify_id_token(
        id_token,
        discovery=doc,
        tenant=health_system.tenant,
        client_id=health_system.client_id,
        nonce_hash=attempt.nonce_hash,
        token_patient=fhir_patient,
    )
    granted = parse_scope_string(token.get("scope") or attempt.requested_scopes)
    requested_resources = _requested_resources(attempt.requested_scopes)
    allowed, declined = compare_grant(requested=requested_resources, granted=granted)
    if not token.get("refresh_token"):
        logger.info("connection %s: no refresh token granted (online only)", attempt.connection_id)

    now = timezone.now()
    with transaction.atomic():
        connection = _final_connection(attempt, fhir_patient)
        tokens_seal(
            connection,
            access_token=str(token["access_token"]),
            refresh_token=token.get("refresh_token") or None,
            expires_in=token.get("expires_in"),
            now=now,
        )
        if not token.get("refresh_token"):
            connection.refresh_token_blob = None
        connection.status = ConnectionStatus.ACTIVE
        # A v2-registered app silently loses v1 scopes at Cerner (and vice versa): then
        # nothing is granted, which the patient must hear about.
        connection.last_outcome = (
            "no_resources_granted"
            if not allowed
            else "connected_partial"
            if declined
            else "connected"
        )
        connection.fhir_base_url = attempt.aud
        connection.fhir_patient_id = fhir_patient
        connection.fhir_user = identity["fhir_user"][:500]
        connection.oidc_issuer = identity["iss"][:500]
        connection.oidc_subject = identity["sub"][:200]
        connection.requested_scopes = attempt.requested_scopes
        connection.granted_scopes = " ".join(granted)
        connection.granted_resources = allowed
        connection.declined_resources = declined
        connection.connected_at = now
        connection.grant_last_used_at = now
        connection.needs_reauth_at = None
        connection.disconnected_at = None
        connection.disconnect_receipt = None
        connection.refresh_failures = 0
        connection.last_refresh_error = ""
        connection.last_refresh_attempt_at = None
        connection.save()
        _finish_attempt(attempt, connection.last_outcome)
        audit.log_connection(
            action=audit.AccessAction.CONNECT,
            patient_id=attempt.patient_id,
            actor_user_id=attempt.patient.user_id,
            connection_ids=[str(connection.pk)],
            query={
                "step": "callback",
                "outcome": connection.last_outcome,
                "granted": len(allowed),
                "declined": len(declined),
            },
            request=request,
        )
        cid = str(connection.pk)
        transaction.on_commit(lambda: hooks.first_sync_start(connection_id=cid))
    logger.info("connection %s: connected (%s)", connection.pk, connection.last_outcome)
    return connection.last_outcome, str(connection.pk)


def _requested_resources(requested_scopes: str) -> list[str]:
    # patient/ and user/ scopes (Cerner lists user/Practitioner.rs for the references).
    return requested_resources(requested_scopes)


def _final_connection(attempt: LaunchAttempt, fhir_patient: str) -> Connection:
    """The connection these tokens belong to: the attempt's, unless the patient already has a
    connection to this FHIR patient at this health system (reconnect reuses it)."""
    target = Connection.objects.select_for_update().get(pk=attempt.connection_id)
    same = (
        Connection.objects.select_for_update()
        .filter(
            patient_id=attempt.patient_id,
            health_system_id=attempt.health_system_id,
            fhir_patient_id=fhir_patient,
        )
        .exclude(pk=target.pk)
        .first()
    )
    if same is not None:
        if not target.fhir_patient_id and not target.has_tokens:
            LaunchAttempt.objects.filter(connection=target).update(connection=same)
            target.delete()
        return same
    if target.fhir_patient_id and target.fhir_patient_id != fhir_patient:
        try:
            with transaction.atomic():
                return Connection.objects.create(
                    patient_id=attempt.patient_id,
                    health_system_id=attempt.health_system_id,
                    fhir_patient_id=fhir_patient,
                    fhir_base_url=attempt.aud,
                )
        except IntegrityError:
            return Connection.objects.select_for_update().get(
                patient_id=attempt.patient_id,
                health_system_id=attempt.health_system_id,
                fhir_patient_id=fhir_patient,
            )
    return target
