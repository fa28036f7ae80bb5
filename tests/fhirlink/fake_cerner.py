"""A Cerner-shaped authorization server + FHIR metadata mocked with `responses`.

Payload shapes come from ../shared/cerner-r4-examples (read at test time, never copied): the live
fhir-myrecord smart-configuration, the secure CapabilityStatement, the OIDC configuration, the
token responses and the invalid_grant error. Hosts are rewritten to *.example.test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import rsa

EXAMPLES = Path(
    os.environ.get(
        "CERNER_EXAMPLES_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "cerner-r4-examples",
    )
)
TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
AUTH_ORIGIN = "https://authorization.example.test"
FHIR_BASE = f"https://fhir-myrecord.example.test/r4/{TENANT}"
AS_ISSUER = f"{AUTH_ORIGIN}/tenants/{TENANT}"
OIDC_ISSUER = f"{AUTH_ORIGIN}/tenants/{TENANT}/oidc/idsps/{TENANT}/"
JWKS_URI = f"{AUTH_ORIGIN}/jwk"
TOKEN_URL = (
    f"{AUTH_ORIGIN}/tenants/{TENANT}/hosts/fhir-myrecord.cerner.com/protocols/oauth2/profiles/"
    "smart-v1/token"
)
DOCS_TOKEN_URL = f"{AUTH_ORIGIN}/tenants/{TENANT}/protocols/oauth2/profiles/smart-v1/token"
REVOKE_URL = f"{AUTH_ORIGIN}/tenants/{TENANT}/protocols/oauth2/profiles/smart-v1/token/revoke"
CLIENT_ID = "portal-test-client"
FHIR_PATIENT = "12724066"


def example(path: str) -> Any:
    file = EXAMPLES / path
    if not file.exists():
        pytest.skip(f"Cerner examples not found at {EXAMPLES}")
    return json.loads(file.read_text())


def _rewrite(value: Any) -> Any:
    text = json.dumps(value)
    text = text.replace("https://authorization.cerner.com", AUTH_ORIGIN)
    return json.loads(text)


def new_rsa_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public_jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@dataclass
class Grant:
    code: str
    challenge: str
    nonce: str
    scope: str
    redirect_uri: str
    client_id: str
    patient: str
    refresh_token: str
    revoked: bool = False


@dataclass
class FakeCerner:
    rsps: responses.RequestsMock
    signing_key: Any = None
    signing_kid: str = ""
    jwks_keys: list[dict[str, Any]] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)
    refresh_index: dict[str, Grant] = field(default_factory=dict)
    issued_tokens: list[str] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[dict[str, str]] = field(default_factory=list)
    refresh_status: int | None = None  # force a status on refresh (e.g. 503)
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    id_token_key: Any = None  # sign with another key (bad signature)
    fhir_user: str | None = None
    send_refresh_token: bool = True
    authz_iss: str | None = AS_ISSUER
    jwks_fetches: int = 0
    token_delay: float = 0.0

    # --- discovery documents -------------------------------------------------------------------
    def smart_configuration(self) -> dict[str, Any]:
        doc = _rewrite(example("_observed-live/smart-configuration-fhir-myrecord-patient.json"))
        doc["jwks_uri"] = JWKS_URI
        return doc

    def capability_statement(self) -> dict[str, Any]:
        return _rewrite(example("CapabilityStatement/metadata-secure-fhir-ehr.json"))

    def openid_configuration(self) -> dict[str, Any]:
        doc = example("Auth/openid-configuration.json")
        doc = json.loads(
            json.dumps(doc).replace(
                f"https://authorization.cerner.com/tenants/{TENANT}/oidc/idsps/{TENANT}/",
                OIDC_ISSUER,
            )
        )
        doc["jwks_uri"] = JWKS_URI
        return doc

    def install(self) -> None:
        self.signing_kid = "2026-11-20T03:22:12.526.rsa"
        self.signing_key, jwk = new_rsa_key(self.signing_kid)
        # The live JWKS's other (EC and older RSA) keys sit next to ours, like Cerner's.
        live = example("_observed-live/jwks-authorization-cerner.json")["keys"]
        self.jwks_keys = [*live, jwk]
        self.rsps.add_callback(
            responses.GET,
            f"{FHIR_BASE}/.well-known/smart-configuration",
            callback=lambda r: (
                200,
                {"Content-Type": "application/json"},
                json.dumps(self.smart_configuration()),
            ),
        )
        self.rsps.add_callback(
            responses.GET,
            f"{FHIR_BASE}/metadata",
            callback=lambda r: (
                200,
                {"Content-Type": "application/fhir+json"},
                json.dumps(self.capability_statement()),
            ),
        )
        self.rsps.add_callback(
            responses.GET,
            f"{OIDC_ISSUER}.well-known/openid-configuration",
            callback=lambda r: (
                200,
                {"Content-Type": "application/json"},
                json.dumps(self.openid_configuration()),
            ),
        )
        self.rsps.add_callback(responses.GET, JWKS_URI, callback=self._jwks)
        self.rsps.add_callback(responses.POST, TOKEN_URL, callback=self._token)
        # The documented (non-host) token URL, which the CapabilityStatement's oauth-uris name.
        self.rsps.add_callback(responses.POST, DOCS_TOKEN_URL, callback=self._token)
        self.rsps.add_callback(responses.POST, REVOKE_URL, callback=self._revoke)

    def _jwks(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.jwks_fetches += 1
        return 200, {"Content-Type": "application/json"}, json.dumps({"keys": self.jwks_keys})

    def rotate_signing_key(self) -> None:
        """A new signing key the cached JWKS does not know yet."""
        self.signing_kid = f"{time.time():.3f}.rsa"
        self.signing_key, jwk = new_rsa_key(self.signing_kid)
        self.jwks_keys = [*self.jwks_keys, jwk]

    # --- the user at the authorize endpoint ---------------------------------------------------
    def authorize(
        self,
        authorize_url: str,
        *,
        untick: tuple[str, ...] = (),
        deny: bool = False,
        patient: str = FHIR_PATIENT,
    ) -> dict[str, str]:
        """What the browser brings back to the redirect URI (query parameters)."""
        query = dict(parse_qsl(urlsplit(authorize_url).query))
        assert query["aud"] == FHIR_BASE
        assert query["code_challenge_method"] == "S256"
        params: dict[str, str] = {"state": query["state"]}
        if self.authz_iss is not None:
            params["iss"] = self.authz_iss
        if deny:
            params.update({"error": "access_denied", "error_uri": f"{AUTH_ORIGIN}/errors/x"})
            return params
        scope = " ".join(s for s in query["scope"].split() if s not in untick)
        code = secrets.token_urlsafe(24)
        grant = Grant(
            code=code,
            challenge=query["code_challenge"],
            nonce=query.get("nonce", ""),
            scope=scope,
            redirect_uri=query["redirect_uri"],
            client_id=query["client_id"],
            patient=patient,
            refresh_token=base64.b64encode(
                json.dumps(
                    {
                        "id": str(uuid.uuid4()),
                        "secret": secrets.token_hex(16),
                        "ver": "1.1",
                        "type": "offline_access",
                        "profile": "smart-v1",
                        "persona": "patient",
                    }
                ).encode()
            ).decode(),
        )
        self.grants[code] = grant
        self.refresh_index[grant.refresh_token] = grant
        params["code"] = code
        return params

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            "sub": "nancysmart",
            "aud": grant.client_id,
            "iss": OIDC_ISSUER,
            "name": "SMART, NANCY",
            "exp": now + 600,
            "iat": now,
            "nonce": grant.nonce,
            "fhirUser": self.fhir_user or f"{FHIR_BASE}/Patient/{grant.patient}",
        }
        claims.update(self.id_token_overrides)
        key = self.id_token_key or self.signing_key
        return jwt.encode(
            claims, key, algorithm="RS256", headers={"kid": self.signing_kid, "typ": "JWT"}
        )

    def _access_token(self) -> str:
        # Opaque like Cerner's JWE (dir / A128CBC-HS256 / DEF).
        header = (
            base64.urlsafe_b64encode(
                json.dumps({"alg": "dir", "enc": "A128CBC-HS256", "zip": "DEF"}).encode()
            )
            .rstrip(b"=")
            .decode()
        )
        iv, tag = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        token = f"{header}..{iv}.{secrets.token_urlsafe(120)}.{tag}"
        self.issued_tokens.append(token)
        return token

    def _error(self, status: int, error: str) -> tuple[int, dict[str, str], str]:
        body = example("Auth/token-error-invalid-grant.json")
        body["error"] = error
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def _client_ok(self, request: Any, form: dict[str, str]) -> bool:
        self.token_requests.append(
            {"form": dict(form), "authorization": request.headers.get("Authorization")}
        )
        return True

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        form = {
            k: v[0]
            for k, v in parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            ).items()
        }
        self._client_ok(request, form)
        if self.token_delay:
            time.sleep(self.token_delay)
        if form.get("grant_type") == "authorization_code":
            grant = self.grants.pop(form.get("code", ""), None)
            if grant is None:
                return self._error(400, "invalid_grant")
            verifier = form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if challenge != grant.challenge or form.get("redirect_uri") != grant.redirect_uri:
                return self._error(400, "invalid_grant")
            body = example("Auth/token-response-with-id-token.json")
            body.update(
                {
                    "access_token": self._access_token(),
                    "scope": grant.scope,
                    "expires_in": 570,
                    "token_type": "Bearer",
                    "patient": grant.patient,
                    "id_token": self.id_token(grant),
                    "need_patient_banner": True,
                    "smart_style_url": "https://smart.cerner.com/styles/smart-v1.json",
                }
            )
            if self.send_refresh_token and "offline_access" in grant.scope.split():
                body["refresh_token"] = grant.refresh_token
                self.issued_tokens.append(grant.refresh_token)
            self.issued_tokens.append(body["id_token"])
            return (
                200,
                {"Content-Type": "application/json", "Cache-Control": "no-store"},
                json.dumps(body),
            )
        if form.get("grant_type") == "refresh_token":
            if self.refresh_status:
                return self.refresh_status, {"Content-Type": "text/html"}, "<html>busy</html>"
            grant = self.refresh_index.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked:
                return self._error(400, "invalid_grant")
            body = example("Auth/token-response-refresh.json")
            body.update({"access_token": self._access_token(), "scope": grant.scope})
            assert "refresh_token" not in body  # Cerner: no new refresh token on refresh
            return 200, {"Content-Type": "application/json"}, json.dumps(body)
        return self._error(400, "unsupported_grant_type")

    def _revoke(self, request: Any) -> tuple[int, dict[str, str], str]:
        form = {
            k: v[0]
            for k, v in parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            ).items()
        }
        self.revoked.append(form)
        grant = self.refresh_index.get(form.get("token", ""))
        if grant:
            grant.revoked = True
        return 200, {}, ""

    def revoke_grant_at_server(self) -> None:
        for grant in self.refresh_index.values():
            grant.revoked = True
