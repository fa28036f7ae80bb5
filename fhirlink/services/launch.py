"""SMART patient standalone launch, bound to the account and the browser that started it.

1. `connection_start` (the app's `POST /api/v1/connections`, bearer token): consent gate,
   discovery, scopes; a launch attempt with a single-use start token (256 bits, SHA-256 stored,
   `FHIRLINK_LAUNCH_START_TTL`). The app gets a first-party start URL on this server.
2. `launch_browser_start` (`GET /fhirlink/launch/<token>`, the system browser, signed in to this
   server as the same account): consumes the start token, draws state, nonce and the PKCE
   verifier (S256 only; state and nonce stored as SHA-256, the verifier sealed by the vault) and
   a browser-binding secret, which the view sets as a short-lived signed HttpOnly SameSite=Lax
   cookie (SHA-256 stored); then the browser goes to the EHR's authorize URL.
3. `callback_complete` (`GET /fhirlink/callback/<slug>`, the health system's own redirect URI):
   the attempt found by `state` (single use, `FHIRLINK_LAUNCH_TTL`) must carry this browser's
   binding cookie, must have named this redirect URI (mix-up, RFC 9700 §4.4), and `iss` must be
   its issuer whenever present (RFC 9207; required when the server advertises it, or when other
   health systems share the redirect URI). Only then is the code sent, to the token endpoint of
   the server that issued it. A failure after the exchange revokes what was obtained (RFC 7009).
   Granted scopes are recorded as granted ∩ requested.

The deep link back to the app carries only the connection id and an outcome code; the app
confirms with its own bearer token (`GET /api/v1/connections/{id}`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    HealthSystemNotAvailableYet,
    HealthSystemNotFound,
    LaunchRefused,
)
from fhirlink.models import (
    MANAGED_RELATIONSHIPS,
    ClientAuth,
    Connection,
    ConnectionStatus,
    HealthSystem,
    LaunchAttempt,
    Relationship,
)
from fhirlink.scopes import grant_summary, parse_scope_string
from fhirlink.services import oauth_client
from fhirlink.services.discovery import discover, launch_scopes, reference_resources
from fhirlink.services.oidc import issuer_trusted, verify_id_token
from fhirlink.services.tokens import tokens_seal
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted, consent_require
from patientportal.core.errors import ApplicationError, ValidationFailed

logger = logging.getLogger(__name__)

CALLBACK_PATH = "/fhirlink/callback"
BINDING_COOKIE_PREFIX = "fhirlink_launch_"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge). `plain` is never used (SMART App Launch 2.x, RFC 9700 §2.1.1)."""
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def launch_ttl() -> int:
    """Seconds from the browser's start to the callback (state, binding cookie)."""
    return _setting("FHIRLINK_LAUNCH_TTL", 600)


def start_ttl() -> int:
    """Seconds the app has to open the start URL in the browser."""
    return _setting("FHIRLINK_LAUNCH_START_TTL", 300)


# --- Redirect URIs: one per health system (mix-up defence) --------------------------------------


def callback_base() -> str:
    """The shared callback URL every per-health-system redirect URI is built under."""
    return str(
        getattr(settings, "FHIRLINK_REDIRECT_URI", "")
        or f"{settings.PUBLIC_BASE_URL}{CALLBACK_PATH}"
    ).rstrip("/")


def health_system_redirect_uri(health_system: HealthSystem | str) -> str:
    """The redirect URI to register at the EHR for this health system (or slug):
    `<PUBLIC_BASE_URL>/fhirlink/callback/<slug>`. Distinct per health system, so the callback
    knows which authorization server sent the browser (RFC 9700 §4.4.2)."""
    slug = health_system if isinstance(health_system, str) else health_system.slug
    return f"{callback_base()}/{slug}"


def redirect_uri_key(uri: str) -> str | None:
    """The `<slug>` of a `.../fhirlink/callback/<slug>` redirect URI; None for the shared
    (legacy) `.../fhirlink/callback`, or a URI of another shape."""
    parts = [p for p in urlsplit(uri).path.split("/") if p]
    if len(parts) >= 2 and parts[-2] == "callback":
        return parts[-1]
    return None


def _origin(url: str | None) -> str:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else ""


