"""The authorization server's logic: clients, authorization requests, codes, grants, tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
import requests
from django.db import transaction
from django.utils import timezone

from . import conf
from .conf import BUILTIN_CLIENTS, PATIENTS_BY_KEY, TenantSwitches, TestPatient
from .keys import sign_id_token
from .models import (
    SandboxAccessToken,
    SandboxAuthCode,
    SandboxAuthRequest,
    SandboxClient,
    SandboxGrant,
    SandboxRetiredRefreshToken,
)
from .scopes import category_choosable, category_narrow, generic_scopes_filter, scopes_filter
from .state import clock_now, fhir_base, issuer, sha256, tenant_row, tenant_switches

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class OAuthError(Exception):
    """An RFC 6749 error with a Cerner-style ``error_uri``."""

    def __init__(self, error: str, urn: str, *, status: int = 400, description: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.urn = urn
        self.status = status
        self.description = description

    def body(
        self, *, origin: str, tenant: str, client_id: str = "", generic: bool = False
    ) -> dict[str, str]:
        if generic:
            # A standards-only server: RFC 6749's fields, no Cerner error_uri.
            plain = {"error": self.error}
            if self.description or self.urn:
                plain["error_description"] = self.description or self.urn.partition(":")[2]
            return plain
        urn = f"urn:cerner:error:authorization-server:oauth2:{self.urn}"
        uri = (
            f"{origin}/errors/{quote(urn, safe='')}/instances/{uuid.uuid4()}"
            f"?client={quote(client_id, safe='')}&tenant={tenant}"
        )
        out = {"error": self.error, "error_uri": uri}
        if self.description:
            out["error_description"] = self.description
        return out


# --- Clients --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    tenant: str
    client_id: str
    redirect_uris: tuple[str, ...]
    confidential: bool
    secret_hash: str
    jwks: dict[str, Any] | None
    jwks_url: str
    smart_version: str
    access: str

    @property
    def asymmetric(self) -> bool:
        return bool(self.jwks or self.jwks_url)


def client_register(
    *,
    tenant: str,
    client_id: str,
    redirect_uris: list[str],
    confidential: bool = False,
    secret: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str = "",
    smart_version: str = "v2",
    access: str = "offline",
    name: str = "",
) -> SandboxClient:
    """Create or update a client registration (idempotent: the demo seeding calls it each time)."""
    if smart_version not in {"v1", "v2"}:
        raise ValueError("smart_version must be v1 or v2")
    if access not in {"offline", "online", "none"}:
        raise ValueError("access must be offline, online or none")
    if confidential and not (secret or jwks or jwks_url):
        raise ValueError("a confidential client needs a secret or a JWKS")
    tenant_row(tenant)
    row, _ = SandboxClient.objects.update_or_create(
        tenant=tenant,
        client_id=client_id,
        defaults={
            "redirect_uris": list(redirect_uris),
            "confidential": confidential,
            "secret_hash": sha256(secret) if (confidential and secret) else "",
            "jwks": jwks if confidential else None,
            "jwks_url": jwks_url if confidential else "",
            "smart_version": smart_version,
            "access": access,
            "name": name or client_id,
        },
    )
    return row


def client_get(tenant: str, client_id: str) -> Client | None:
    row = SandboxClient.objects.filter(tenant=tenant, client_id=client_id).first()
    if row is not None:
        return Client(
            tenant,
            row.client_id,
            tuple(row.redirect_uris),
            row.confidential,
            row.secret_hash,
            row.jwks,
            row.jwks_url,
            row.smart_version,
            row.access,
        )
    builtin = BUILTIN_CLIENTS.get(client_id)
    if builtin is not None:
        return Client(
            tenant,
            client_id,
            tuple(builtin["redirect_uris"]),
            False,
            "",
            None,
            "",
            builtin["smart_version"],
            builtin["access"],
        )
    return None


# --- Authorization requests -----------------------------------------------------------------------


@dataclass
class AuthorizeOutcome:
    request_id: str = ""
    binding: str = ""
    # Set when the error is sent back to the client's redirect_uri.
    redirect_error: OAuthError | None = None
    # Set when the error must be shown to the user (no trustworthy redirect_uri).
    page_error: str = ""


def authorize_start(
    *, tenant: str, origin: str, params: dict[str, str]
) -> tuple[Client | None, AuthorizeOutcome]:
    client = client_get(tenant, params.get("client_id", ""))
    if client is None:
        return None, AuthorizeOutcome(page_error="Unknown client_id for this tenant.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        return client, AuthorizeOutcome(
            page_error="The redirect_uri does not match the registration."
        )
    if params.get("response_type") != "code":
        return client, AuthorizeOutcome(
            redirect_error=OAuthError(
                "unsupported_response_type", "authorize:response-type-unsupported"
            )
        )
    switches = tenant_switches(tenant)
    if params.get("aud", "").rstrip("/") != fhir_base(origin, tenant, switches.profile):
        return client, AuthorizeOutcome(
            redirect_error=OAuthError(
                "invalid_request",
                "authorize:aud-invalid",
                description="aud must be the FHIR base URL",
            )
        )
    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "")
    if challenge and method != "S256":
        return client, AuthorizeOutcome(
            redirect_error=OAuthError("invalid_request", "authorize:pkce-method-unsupported")
        )
    if not challenge and not client.confidential and switches.pkce_required_for_public:
        return client, AuthorizeOutcome(
            redirect_error=OAuthError("invalid_request", "authorize:pkce-required")
        )
    requested = params.get("scope", "").split()
    if switches.generic:
        from .fhir.search import SUPPORTED_TYPES

        decision = generic_scopes_filter(
            requested, access=client.access, switches=switches, types=frozenset(SUPPORTED_TYPES)
        )
    else:
        decision = scopes_filter(
            requested, smart_version=client.smart_version, access=client.access, switches=switches
        )
    if decision.error:
        return client, AuthorizeOutcome(
            redirect_error=OAuthError(decision.error, f"authorize:{decision.error_urn}")
        )
    binding = secrets.token_urlsafe(24)
    request_id = secrets.token_urlsafe(24)
    SandboxAuthRequest.objects.create(
        id=request_id,
        binding_hash=sha256(binding),
        tenant=tenant,
        client_id=client.client_id,
        params={
            "redirect_uri": redirect_uri,
            "state": params.get("state", ""),
            "nonce": params.get("nonce", ""),
            "code_challenge": challenge,
            "offered": decision.granted,
        },
        created_at=clock_now(tenant),
    )
    return client, AuthorizeOutcome(request_id=request_id, binding=binding)


def auth_request_get(*, tenant: str, request_id: str, binding: str) -> SandboxAuthRequest | None:
    row = SandboxAuthRequest.objects.filter(id=request_id, tenant=tenant, completed=False).first()
    if row is None or not hmac.compare_digest(row.binding_hash, sha256(binding or "")):
        return None
    if clock_now(tenant) - row.created_at > timedelta(seconds=conf.AUTH_REQUEST_SECONDS):
        return None
    return row


def patient_login(*, username: str, password: str) -> str | None:
    patient = conf.PATIENTS_BY_USERNAME.get(username.strip().lower())
    if patient is None or not hmac.compare_digest(patient.password.encode(), password.encode()):
        return None
    return patient.key


def patients_pickable(user_key: str) -> list[TestPatient]:
    """The records a login may share: its own, then the ones it manages (the picker's list)."""
    user = PATIENTS_BY_KEY[user_key]
    return [user, *(PATIENTS_BY_KEY[key] for key in user.manages)]


def auth_request_pick(*, row: SandboxAuthRequest, patient_key: str) -> bool:
    """The patient picker's choice: the login's own record or one it manages."""
    if not row.user_key or patient_key not in {p.key for p in patients_pickable(row.user_key)}:
        return False
    row.patient_key = patient_key
    row.save(update_fields=["patient_key"])
    return True


def _granted_scopes(
    offered: list[str], ticked: set[str], categories: dict[str, set[str]] | None
) -> list[str]:
    """The offered scopes the patient left ticked; with ``categories`` (the generic consent
    page's Observation categories, per scope), a category-choosable scope becomes one granular
    scope per ticked category (or none)."""
    from .scopes import untickable

    granted: list[str] = []
    for scope in offered:
        if untickable(scope) and scope not in ticked:
            continue
        if categories is not None and category_choosable(scope):
            granted.extend(category_narrow(scope, categories.get(scope, set())))
        else:
            granted.append(scope)
    return granted


def auth_request_complete(
    *,
    row: SandboxAuthRequest,
    approved: bool,
    ticked: set[str],
    categories: dict[str, set[str]] | None = None,
) -> dict[str, str]:
    """Approve or deny; returns the query parameters for the client's redirect_uri."""
    params = row.params
    out: dict[str, str] = {}
    with transaction.atomic():
        updated = SandboxAuthRequest.objects.filter(id=row.id, completed=False).update(
            completed=True
        )
        if not updated:
            raise OAuthError("invalid_request", "authorize:request-already-used")
        if not approved:
            out["error"] = "access_denied"
        else:
            granted = _granted_scopes(params["offered"], ticked, categories)
            now = clock_now(row.tenant)
            access = (
                "offline"
                if "offline_access" in granted
                else "online"
                if "online_access" in granted
                else "none"
            )
            grant = SandboxGrant.objects.create(
                tenant=row.tenant,
                client_id=row.client_id,
                patient_key=row.patient_key,
                user_key=row.user_key if row.user_key != row.patient_key else "",
                scope=" ".join(granted),
                access=access,
                created_at=now,
                last_used_at=now,
            )
            code = secrets.token_urlsafe(32)
            SandboxAuthCode.objects.create(
                code_hash=sha256(code),
                grant=grant,
                redirect_uri=params["redirect_uri"],
                code_challenge=params.get("code_challenge", ""),
                nonce=params.get("nonce", ""),
                expires_at=now + timedelta(seconds=conf.AUTH_CODE_SECONDS),
            )
            out["code"] = code
    if params.get("state"):
        out["state"] = params["state"]
    return out


# --- Token endpoint -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_access_token() -> str:
    """Opaque to the client, shaped like Cerner's JWE (alg dir, A128CBC-HS256, DEF)."""
    header = _b64(
        json.dumps({"alg": "dir", "enc": "A128CBC-HS256", "zip": "DEF", "kid": "sbx"}).encode()
    )
    iv, ciphertext, tag = secrets.token_bytes(16), secrets.token_bytes(96), secrets.token_bytes(16)
    # JWE compact form with alg "dir": header . (empty key) . iv . ciphertext . tag
    return f"{header}..{_b64(iv)}.{_b64(ciphertext)}.{_b64(tag)}"


def _new_refresh_token(grant: SandboxGrant) -> str:
    payload = {
        "id": str(uuid.uuid4()),
        "secret": secrets.token_urlsafe(32),
        "ver": "1.1",
        "type": f"{grant.access}_access",
        "profile": "smart-v1",
        "persona": "patient",
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


def authenticate_client(
    *, tenant: str, form: dict[str, str], authorization: str, token_url: str
) -> Client:
    """client_secret_basic, private_key_jwt (RS384/ES384), or a public client's client_id."""
    if authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip()).decode()
            cid, _, secret = raw.partition(":")
        except (ValueError, UnicodeDecodeError):
            raise OAuthError(
                "invalid_client", "token:client-authentication-failed", status=401
            ) from None
        from urllib.parse import unquote_plus

        cid, secret = unquote_plus(cid), unquote_plus(secret)
        client = client_get(tenant, cid)
        if (
            client is None
            or not client.confidential
            or not client.secret_hash
            or not hmac.compare_digest(client.secret_hash, sha256(secret))
        ):
            raise OAuthError("invalid_client", "token:client-authentication-failed", status=401)
        return client
    if form.get("client_assertion_type") == ASSERTION_TYPE:
        assertion = form.get("client_assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise OAuthError(
                "invalid_client", "token:client-assertion-invalid", status=401
            ) from None
        cid = str(unverified.get("iss", ""))
        client = client_get(tenant, cid)
        if client is None or not client.asymmetric or header.get("alg") not in {"RS384", "ES384"}:
            raise OAuthError("invalid_client", "token:client-authentication-failed", status=401)
        keys = client.jwks
        if not keys and client.jwks_url:
            try:
                keys = requests.get(client.jwks_url, timeout=5, allow_redirects=False).json()
            except (requests.RequestException, ValueError):
                raise OAuthError(
                    "invalid_client", "token:client-jwks-unavailable", status=401
                ) from None
        jwk_set = jwt.PyJWKSet.from_dict(keys or {"keys": []})
        candidates = [
            k for k in jwk_set.keys if not header.get("kid") or k.key_id == header.get("kid")
        ]
        for key in candidates:
            try:
                claims = jwt.decode(
                    assertion,
                    key.key,
                    algorithms=["RS384", "ES384"],
                    audience=token_url,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
            except jwt.PyJWTError:
                continue
            if claims["sub"] != cid:
                break
            _jti_use(cid, str(claims["jti"]), int(claims["exp"]))
            return client
        raise OAuthError("invalid_client", "token:client-assertion-invalid", status=401)
    client = client_get(tenant, form.get("client_id", ""))
    if client is None:
        raise OAuthError("invalid_client", "token:client-unknown", status=401)
    if client.confidential:
        raise OAuthError("invalid_client", "token:client-authentication-required", status=401)
    return client


def _jti_use(client_id: str, jti: str, exp: int) -> None:
    """A client assertion is single-use: a replayed ``jti`` is refused until it expires."""
    from django.db import IntegrityError

    from .models import SandboxAssertionJti

    now = timezone.now()
    SandboxAssertionJti.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            SandboxAssertionJti.objects.create(
                jti_hash=sha256(f"{client_id}:{jti}"),
                expires_at=datetime.fromtimestamp(exp, tz=now.tzinfo),
            )
    except IntegrityError:
        raise OAuthError("invalid_client", "token:client-assertion-replayed", status=401) from None


def _issue(grant: SandboxGrant, *, now: datetime, scope: str) -> str:
    token = _new_access_token()
    SandboxAccessToken.objects.create(
        token_hash=sha256(token),
        grant=grant,
        scope=scope,
        expires_at=now + timedelta(seconds=conf.ACCESS_TOKEN_SECONDS),
    )
    return token


def _token_response(
    grant: SandboxGrant, *, access_token: str, scope: str, switches: TenantSwitches
) -> dict[str, Any]:
    patient = PATIENTS_BY_KEY[grant.patient_key]
    body: dict[str, Any] = {
        "access_token": access_token,
        "scope": scope,
        "token_type": "Bearer",
        "expires_in": conf.ACCESS_TOKEN_SECONDS,
        "patient": patient.fhir_id,
        "need_patient_banner": True,
    }
    if not switches.generic:
        body["smart_style_url"] = conf.SMART_STYLE_URL
        body["tenant"] = grant.tenant
    if switches.patient_token_user_fields:
        body["user"] = patient.fhir_id
        body["username"] = patient.username
    if switches.online_active_ttl and grant.access == "online":
        body["active_ttl"] = conf.ONLINE_SESSION_SECONDS
    return body


def token_exchange_code(*, client: Client, form: dict[str, str], origin: str) -> dict[str, Any]:
    tenant = client.tenant
    now = clock_now(tenant)
    with transaction.atomic():
        code = (
            SandboxAuthCode.objects.select_related("grant")
            .select_for_update()
            .filter(code_hash=sha256(form.get("code", "")))
            .first()
        )
        if code is None:
            raise OAuthError("invalid_grant", "token:code-invalid-or-expired")
        grant = code.grant
        replayed = code.used
        if not replayed:
            code.used = True
            code.save(update_fields=["used"])
    if replayed:
        # A replayed code revokes everything issued from it (RFC 6749 §4.1.2).
        grant_revoke(grant_id=grant.id)
        raise OAuthError("invalid_grant", "token:code-invalid-or-expired")
    if grant.tenant != tenant or grant.client_id != client.client_id or code.expires_at < now:
        raise OAuthError("invalid_grant", "token:code-invalid-or-expired")
    if form.get("redirect_uri", "") != code.redirect_uri:
        raise OAuthError("invalid_grant", "token:redirect-uri-mismatch")
    verifier = form.get("code_verifier", "")
    if code.code_challenge:
        expected = _b64(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not hmac.compare_digest(expected, code.code_challenge):
            raise OAuthError("invalid_grant", "token:pkce-verification-failed")
    elif verifier:
        raise OAuthError("invalid_grant", "token:pkce-verification-failed")
    switches = tenant_switches(tenant)
    access_token = _issue(grant, now=now, scope=grant.scope)
    body = _token_response(grant, access_token=access_token, scope=grant.scope, switches=switches)
    if grant.access in {"offline", "online"}:
        refresh = _new_refresh_token(grant)
        grant.refresh_token_hash = sha256(refresh)
        grant.save(update_fields=["refresh_token_hash"])
        body["refresh_token"] = refresh
    scopes = grant.scope.split()
    if "openid" in scopes:
        user = PATIENTS_BY_KEY[grant.user_key or grant.patient_key]
        base = fhir_base(origin, tenant, switches.profile)
        claims: dict[str, Any] = {
            "sub": user_subject(user, switches),
            "aud": client.client_id,
            "iss": issuer(origin, tenant, switches.profile),
            "name": f"{user.family.upper()}, {user.given}"
            if not switches.generic
            else f"{user.given} {user.family}",
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + conf.ACCESS_TOKEN_SECONDS,
        }
        if "fhirUser" in scopes or "profile" in scopes:
            claims["fhirUser"] = f"{base}/{fhir_user(grant, switches)}"
        if "profile" in scopes:
            claims["profile"] = claims["fhirUser"]
        if code.nonce:
            claims["nonce"] = code.nonce
        body["id_token"] = sign_id_token(claims)
    return body


def user_subject(user: TestPatient, switches: TenantSwitches) -> str:
    """The id_token's ``sub``: Cerner's is the login name; the generic server's an opaque id."""
    if switches.generic:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{user.key}"))
    return user.username


def fhir_user(grant: SandboxGrant, switches: TenantSwitches) -> str:
    """The fhirUser reference: the login's own Patient; acting for someone it manages, its own
    Patient record or (``proxy_fhir_user``) the RelatedPerson linking it to that patient."""
    if grant.user_key and switches.proxy_fhir_user == "RelatedPerson":
        return f"RelatedPerson/{related_person_id(grant.user_key, grant.patient_key)}"
    return f"Patient/{PATIENTS_BY_KEY[grant.user_key or grant.patient_key].fhir_id}"


def related_person_id(user_key: str, patient_key: str) -> str:
    return f"RP-{PATIENTS_BY_KEY[user_key].fhir_id}-{PATIENTS_BY_KEY[patient_key].fhir_id}"


def _grant_ended(grant: SandboxGrant, now: datetime, unused_days: int) -> str:
    """Why a grant can no longer be refreshed ("" when it can)."""
    if grant.status == SandboxGrant.Status.REVOKED:
        return "token:refresh-token-revoked"
    if grant.status == SandboxGrant.Status.SUSPENDED:
        return "token:refresh-token-suspended"
    if grant.access == "offline" and now - grant.last_used_at > timedelta(days=unused_days):
        return "token:refresh-token-expired"
    if grant.access == "online" and now - grant.created_at > timedelta(
        seconds=conf.ONLINE_SESSION_SECONDS
    ):
        return "token:session-ended"
    return ""


class Throttled(Exception):
    def __init__(self, retry_after: int, status: int) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after
        self.status = status


def token_refresh(*, client: Client, form: dict[str, str]) -> dict[str, Any]:
    tenant = client.tenant
    now = clock_now(tenant)
    switches = tenant_switches(tenant)
    refresh = form.get("refresh_token", "")
    if refresh:
        reused = (
            SandboxRetiredRefreshToken.objects.select_related("grant")
            .filter(token_hash=sha256(refresh), grant__tenant=tenant)
            .first()
        )
        if reused is not None and reused.grant.client_id == client.client_id:
            # A rotated refresh token presented again (stolen, or replayed): the whole family,
            # the current refresh token and its access tokens included, is revoked.
            grant_revoke(grant_id=reused.grant_id)
            raise OAuthError("invalid_grant", "token:refresh-token-reused")
    with transaction.atomic():
        grant = (
            SandboxGrant.objects.select_for_update()
            .filter(tenant=tenant, refresh_token_hash=sha256(refresh) if refresh else "-")
            .first()
        )
        if grant is None or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "token:refresh-token-invalid")
        ended = _grant_ended(grant, now, switches.offline_unused_days)
        if ended:
            raise OAuthError("invalid_grant", ended)
        interval = switches.refresh_min_interval_seconds
        if interval and grant.last_refresh_at is not None:
            elapsed = (now - grant.last_refresh_at).total_seconds()
            if 0 <= elapsed < interval:
                raise Throttled(int(interval - elapsed) + 1, switches.refresh_throttle_status)
        scope = grant.scope
        if form.get("scope"):
            asked = form["scope"].split()
            if not set(asked) <= set(grant.scope.split()):
                raise OAuthError("invalid_scope", "token:scope-exceeds-grant")
            scope = " ".join(asked)
        grant.last_refresh_at = now
        grant.last_used_at = now
        rotated = _new_refresh_token(grant) if switches.refresh_token_rotation else ""
        if rotated:
            SandboxRetiredRefreshToken.objects.create(
                token_hash=grant.refresh_token_hash, grant=grant, retired_at=now
            )
            grant.refresh_token_hash = sha256(rotated)
        grant.save(update_fields=["last_refresh_at", "last_used_at", "refresh_token_hash"])
        access_token = _issue(grant, now=now, scope=scope)
    body = _token_response(grant, access_token=access_token, scope=scope, switches=switches)
    if rotated:
        body["refresh_token"] = rotated
    # Otherwise (Cerner) no new refresh_token: the client keeps the original.
    return body


def token_revoke(*, client: Client, token: str) -> None:
    """RFC 7009: revoking a refresh token ends the grant; an access token only itself."""
    digest = sha256(token)
    with transaction.atomic():
        grant = SandboxGrant.objects.filter(
            tenant=client.tenant, client_id=client.client_id, refresh_token_hash=digest
        ).first()
        if grant is not None:
            grant_revoke(grant_id=grant.id)
            return
        SandboxAccessToken.objects.filter(
            token_hash=digest, grant__client_id=client.client_id, grant__tenant=client.tenant
        ).update(revoked=True)


def grant_revoke(*, grant_id: int, suspend: bool = False) -> None:
    status = SandboxGrant.Status.SUSPENDED if suspend else SandboxGrant.Status.REVOKED
    with transaction.atomic():
        SandboxGrant.objects.filter(id=grant_id).update(status=status)
        SandboxAccessToken.objects.filter(grant_id=grant_id).update(revoked=True)


# --- Bearer tokens at the FHIR server -------------------------------------------------------------


@dataclass(frozen=True)
class TokenContext:
    grant_id: int
    tenant: str
    client_id: str
    patient_key: str
    scopes: frozenset[str]
    profile: str = conf.PROFILE_CERNER


def bearer_check(
    *, tenant: str, authorization: str, now: datetime | None = None
) -> TokenContext | None:
    if not authorization.startswith("Bearer "):
        return None
    token = authorization[7:].strip()
    row = (
        SandboxAccessToken.objects.select_related("grant").filter(token_hash=sha256(token)).first()
    )
    if row is None or row.revoked or row.grant.tenant != tenant:
        return None
    if row.grant.status != SandboxGrant.Status.ACTIVE or row.expires_at <= (
        now or clock_now(tenant)
    ):
        return None
    return TokenContext(
        row.grant_id,
        tenant,
        row.grant.client_id,
        row.grant.patient_key,
        frozenset(row.scope.split()),
    )


def introspect(*, token: str) -> dict[str, Any]:
    digest = sha256(token)
    row = SandboxAccessToken.objects.select_related("grant").filter(token_hash=digest).first()
    if row is None or row.revoked or row.grant.status != SandboxGrant.Status.ACTIVE:
        return {"active": False}
    now = clock_now(row.grant.tenant)
    if row.expires_at <= now:
        return {"active": False}
    patient = PATIENTS_BY_KEY[row.grant.patient_key]
    user = PATIENTS_BY_KEY[row.grant.user_key or row.grant.patient_key]
    switches = tenant_switches(row.grant.tenant)
    body = {
        "active": True,
        "scope": row.scope,
        "client_id": row.grant.client_id,
        "token_type": "Bearer",
        "exp": int(row.expires_at.timestamp()),
        "patient": patient.fhir_id,
        "sub": user_subject(user, switches),
    }
    if not switches.generic:
        body["tenant"] = row.grant.tenant
    return body


def grants_for(
    *, tenant: str, patient_key: str | None = None, client_id: str | None = None
) -> list[SandboxGrant]:
    qs = SandboxGrant.objects.filter(tenant=tenant)
    if patient_key:
        qs = qs.filter(patient_key=patient_key)
    if client_id:
        qs = qs.filter(client_id=client_id)
    return list(qs.order_by("id"))


def auth_requests_expire() -> int:
    cutoff = timezone.now() - timedelta(days=1)
    return SandboxAuthRequest.objects.filter(created_at__lt=cutoff).delete()[0]
