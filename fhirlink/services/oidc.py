"""OpenID Connect id_token verification against the issuer's JWKS (CERNER.md §3).

Cerner's id_token issuer is `https://<auth host>/tenants/{tenant}/oidc/idsps/{tenant}/`, with
its OIDC configuration at `{iss}.well-known/openid-configuration`; keys rotate every few days,
so an unknown `kid` refetches the JWKS once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
from django.conf import settings
from django.core.cache import cache

from fhirlink import http
from fhirlink.exceptions import LaunchRefused

logger = logging.getLogger(__name__)

ALLOWED_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"}
LEEWAY = 60


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def issuer_trusted(iss: str, *, discovery: dict[str, Any], tenant: str) -> bool:
    """The id_token's issuer belongs to this health system's authorization server (and tenant)."""
    if not iss:
        return False
    try:
        http.check_url(iss)
    except http.EhrTerminal:
        return False
    expected = (discovery.get("issuer") or "").rstrip("/")
    if expected:
        return iss.rstrip("/") == expected or iss.startswith(expected + "/")
    # No issuer advertised: same origin as the authorization endpoint, under the tenant's path.
    authz = urlsplit(discovery.get("authorization_endpoint") or "")
    parts = urlsplit(iss)
    same_origin = (parts.scheme, parts.netloc) == (authz.scheme, authz.netloc)
    return same_origin and bool(tenant) and f"/tenants/{tenant}/" in parts.path + "/"


def _oidc_config(iss: str) -> dict[str, Any]:
    key = f"fhirlink:oidc-config:{_sha(iss)}"
    cached = cache.get(key)
    if isinstance(cached, dict):
        return cached
    url = iss.rstrip("/") + "/.well-known/openid-configuration"
    config = http.get_json(url)
    if str(config.get("issuer") or "").rstrip("/") != iss.rstrip("/"):
        raise LaunchRefused("id_token_issuer")
    cache.set(key, config, timeout=int(getattr(settings, "FHIRLINK_DISCOVERY_TTL", 3600)))
    return config


def jwks_get(jwks_uri: str, *, force: bool = False) -> dict[str, Any]:
    key = f"fhirlink:jwks:{_sha(jwks_uri)}"
    if not force:
        cached = cache.get(key)
        if isinstance(cached, dict):
            return cached
    jwks = http.get_json(jwks_uri)
    if not isinstance(jwks.get("keys"), list):
        raise LaunchRefused("id_token_signature")
    cache.set(key, jwks, timeout=int(getattr(settings, "FHIRLINK_JWKS_TTL", 3600)))
    return jwks


def _find_key(jwks: dict[str, Any], kid: str | None, alg: str) -> jwt.PyJWK | None:
    for entry in jwks.get("keys") or []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if kid is not None and entry.get("kid") != kid:
            continue
        try:
            return jwt.PyJWK(entry, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return None


def _fhir_user_ref(value: str) -> tuple[str, str] | None:
    """("Patient", "123") from "https://…/r4/{tenant}/Patient/123" or "Patient/123"."""
    parts = [p for p in value.split("?")[0].split("/") if p]
    if len(parts) < 2:
        return None
    return parts[-2], parts[-1]


def verify_id_token(
    id_token: str,
    *,
    discovery: dict[str, Any],
    tenant: str,
    client_id: str,
    nonce_hash: str,
    token_patient: str,
) -> dict[str, Any]:
    """Verify an id_token; returns {iss, sub, fhir_user, relationship} (relationship "self" or
    "managed": see below). Raises LaunchRefused(<outcome>)."""
    try:
        header = jwt.get_unverified_header(id_token)
        unverified = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise LaunchRefused("id_token_invalid") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise LaunchRefused("id_token_signature")
    iss = str(unverified.get("iss") or "")
    if not issuer_trusted(iss, discovery=discovery, tenant=tenant):
        raise LaunchRefused("id_token_issuer")

    try:
        config = _oidc_config(iss)
        jwks_uri = str(config.get("jwks_uri") or "")
        algs = config.get("id_token_signing_alg_values_supported")
        if isinstance(algs, list) and alg not in algs:
            raise LaunchRefused("id_token_signature")
    except http.EhrTerminal:
        jwks_uri = str(discovery.get("jwks_uri") or "")
    if not jwks_uri:
        raise LaunchRefused("id_token_signature")

    kid = header.get("kid")
    key = _find_key(jwks_get(jwks_uri), kid, alg)
    if key is None:
        # Keys rotate: refetch once, bypassing the cache.
        logger.info("id_token kid not in cached JWKS; refetching once")
        key = _find_key(jwks_get(jwks_uri, force=True), kid, alg)
    if key is None:
        raise LaunchRefused("id_token_signature")

    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key=key.key,
            algorithms=[alg],
            audience=client_id,
            issuer=iss,
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidSignatureError:
        raise LaunchRefused("id_token_signature") from None
    except jwt.InvalidAudienceError:
        raise LaunchRefused("id_token_audience") from None
    except jwt.ExpiredSignatureError:
        raise LaunchRefused("id_token_expired") from None
    except jwt.InvalidIssuerError:
        raise LaunchRefused("id_token_issuer") from None
    except jwt.PyJWTError:
        raise LaunchRefused("id_token_invalid") from None

    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise LaunchRefused("id_token_audience")
    max_age = int(getattr(settings, "FHIRLINK_ID_TOKEN_MAX_AGE", 900))
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or iat < time.time() - max_age - LEEWAY:
        raise LaunchRefused("id_token_expired")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(_sha(nonce), nonce_hash):
        raise LaunchRefused("id_token_nonce")

    # Whose record: the token's patient context is the record; fhirUser is who signed in.
    # SMART does not require them to be equal: a parent whose own login is Patient/A picks
    # their child B in the server's patient picker, and Cerner represents proxies as
    # RelatedPerson or Person. Equal (or no fhirUser): the user's own record ("self");
    # anyone else: a record they manage ("managed").
    fhir_user = str(claims.get("fhirUser") or claims.get("profile") or "")
    relationship = "self"
    if fhir_user:
        ref = _fhir_user_ref(fhir_user)
        if ref is None:
            raise LaunchRefused("fhir_user_mismatch")
        kind, ident = ref
        if kind not in {"Patient", "RelatedPerson", "Person"}:
            # A practitioner (provider persona) must never link as a patient.
            raise LaunchRefused("fhir_user_not_patient")
        if not (kind == "Patient" and ident == token_patient):
            relationship = "managed"
    return {
        "iss": iss,
        "sub": str(claims.get("sub")),
        "fhir_user": fhir_user,
        "relationship": relationship,
    }