def redirect_uri_shared(health_system: HealthSystem) -> bool:
    """True when another enabled health system at another server names the same redirect URI
    (the legacy shared path): then only `iss` can tell the authorization servers apart.

    Systems at the same FHIR and authorization origins (the tenants of one EHR vendor's
    platform, e.g. Oracle's fhir-myrecord.cerner.com / authorization.cerner.com) are one
    operator: a code sent to a sibling tenant's token endpoint reaches no third party (and is
    refused there), so they may share a redirect URI without `iss`."""
    own_fhir = _origin(health_system.fhir_base_url)
    own_authz = _origin((health_system.discovery or {}).get("authorization_endpoint"))
    others = (
        HealthSystem.objects.filter(enabled=True, redirect_uri=health_system.redirect_uri)
        .exclude(pk=health_system.pk)
        .values_list("fhir_base_url", "discovery__authorization_endpoint")
    )
    for fhir_base_url, authorization_endpoint in others.iterator():
        if _origin(fhir_base_url) != own_fhir:
            return True
        authz = _origin(authorization_endpoint if isinstance(authorization_endpoint, str) else "")
        if own_authz and authz and authz != own_authz:
            return True
    return False


# --- The app's return URI ------------------------------------------------------------------------


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


# --- 1. The app starts a launch (bearer token) ----------------------------------------------------


@dataclass
class LaunchStart:
    connection: Connection
    attempt_id: str
    start_url: str = field(repr=False)  # carries the single-use start token
    expires_at: datetime
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


def _check_pkce(doc: dict[str, Any]) -> None:
    """PKCE downgrade: a server that lists its PKCE methods without S256 cannot be used (we never
    fall back to `plain` or to no PKCE). A server that lists none gets S256 all the same."""
    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise EhrMisconfigured("The health system does not support PKCE with S256.")


def connection_start(
    *,
    patient: Patient,
    health_system_id: Any,
    return_uri: str | None = None,
    connection_id: Any | None = None,
    request: Any | None = None,
) -> LaunchStart:
    """Begin a launch: consent gate, discovery, scopes; the single-use start URL."""
    consent_require(patient=patient, purpose=Purpose.EHR_SYNC)
    # A registration, or a directory entry turned into one now (its source's platform app).
    health_system = directory_health_system_resolve(health_system_id=health_system_id)
    if health_system is None:
        raise HealthSystemNotFound()
    if health_system.on_hold:
        raise HealthSystemNotAvailableYet()
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
    _check_pkce(doc)
    scopes, resources = launch_scopes(health_system, doc)
    if not resources:
        raise EhrMisconfigured("None of the configured resources is supported by the server.")
    start_token = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=start_ttl())

    with transaction.atomic():
        connection = _target_connection(
            patient=patient, health_system=health_system, connection_id=connection_id
        )
        attempt = LaunchAttempt.objects.create(
            connection=connection,
            patient=patient,
            health_system=health_system,
            start_hash=_sha(start_token),
            issuer=doc.get("issuer") or "",
            aud=health_system.fhir_base_url.rstrip("/"),
            authorize_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            redirect_uri=health_system.redirect_uri or health_system_redirect_uri(health_system),
            requested_scopes=" ".join(scopes),
            return_uri=return_uri,
            expires_at=expires_at,
        )
        audit.log_connection(
            action=audit.AccessAction.CONNECT,
            patient_id=patient.pk,
            actor_user_id=patient.user_id,
            connection_ids=[str(connection.pk)],
            query={"step": "start", "health_system": str(health_system.pk)},
            request=request,
        )
    logger.info("connection %s: launch created (attempt %s)", connection.pk, attempt.pk)
    return LaunchStart(
        connection=connection,
        attempt_id=str(attempt.pk),
        start_url=f"{settings.PUBLIC_BASE_URL}/fhirlink/launch/{start_token}",
        expires_at=expires_at,
        requested_resources=resources,
    )


# --- 2. The browser opens the start URL (signed in as the same account) --------------------------


@dataclass
class BrowserStart:
    """Where the start URL sends the browser. `binding` (set as the attempt's cookie) is there
    only when the launch really started."""

    outcome: str  # "started", or why not
    redirect_to: str = field(repr=False)  # the authorize URL (carries state) or the deep link
    attempt_id: str = ""
    binding: str = field(default="", repr=False)


