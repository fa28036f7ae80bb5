"""The OAuth client side of SMART: token requests with the registration's client authentication
(public + PKCE, client_secret_basic, private_key_jwt RS384/ES384), refresh and RFC 7009 revocation.

oauthlib prepares the token request bodies and parses/validates token responses; every call
goes out through `fhirlink.http` (timeouts, no redirects, retryable/terminal split).
requests-oauthlib's `OAuth2Session` is not used: it sends through its own session (bypassing
that one client module) and its https guard can only be relaxed process-wide by an environment
variable, where we want https everywhere but the sandbox on loopback.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from oauthlib.oauth2 import OAuth2Error, WebApplicationClient

from fhirlink import http, vault
from fhirlink.models import ClientAuth, HealthSystem

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def secret_aad(health_system: HealthSystem) -> str:
    return f"fhirlink.healthsystem:{health_system.pk}:secret"


def health_system_secret(health_system: HealthSystem) -> str:
    if not health_system.secret_blob:
        raise http.EhrTerminal("client credential not configured")
    return vault.open_sealed(
        health_system.secret_blob,
        key_id=health_system.secret_key_id,
        aad=secret_aad(health_system),
    )


def client_assertion(health_system: HealthSystem, *, audience: str) -> str:
    """A private_key_jwt client assertion (RFC 7523), 5 minutes, unique jti."""
    now = int(time.time())
    claims = {
        "iss": health_system.client_id,
        "sub": health_system.client_id,
        "aud": audience,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    headers = {"typ": "JWT"}
    if health_system.jwt_key_id:
        headers["kid"] = health_system.jwt_key_id
    return jwt.encode(
        claims,
        health_system_secret(health_system),
        algorithm=health_system.jwt_alg,
        headers=headers,
    )


class TokenResponse(dict[str, Any]):
    """A token endpoint's answer (access/refresh/id token). Its repr and str name the fields,
    never their values, so a log line, an exception report or a debugger's locals never carry
    a token."""

    def __repr__(self) -> str:
        return f"TokenResponse(fields={sorted(self)})"

    __str__ = __repr__


class UnusableToken(http.EhrTerminal):
    """The server issued tokens we cannot use (e.g. not Bearer): `token` holds them, so that the
    caller can revoke them (RFC 7009). Never in the message or the repr."""

    def __init__(self, message: str, *, token: TokenResponse) -> None:
        super().__init__(message)
        self.token = token


def _client_auth(
    health_system: HealthSystem, *, endpoint: str
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """(extra body parameters, HTTP Basic credentials) for the registration's client auth."""
    if health_system.client_auth == ClientAuth.CLIENT_SECRET_BASIC:
        # RFC 6749 §2.3.1: form-urlencode both parts before Basic encoding.
        secret = health_system_secret(health_system)
        return {}, (quote(health_system.client_id, safe=""), quote(secret, safe=""))
    if health_system.client_auth == ClientAuth.PRIVATE_KEY_JWT:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(health_system, audience=endpoint),
        }, None
    return {"client_id": health_system.client_id}, None


def _token_call(
    health_system: HealthSystem,
    *,
    token_endpoint: str,
    body: str,
    extra: dict[str, str],
    auth: tuple[str, str] | None,
) -> TokenResponse:
    if extra:
        body = f"{body}&{urlencode(extra)}" if body else urlencode(extra)
    response = http.post_form(token_endpoint, data=body, auth=auth)
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type:
        raise http.EhrTerminal("token endpoint answered a non-JSON body", status=response.status)
    client = WebApplicationClient(health_system.client_id)
    try:
        token = client.parse_request_body_response(response.content.decode())
    except OAuth2Error as exc:
        raise http.EhrTerminal("token endpoint refused", oauth_error=exc.error) from None
    except (ValueError, Warning):
        raise http.EhrTerminal("token endpoint answered an invalid token response") from None
    result = TokenResponse(token)
    if str(result.get("token_type", "")).lower() != "bearer":
        raise UnusableToken("token endpoint issued a non-Bearer token", token=result)
    scope = result.get("scope")
    if isinstance(scope, list):
        result["scope"] = " ".join(scope)
    return result


def exchange_code(
    health_system: HealthSystem,
    *,
    token_endpoint: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> TokenResponse:
    extra, auth = _client_auth(health_system, endpoint=token_endpoint)
    client = WebApplicationClient(health_system.client_id)
    body = client.prepare_request_body(
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        include_client_id=False,
    )
    return _token_call(
        health_system, token_endpoint=token_endpoint, body=body, extra=extra, auth=auth
    )


def refresh(
    health_system: HealthSystem, *, token_endpoint: str, refresh_token: str
) -> TokenResponse:
    extra, auth = _client_auth(health_system, endpoint=token_endpoint)
    client = WebApplicationClient(health_system.client_id)
    body = client.prepare_refresh_body(refresh_token=refresh_token)
    return _token_call(
        health_system, token_endpoint=token_endpoint, body=body, extra=extra, auth=auth
    )


def revoke(health_system: HealthSystem, *, revocation_endpoint: str, token: str, hint: str) -> None:
    """RFC 7009. A 200 means revoked (or already invalid); errors raise EhrHttpError."""
    extra, auth = _client_auth(health_system, endpoint=revocation_endpoint)
    http.post_form(
        revocation_endpoint,
        data={"token": token, "token_type_hint": hint, **extra},
        auth=auth,
    )
