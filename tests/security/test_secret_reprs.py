"""No token or secret in any repr (issue #19 item 5).

OWASP ASVS 5.0 V16.2 / V16.3 (logging: no credentials or session tokens in logs) and V13.3
(secrets management): an error reporter that records locals, a `logger.exception`, a debugger
or a test failure renders objects with repr() or str(). Each object below holds a bearer
token, a refresh token, an id_token, a PKCE verifier, a start or binding secret, a client
secret, a key or a sealed value; each test renders it both ways and asserts the secret is not
there. Before this suite `FhirClient` printed its token, a token response was a plain dict,
and `EhrResponse` printed its body (the token JSON): those three fail on the old code.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.utils import timezone

from fhirlink import http, vault
from fhirlink.ehr.fhir import FhirClient
from fhirlink.exceptions import LaunchRefused
from fhirlink.models import Connection, HealthSystem, LaunchAttempt
from fhirlink.services import oauth_client
from fhirlink.services.launch import BrowserStart, LaunchStart
from fhirlink.services.registry import health_system_register
from fhirlink.services.tokens import tokens_seal
from tests.factories import PatientFactory

ACCESS = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0..access-SECRET-token-0001"
REFRESH = "eyJpZCI6InJlZnJlc2gtU0VDUkVULTAwMDEiLCJzZWNyZXQiOiJ4In0"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJuYW5jeSJ9.id-token-SIGNATURE-0001"
VERIFIER = "pkce-verifier-SECRET-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKL"
CLIENT_SECRET = "client-secret-SECRET-0001"
TOKEN_URL = "https://authorization.example.test/tenants/t1/token"


def _rendered(obj: Any) -> str:
    return f"{obj!r}\n{obj!s}"


def _assert_hidden(obj: Any, *secrets: str) -> None:
    text = _rendered(obj)
    for secret in secrets:
        assert secret not in text, f"{type(obj).__name__} shows a secret: {text[:200]}"


def test_fhir_client_repr_hides_its_bearer_token():
    """The FHIR client of a sync holds the connection's access token."""
    client = FhirClient(base_url="https://fhir.example.test/r4/t1", token=ACCESS)
    _assert_hidden(client, ACCESS)
    assert "fhir.example.test" in repr(client)  # still useful: the base URL is there


def _token_response() -> oauth_client.TokenResponse:
    hs = HealthSystem(
        slug="t",
        name="T",
        fhir_base_url="https://fhir.example.test/r4/t1",
        client_id="c",
        client_auth="public",
    )
    body = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "id_token": ID_TOKEN,
        "token_type": "Bearer",
        "expires_in": 570,
        "scope": "openid patient/Patient.rs",
        "patient": "12724066",
    }
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TOKEN_URL, json=body)
        return oauth_client.exchange_code(
            hs,
            token_endpoint=TOKEN_URL,
            code="code-SECRET",
            redirect_uri="https://portal.example.test/fhirlink/callback/t",
            code_verifier=VERIFIER,
        )


def test_token_response_repr_hides_every_token():
    """The token endpoint's answer (code exchange and refresh) holds all three tokens."""
    token = _token_response()
    _assert_hidden(token, ACCESS, REFRESH, ID_TOKEN)
    assert token["access_token"] == ACCESS  # still a mapping for its callers
    assert repr(token) == f"TokenResponse(fields={sorted(token)})"
    assert {"access_token", "refresh_token", "id_token"} <= set(token)
    # A traceback's locals, a dict or list holding it, render it through repr as well.
    _assert_hidden({"token": token}, ACCESS, REFRESH, ID_TOKEN)


def test_ehr_response_repr_hides_its_body():
    """The raw HTTP response of a token request (or a FHIR page: PHI) holds the body."""
    response = http.EhrResponse(
        status=200,
        headers={"Content-Type": "application/json"},
        content=json.dumps({"access_token": ACCESS, "refresh_token": REFRESH}).encode(),
        url=TOKEN_URL,
    )
    _assert_hidden(response, ACCESS, REFRESH)


def test_http_errors_carry_no_body():
    """An error from the token endpoint: `str()` is what the logs record."""
    error = http.EhrTerminal("token endpoint refused", oauth_error="invalid_grant", status=400)
    _assert_hidden(error, ACCESS, REFRESH, VERIFIER)
    _assert_hidden(LaunchRefused("id_token_signature"), ACCESS)
    unusable = oauth_client.UnusableToken(
        "token endpoint issued a non-Bearer token",
        token=oauth_client.TokenResponse(access_token=ACCESS, refresh_token=REFRESH),
    )
    _assert_hidden(unusable, ACCESS, REFRESH)