def binding_cookie_name(attempt_id: str) -> str:
    return f"{BINDING_COOKIE_PREFIX}{attempt_id.replace('-', '')}"


def binding_cookie_salt(attempt_id: str) -> str:
    return f"fhirlink.launch-binding:{attempt_id}"


def _refuse_start(attempt: LaunchAttempt, outcome: str, *, tell_connection: bool) -> BrowserStart:
    _record_failure(attempt, outcome)
    logger.warning("connection %s: launch start refused (%s)", attempt.connection_id, outcome)
    return BrowserStart(
        outcome=outcome,
        redirect_to=app_redirect(
            attempt.return_uri,
            connection_id=str(attempt.connection_id) if tell_connection else None,
            outcome=outcome,
        ),
        attempt_id=str(attempt.pk),
    )


def launch_browser_start(
    *, start_token: str, user: Any, request: Any | None = None
) -> BrowserStart:
    """The start URL, opened by a browser signed in as `user`. Single use; only the account that
    created the launch may start it (another account's refusal consumes it, links nothing)."""
    if not start_token or len(start_token) > 128:
        return BrowserStart(outcome="invalid_start", redirect_to="")
    attempt = (
        LaunchAttempt.objects.select_related("health_system", "patient")
        .filter(start_hash=_sha(start_token))
        .first()
    )
    if attempt is None:
        return BrowserStart(outcome="invalid_start", redirect_to="")
    now = timezone.now()
    started = LaunchAttempt.objects.filter(pk=attempt.pk, started_at__isnull=True).update(
        started_at=now
    )
    same_account = getattr(user, "pk", None) == attempt.patient.user_id
    if started != 1:
        # Replayed (the back button, a leaked link): the launch under way keeps going.
        logger.warning("connection %s: start URL replayed", attempt.connection_id)
        return BrowserStart(
            outcome="start_replayed",
            redirect_to=app_redirect(
                attempt.return_uri,
                connection_id=str(attempt.connection_id) if same_account else None,
                outcome="start_replayed",
            ),
            attempt_id=str(attempt.pk),
        )
    if not same_account:
        return _refuse_start(attempt, "start_foreign", tell_connection=False)
    if attempt.expires_at <= now:
        return _refuse_start(attempt, "start_expired", tell_connection=True)

    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    binding = secrets.token_urlsafe(32)
    verifier, challenge = _pkce_pair()
    sealed = vault.seal(verifier, aad=f"fhirlink.launchattempt:{attempt.pk}:verifier")
    LaunchAttempt.objects.filter(pk=attempt.pk).update(
        state_hash=_sha(state),
        nonce_hash=_sha(nonce),
        binding_hash=_sha(binding),
        verifier_key_id=sealed.key_id,
        verifier_blob=sealed.blob,
        expires_at=now + timedelta(seconds=launch_ttl()),
    )
    health_system = attempt.health_system
    params = {
        "response_type": "code",
        "client_id": health_system.client_id,
        "redirect_uri": attempt.redirect_uri,
        "scope": attempt.requested_scopes,
        "state": state,
        "aud": attempt.aud,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = attempt.authorize_endpoint
    separator = "&" if urlsplit(endpoint).query else "?"
    logger.info("connection %s: launch started in the browser", attempt.connection_id)
    return BrowserStart(
        outcome="started",
        redirect_to=f"{endpoint}{separator}{urlencode(params)}",
        attempt_id=str(attempt.pk),
        binding=binding,
    )


# --- 3. Callback ---------------------------------------------------------------------------------


@dataclass
class CallbackResult:
    connection_id: str | None
    outcome: str
    return_uri: str
    attempt_id: str = ""

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
    return attempt


def _check_binding(attempt: LaunchAttempt, binding: str | None, user: Any | None) -> None:
    """RFC 9700 §4.7.1 / RFC 6749 §10.12: the browser finishing the launch is the one that
    started it (its signed cookie holds the secret whose SHA-256 the attempt keeps), and, when
    it is signed in here, as the account that started it."""
    if not binding or not attempt.binding_hash:
        raise LaunchRefused("state_foreign")
    if not hmac.compare_digest(_sha(binding).encode(), attempt.binding_hash.encode()):
        raise LaunchRefused("state_foreign")
    signed_in_as = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    if signed_in_as is not None and signed_in_as != attempt.patient.user_id:
        raise LaunchRefused("state_foreign")


def _check_arrival(attempt: LaunchAttempt, arrival_key: str | None) -> None:
    """Mix-up (RFC 9700 §4.4): the browser came back to the redirect URI this attempt's
    authorization request named, i.e. from the authorization server the attempt was sent to."""
    if redirect_uri_key(attempt.redirect_uri) != arrival_key:
        raise LaunchRefused("redirect_uri_mismatch")


def _finish_attempt(attempt: LaunchAttempt, outcome: str) -> None:
    LaunchAttempt.objects.filter(pk=attempt.pk).update(outcome=outcome)


def _record_failure(attempt: LaunchAttempt, outcome: str) -> None:
    _finish_attempt(attempt, outcome)
    connection = Connection.objects.get(pk=attempt.connection_id)
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


def _check_iss(
    attempt: LaunchAttempt, iss: str | None, doc: dict[str, Any], *, required: bool
) -> None:
    """RFC 9207: `iss`, whenever present, must be the issuer this attempt was sent to; it must be
    present when the server advertises it, or when the redirect URI is shared (`required`)."""
    if iss is None or iss == "":
        if required or doc.get("authorization_response_iss_parameter_supported"):
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


# Refusals before this browser is known to be the one that started the launch: the deep link
# then names no connection (it may be another account's).
_UNBOUND = {"state_foreign"}


def callback_complete(
    *,
    params: dict[str, str],
    binding_for: Callable[[str], str | None],
    arrival_key: str | None,
    user: Any | None = None,
    request: Any | None = None,
) -> CallbackResult:
    """Handle the redirect from the authorization server. Never raises for bad input: returns
    the outcome the browser carries back to the app.

    `binding_for(attempt_id)` reads this browser's binding cookie for that attempt;
    `arrival_key` is the `<slug>` of the redirect URI the browser came back to (None for the
    shared legacy path)."""
    default_return = app_return_uris()[0]
    try:
        attempt = _claim_attempt(params.get("state", ""))
    except LaunchRefused as refused:
        logger.warning("launch callback refused: %s", refused.outcome)
        return CallbackResult(None, refused.outcome, default_return)

    result_connection: str | None = str(attempt.connection_id)
    try:
        _check_binding(attempt, binding_for(str(attempt.pk)), user)
        _check_arrival(attempt, arrival_key)
        outcome, result_connection = _complete(attempt, params, request=request)
    except LaunchRefused as refused:
        outcome = refused.outcome
        _record_failure(attempt, outcome)
        if outcome in _UNBOUND:
            result_connection = None
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
    return CallbackResult(result_connection, outcome, attempt.return_uri, str(attempt.pk))


def _complete(
    attempt: LaunchAttempt, params: dict[str, str], *, request: Any | None
) -> tuple[str, str]:
    health_system = attempt.health_system
    doc = discover(health_system)
    _check_iss(attempt, params.get("iss"), doc, required=redirect_uri_shared(health_system))
    error = params.get("error")
    if error:
        raise LaunchRefused(error if error in AUTHZ_ERRORS else "authorization_error")
    code = params.get("code", "")
    if not code:
        raise LaunchRefused("missing_code")
    if not consent_is_granted(patient=attempt.patient_id, purpose=Purpose.EHR_SYNC):
        raise LaunchRefused("consent_required")
    if not attempt.verifier_blob:
        raise LaunchRefused("invalid_state")
    verifier = vault.open_sealed(
        attempt.verifier_blob,
        key_id=attempt.verifier_key_id,
        aad=f"fhirlink.launchattempt:{attempt.pk}:verifier",
    )
    # The code goes only to the token endpoint of the server this attempt was sent to (found
    # by its state, checked against the redirect URI and `iss` above).
    try:
        token = oauth_client.exchange_code(
            health_system,
            token_endpoint=attempt.token_endpoint,
            code=code,
            redirect_uri=attempt.redirect_uri,
            code_verifier=verifier,
        )
    except oauth_client.UnusableToken as unusable:
        _revoke_obtained(attempt, unusable.token)
        raise
    try:
        return _link(attempt, token, doc, request=request)
    except BaseException:
        # RFC 7009: a launch that ends in failure after the exchange leaves no live token.
        _revoke_obtained(attempt, token)
        raise


def _revoke_obtained(attempt: LaunchAttempt, token: oauth_client.TokenResponse) -> None:
    from fhirlink.services.connections import tokens_revoke

    try:
        result = tokens_revoke(
            health_system=attempt.health_system,
            access_token=token.get("access_token") or None,
            refresh_token=token.get("refresh_token") or None,
            label=f"connection {attempt.connection_id} (failed launch)",
        )
    except Exception:
        logger.exception("connection %s: revoking a failed launch's tokens failed", attempt.pk)
        return
    logger.info(
        "connection %s: failed launch's tokens revoked (refresh %s, access %s)",
        attempt.connection_id,
        result["refresh_token"],
        result["access_token"],
    )


def granted_within_request(*, granted: list[str], requested: list[str]) -> list[str]:
    """Scope escalation: of the granted scopes, those the request asked for, or a narrowing of a
    requested resource scope (the same context and type, a subset of its permissions, e.g.
    `patient/Observation.rs?category=laboratory` or `.s` for `.rs`). Anything broader or
    unasked (`patient/*.rs`, `user/...`, another type, `system/...`) is dropped."""
    requested_set = set(requested)
    by_type: dict[tuple[str, str], set[str]] = {}
    for scope in requested:
        parsed = _resource_scope(scope)
        if parsed:
            by_type.setdefault((parsed[0], parsed[1]), set()).update(parsed[2])
    kept: list[str] = []
    for scope in granted:
        if scope in requested_set:
            kept.append(scope)
            continue
        parsed = _resource_scope(scope.split("?", 1)[0])
        if parsed is None or parsed[1] == "*":
            continue
        allowed = by_type.get((parsed[0], parsed[1]))
        if allowed and parsed[2] <= allowed:
            kept.append(scope)
    return kept


_V1_PERMS = {"read": {"r", "s"}, "write": {"c", "u", "d"}, "*": {"c", "r", "u", "d", "s"}}


def _resource_scope(scope: str) -> tuple[str, str, set[str]] | None:
    """("patient", "Observation", {"r", "s"}) for `patient/Observation.rs` or `.read`."""
    context, sep, rest = scope.partition("/")
    if not sep or context not in {"patient", "user", "system"} or "." not in rest:
        return None
    resource, _, perms = rest.rpartition(".")
    if not resource:
        return None
    if perms in _V1_PERMS:
        return context, resource, set(_V1_PERMS[perms])
    if perms and set(perms) <= set("cruds"):
        return context, resource, set(perms)
    return None


def _link(
    attempt: LaunchAttempt,
    token: oauth_client.TokenResponse,
    doc: dict[str, Any],
    *,
    request: Any | None,
) -> tuple[str, str]:
    health_system = attempt.health_system
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
    requested = parse_scope_string(attempt.requested_scopes)
    granted = granted_within_request(
        granted=parse_scope_string(token.get("scope") or attempt.requested_scopes),
        requested=requested,
    )
    # Scopes by the standard (issue #20): references granted or skipped, declined = offered
    # by the server and not granted, the outcome from the configured types only.
    summary = grant_summary(
        requested_scopes=attempt.requested_scopes,
        granted=granted,
        scopes_supported=doc.get("scopes_supported"),
        reference_types=reference_resources(list(health_system.resources or [])),
    )
    allowed, declined = summary.allowed, summary.declined
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
        connection.last_outcome = summary.outcome
        connection.fhir_base_url = attempt.aud
        connection.fhir_patient_id = fhir_patient
        connection.fhir_user = identity["fhir_user"][:500]
        # Whose record (issue #20): the account holder's own, or one they manage (a proxy); a
        # reconnect keeps what the account holder said of a managed record (child, parent, ...).
        if identity["relationship"] == Relationship.SELF:
            connection.relationship = Relationship.SELF
        elif connection.relationship not in MANAGED_RELATIONSHIPS:
            connection.relationship = Relationship.MANAGED
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


__all__ = [
    "BrowserStart",
    "CallbackResult",
    "LaunchStart",
    "app_redirect",
    "app_return_uris",
    "binding_cookie_name",
    "binding_cookie_salt",
    "callback_complete",
    "connection_start",
    "health_system_redirect_uri",
    "launch_browser_start",
    "redirect_uri_key",
]