@pytest.mark.django_db
def test_sealed_values_and_key_providers_show_no_plaintext_or_key(settings):
    """The vault's sealed values, its key-encryption keys and a patient's payload cipher."""
    sealed = vault.seal(VERIFIER, aad="t")
    _assert_hidden(sealed, VERIFIER)
    raw_keys = [item.partition(":")[2] for item in settings.VAULT_KEYS.split(",") if ":" in item]
    provider = vault.SettingsKeyProvider()
    _assert_hidden(provider, *raw_keys)
    for b64 in raw_keys:
        assert repr(base64.b64decode(b64)) not in _rendered(provider)
    cipher = vault.patient_cipher(patient_id=PatientFactory.create().pk)
    _assert_hidden(cipher, *raw_keys)
    assert repr(cipher) == "PatientCipher()"


@pytest.mark.django_db
def test_index_keys_repr_names_ids_only():
    """The synced-record store's index (HMAC) keys."""
    if not hasattr(vault, "index_keys"):
        pytest.skip("no index keys in this tree")
    keys = vault.index_keys()
    text = _rendered(keys)
    for key in keys.keys.values():
        assert base64.b64encode(key).decode() not in text
        assert repr(key) not in text


@pytest.mark.django_db
def test_models_holding_sealed_secrets():
    """Connection (sealed tokens), LaunchAttempt (sealed PKCE verifier, hashed state, start
    and binding secrets) and HealthSystem (sealed client secret): repr and str are their ids."""
    hs, _ = health_system_register(
        slug="secret-health",
        name="Secret Health",
        fhir_base_url="https://fhir.example.test/r4/t1",
        client_id="c",
        client_auth="client_secret_basic",
        secret=CLIENT_SECRET,
    )
    patient = PatientFactory.create()
    connection = Connection.objects.create(patient=patient, health_system=hs)
    tokens_seal(
        connection, access_token=ACCESS, refresh_token=REFRESH, expires_in=570, now=timezone.now()
    )
    connection.save()
    attempt = LaunchAttempt(
        connection=connection,
        patient=patient,
        health_system=hs,
        aud=hs.fhir_base_url,
        token_endpoint=TOKEN_URL,
        requested_scopes="openid",
        return_uri="org.patientportal.app:/connections/result",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    sealed = vault.seal(VERIFIER, aad=f"fhirlink.launchattempt:{attempt.pk}:verifier")
    attempt.verifier_blob, attempt.verifier_key_id = sealed.blob, sealed.key_id
    attempt.save()
    for obj in (connection, attempt, hs):
        _assert_hidden(obj, ACCESS, REFRESH, VERIFIER, CLIENT_SECRET)
    _assert_hidden(Connection.objects.get(pk=connection.pk), ACCESS, REFRESH)
    _assert_hidden(list(Connection.objects.all()), ACCESS, REFRESH)


@pytest.mark.django_db
def test_launch_results_hide_start_url_authorize_url_and_binding():
    """What the launch service returns: the start URL carries the single-use start token; the
    browser start carries the authorize URL (state, nonce) and the binding cookie's secret."""
    hs = HealthSystem(slug="x", name="X", fhir_base_url="https://f.example.test", client_id="c")
    start = LaunchStart(
        connection=Connection(health_system=hs),
        attempt_id="a1",
        start_url="https://portal.example.test/fhirlink/launch/START-SECRET-0001",
        expires_at=timezone.now(),
        requested_resources=["Patient"],
    )
    _assert_hidden(start, "START-SECRET-0001")
    browser = BrowserStart(
        outcome="started",
        redirect_to="https://as.example.test/authorize?state=STATE-SECRET&nonce=NONCE-SECRET",
        attempt_id="a1",
        binding="BINDING-SECRET-0001",
    )
    _assert_hidden(browser, "STATE-SECRET", "NONCE-SECRET", "BINDING-SECRET-0001")


@pytest.mark.django_db
def test_the_apps_own_oauth_tokens():
    """This server's OAuth tokens for the app (django-oauth-toolkit): only their ids."""
    from oauth2_provider.models import AccessToken, Grant, RefreshToken

    from tests.factories import UserFactory

    user = UserFactory.create()
    access = AccessToken(user=user, token="app-access-SECRET", scope="records:read")
    refresh = RefreshToken(user=user, token="app-refresh-SECRET")
    grant = Grant(user=user, code="app-code-SECRET", redirect_uri="x:/y")
    for obj in (access, refresh, grant):
        _assert_hidden(obj, "app-access-SECRET", "app-refresh-SECRET", "app-code-SECRET")


def test_push_provider_clients_hide_their_keys():
    """The engagement push clients hold the APNs signing key."""
    from engagement.channels.push import ApnsClient

    client = ApnsClient(
        key_pem="-----BEGIN PRIVATE KEY-----APNS-SECRET", key_id="k", team_id="t", topic="x"
    )
    _assert_hidden(client, "APNS-SECRET")
