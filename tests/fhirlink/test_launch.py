"""SMART patient standalone launch against a Cerner-shaped fake (responses)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from django.utils import timezone

from fhirlink import vault
from fhirlink.models import Connection, ConnectionStatus, HealthSystem, LaunchAttempt
from fhirlink.services.tokens import token_open
from patientportal.accesslog.models import AccessEvent
from tests.fhirlink import fake_cerner
from tests.fhirlink.conftest import HS_REDIRECT_URI, REDIRECT_URI, RETURN_URI, connection_of
from tests.fhirlink.fake_cerner import new_rsa_key
from tests.fixtures.launch import LaunchRun, launch_begin, launch_open

pytestmark = pytest.mark.django_db

CALLBACK = urlsplit(HS_REDIRECT_URI).path  # /fhirlink/callback/test-health
# The configured types the server has, then the types the sync reads by reference.
REQUESTED_RESOURCES = [
    "Patient",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "Communication",
    "Practitioner",
    "Organization",
    "Location",
]


def test_start_returns_a_start_url_that_leads_to_the_authorize_url(
    consenting_patient, api_client_for, client, ehr, health_system, settings
):
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "connection",
        "launch",
        "start_url",
        "expires_at",
        "requested_resources",
    }
    assert body["connection"]["status"] == "pending"
    assert response["Cache-Control"] == "no-store"
    # A first-party, single-use start URL; nothing about the EHR yet.
    prefix = f"{settings.PUBLIC_BASE_URL}/fhirlink/launch/"
    assert body["start_url"].startswith(prefix)
    token = body["start_url"][len(prefix) :]
    assert len(token) >= 43  # 256 bits, base64url
    attempt = LaunchAttempt.objects.get()
    assert str(attempt.pk) == body["launch"]
    assert attempt.start_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(LaunchAttempt.objects.values().get())
    assert attempt.state_hash is None
    assert attempt.started_at is None
    assert attempt.expires_at - attempt.created_at <= timedelta(minutes=5, seconds=1)
    assert attempt.redirect_uri == HS_REDIRECT_URI
    assert body["requested_resources"] == REQUESTED_RESOURCES

    opened = launch_open(client, body["start_url"], consenting_patient)
    assert opened.status_code == 302
    assert opened["Referrer-Policy"] == "no-referrer"
    cookie = opened.cookies[f"fhirlink_launch_{attempt.pk.hex}"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/fhirlink/"
    assert cookie["max-age"] == 600
    url = urlsplit(opened["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        f"{fake_cerner.AUTH_ORIGIN}/tenants/{fake_cerner.TENANT}/protocols/oauth2/profiles/"
        "smart-v1/personas/patient/authorize"
    )
    query = dict(parse_qsl(url.query))
    assert query["response_type"] == "code"
    assert query["client_id"] == fake_cerner.CLIENT_ID
    assert query["redirect_uri"] == HS_REDIRECT_URI
    assert query["aud"] == fake_cerner.FHIR_BASE
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43  # 256 bits, base64url
    assert len(query["nonce"]) >= 43
    # configured ∩ the CapabilityStatement, v2 syntax as the server lists it (Observation only
    # has .s; Practitioner, Organization, Location, read by reference, only as user/ scopes).
    assert query["scope"].split() == [
        "launch/patient",
        "openid",
        "fhirUser",
        "offline_access",
        "patient/Patient.rs",
        "patient/Observation.s",
        "patient/Condition.rs",
        "patient/AllergyIntolerance.rs",
        "patient/Communication.rs",
        "user/Practitioner.rs",
        "user/Organization.rs",
        "user/Location.rs",
    ]
    attempt.refresh_from_db()
    # Only a hash of state, nonce and the browser binding is stored; the verifier is sealed.
    assert attempt.state_hash == hashlib.sha256(query["state"].encode()).hexdigest()
    assert attempt.binding_hash == hashlib.sha256(cookie.value.split(":")[0].encode()).hexdigest()
    row = str(LaunchAttempt.objects.values().get())
    assert query["state"] not in row
    assert query["nonce"] not in row
    assert attempt.started_at is not None
    assert attempt.expires_at - attempt.started_at <= timedelta(minutes=10, seconds=1)
    assert attempt.issuer == fake_cerner.AS_ISSUER


def test_start_requires_ehr_sync_consent(patient, api_client_for, ehr, health_system):
    api = api_client_for(patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 403
    assert response.json()["code"] == "consent_required"
    assert Connection.objects.count() == 0
    assert LaunchAttempt.objects.count() == 0


def test_start_requires_connections_scope(consenting_patient, api_client_for, health_system):
    api = api_client_for(consenting_patient, scope="records:read")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert Connection.objects.count() == 0


def test_start_refuses_unregistered_return_uri(
    consenting_patient, api_client_for, ehr, health_system
):
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post(
        "/api/v1/connections",
        {"health_system": str(health_system.pk), "return_uri": "https://evil.example/steal"},
    )
    assert response.status_code == 400
    assert LaunchAttempt.objects.count() == 0


def test_full_launch(consenting_patient, connect, ehr):
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "connected"
    assert set(run["result"]) == {"connection", "outcome"}
    connection = connection_of(run)
    assert str(connection.pk) == run["start"]["connection"]["id"]
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.fhir_patient_id == fake_cerner.FHIR_PATIENT
    assert connection.fhir_user == f"{fake_cerner.FHIR_BASE}/Patient/{fake_cerner.FHIR_PATIENT}"
    assert connection.oidc_issuer == fake_cerner.OIDC_ISSUER
    assert connection.granted_resources == REQUESTED_RESOURCES
    assert connection.declined_resources == []
    assert connection.token_key_id == vault.active_key_id()
    access, refresh = (
        token_open(connection, "access_token"),
        token_open(connection, "refresh_token"),
    )
    assert access in ehr.issued_tokens
    assert refresh in ehr.issued_tokens
    assert connection.access_token_expires_at is not None
    assert 560 <= (connection.access_token_expires_at - timezone.now()).total_seconds() <= 570
    # PKCE verifier and client id sent; public client: no Authorization header.
    exchange = ehr.token_requests[0]
    assert exchange["form"]["grant_type"] == "authorization_code"
    assert exchange["form"]["client_id"] == fake_cerner.CLIENT_ID
    assert exchange["authorization"] is None
    assert LaunchAttempt.objects.get().outcome == "connected"
    # API shows it, without tokens.
    detail = run["api"].get(f"/api/v1/connections/{connection.pk}")
    assert detail.status_code == 200
    assert detail.json()["status"] == "active"
    assert detail.json()["offline_access"] is True
    assert detail.json()["granted_resources"] == connection.granted_resources
    assert AccessEvent.objects.filter(action="connect", outcome="success").count() >= 2


def test_patient_unticks_scopes(consenting_patient, connect):
    run = connect(consenting_patient, untick=("patient/Observation.s", "patient/Condition.rs"))
    assert run["result"]["outcome"] == "connected_partial"
    connection = connection_of(run)
    assert connection.granted_resources == [
        "Patient",
        "AllergyIntolerance",
        "Communication",
        "Practitioner",
        "Organization",
        "Location",
    ]
    assert connection.declined_resources == ["Observation", "Condition"]
    assert "patient/Observation.s" not in connection.granted_scopes.split()
    body = run["api"].get(f"/api/v1/connections/{connection.pk}").json()
    assert body["declined_resources"] == ["Observation", "Condition"]


def test_access_denied_is_recorded(consenting_patient, connect, ehr):
    run = connect(consenting_patient, deny=True)
    assert run["result"] == {
        "connection": run["start"]["connection"]["id"],
        "outcome": "access_denied",
    }
    connection = connection_of(run)
    assert connection.status == ConnectionStatus.ERROR
    assert connection.last_outcome == "access_denied"
    assert not connection.has_tokens
    assert ehr.token_requests == []


def _start(api_client_for, client, patient, health_system) -> LaunchRun:
    """The app's start, opened in `client` signed in as `patient`."""
    return launch_begin(
        api_client_for(patient, scope="connections"), client, patient, health_system
    )


def test_state_replayed(consenting_patient, api_client_for, client, ehr, health_system):
    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    first = client.get(CALLBACK, params)
    assert dict(parse_qsl(urlsplit(first["Location"]).query))["outcome"] == "connected"
    requests_before = len(ehr.token_requests)
    second = client.get(CALLBACK, params)
    assert second.status_code == 302
    assert second["Location"] == f"{RETURN_URI}?outcome=state_replayed"
    assert len(ehr.token_requests) == requests_before


def test_state_expired(consenting_patient, api_client_for, client, ehr, health_system):
    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    LaunchAttempt.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(CALLBACK, params)
    assert response["Location"] == f"{RETURN_URI}?outcome=state_expired"
    assert ehr.token_requests == []
    assert not Connection.objects.get().has_tokens


def test_state_missing_or_unknown(client, ehr, health_system, db):
    assert (
        client.get("/fhirlink/callback", {"code": "x"})["Location"]
        == f"{RETURN_URI}?outcome=invalid_state"
    )
    assert client.get("/fhirlink/callback", {"code": "x", "state": "nope"})["Location"] == (
        f"{RETURN_URI}?outcome=invalid_state"
    )
    assert client.get(CALLBACK, {"code": "x", "state": "nope"})["Location"] == (
        f"{RETURN_URI}?outcome=invalid_state"
    )
    assert ehr.token_requests == []


def test_start_cannot_target_another_patients_connection(
    consenting_patient, other_patient, api_client_for, client, ehr, health_system
):
    """Patient B cannot point a launch at patient A's connection (the attack tests of a launch
    finished by another browser or account are in tests/security/test_launch_attacks.py)."""
    a = _start(api_client_for, client, consenting_patient, health_system)
    api_b = api_client_for(other_patient, scope="connections")
    hijack = api_b.post(
        "/api/v1/connections",
        {"health_system": str(health_system.pk), "connection": a.start["connection"]["id"]},
    )
    assert hijack.status_code == 404
    assert LaunchAttempt.objects.filter(patient=other_patient).count() == 0


def test_pkce_verifier_mismatch(consenting_patient, api_client_for, client, ehr, health_system):
    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    # The server holds another challenge than the one our verifier answers.
    ehr.grants[params["code"]].challenge = "A" * 43
    response = client.get(CALLBACK, params)
    result = dict(parse_qsl(urlsplit(response["Location"]).query))
    assert result["outcome"] == "token_exchange_failed"
    connection = Connection.objects.get()
    assert connection.status == ConnectionStatus.ERROR
    assert not connection.has_tokens


@pytest.mark.parametrize(
    ("mutate", "outcome"),
    [
        ("bad_signature", "id_token_signature"),
        ("wrong_audience", "id_token_audience"),
        ("wrong_nonce", "id_token_nonce"),
        ("expired", "id_token_expired"),
        ("other_issuer", "id_token_issuer"),
        ("not_a_reference", "fhir_user_mismatch"),
        ("practitioner", "fhir_user_not_patient"),
    ],
)
def test_id_token_refused(mutate, outcome, consenting_patient, connect, ehr):
    now = int(timezone.now().timestamp())
    if mutate == "bad_signature":
        ehr.id_token_key = new_rsa_key("x")[0]
    elif mutate == "wrong_audience":
        ehr.id_token_overrides = {"aud": "someone-else"}
    elif mutate == "wrong_nonce":
        ehr.id_token_overrides = {"nonce": "not-the-nonce"}
    elif mutate == "expired":
        ehr.id_token_overrides = {"exp": now - 3600, "iat": now - 4200}
    elif mutate == "other_issuer":
        ehr.id_token_overrides = {
            "iss": f"{fake_cerner.AUTH_ORIGIN}/tenants/other-tenant/oidc/idsps/other-tenant/"
        }
    elif mutate == "not_a_reference":
        # Another Patient is a proxy, linked as a managed record (tests/fhirlink/test_people.py).
        ehr.fhir_user = "not-a-reference"
    elif mutate == "practitioner":
        ehr.fhir_user = f"{fake_cerner.FHIR_BASE}/Practitioner/12742069"
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == outcome
    connection = connection_of(run)
    assert connection.status == ConnectionStatus.ERROR
    assert not connection.has_tokens
    assert connection.fhir_patient_id == ""


def test_signing_key_rotated_refetches_jwks_once(consenting_patient, connect, ehr, other_patient):
    first = connect(consenting_patient)
    assert first["result"]["outcome"] == "connected"
    assert ehr.jwks_fetches == 1
    ehr.rotate_signing_key()
    second = connect(other_patient)
    assert second["result"]["outcome"] == "connected"
    assert ehr.jwks_fetches == 2  # unknown kid: refetched once, then verified


def test_unknown_kid_after_refetch_is_refused(consenting_patient, connect, ehr):
    ehr.signing_kid = "never-published.rsa"
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "id_token_signature"
    assert ehr.jwks_fetches == 2


def test_iss_mismatch(consenting_patient, connect, ehr):
    """RFC 9207: a response naming another tenant's issuer is a mix-up; nothing is exchanged."""
    ehr.authz_iss = f"{fake_cerner.AUTH_ORIGIN}/tenants/another-tenant"
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "iss_mismatch"
    assert ehr.token_requests == []
    assert not connection_of(run).has_tokens


def test_iss_absent_is_accepted_when_not_advertised(consenting_patient, connect, ehr):
    ehr.authz_iss = None
    assert connect(consenting_patient)["result"]["outcome"] == "connected"


def test_reconnect_reuses_connection(consenting_patient, connect, ehr):
    first = connect(consenting_patient)
    connection = connection_of(first)
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_REAUTH)
    second = connect(consenting_patient)
    assert second["result"] == {"connection": str(connection.pk), "outcome": "connected"}
    assert Connection.objects.count() == 1
    assert Connection.objects.get().status == ConnectionStatus.ACTIVE


def test_second_pending_connection_merges_into_existing(
    consenting_patient, connect, ehr, health_system
):
    first = connect(consenting_patient)
    # Another connection row for the same health system (e.g. a second FHIR patient) ...
    Connection.objects.create(
        patient=consenting_patient, health_system=health_system, fhir_patient_id="555"
    )
    # ... so a new start creates a pending row, which merges into the first on callback.
    second = connect(consenting_patient)
    assert second["result"]["connection"] == first["result"]["connection"]
    assert Connection.objects.filter(patient=consenting_patient).count() == 2


def test_many_connections_per_patient(consenting_patient, connect, ehr):
    first = connect(consenting_patient)
    second = connect(consenting_patient, patient="4342008")
    assert first["result"]["connection"] != second["result"]["connection"]
    listing = first["api"].get("/api/v1/connections").json()
    assert {c["id"] for c in listing["results"]} == {
        first["result"]["connection"],
        second["result"]["connection"],
    }


def test_consent_revoked_before_callback(
    consenting_patient, api_client_for, client, ehr, health_system
):
    from patientportal.consent.models import PatientConsent

    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    PatientConsent.objects.filter(patient=consenting_patient).update(status="revoked")
    response = client.get(CALLBACK, params)
    assert dict(parse_qsl(urlsplit(response["Location"]).query))["outcome"] == "consent_required"
    assert ehr.token_requests == []


def test_other_patient_cannot_read_connection(
    consenting_patient, other_patient, connect, api_client_for
):
    run = connect(consenting_patient)
    api_b = api_client_for(other_patient, scope="connections")
    assert api_b.get(f"/api/v1/connections/{run['result']['connection']}").status_code == 404
    assert api_b.get("/api/v1/connections").json()["results"] == []
    assert api_b.delete(f"/api/v1/connections/{run['result']['connection']}").status_code == 404
    assert connection_of(run).status == ConnectionStatus.ACTIVE


def test_id_token_claims_sample_shape(ehr):
    """The fake's id_token carries the claims Cerner documents (Auth/id-token-claims.json)."""
    documented = set(fake_cerner.example("Auth/id-token-claims.json"))
    grant = fake_cerner.Grant("c", "x", "n", "openid", "r", fake_cerner.CLIENT_ID, "1", "rt")
    claims = jwt.decode(ehr.id_token(grant), options={"verify_signature": False})
    assert documented <= set(claims)


def test_non_bearer_token_is_refused(consenting_patient, connect, ehr, monkeypatch):
    original = ehr._token

    def mac_token(request):
        status, headers, body = original(request)
        data = json.loads(body)
        data["token_type"] = "mac"
        return status, headers, json.dumps(data)

    monkeypatch.setattr(ehr, "_token", mac_token)
    ehr.rsps.replace("POST", fake_cerner.TOKEN_URL, body="")
    ehr.rsps.remove("POST", fake_cerner.TOKEN_URL)
    ehr.rsps.add_callback("POST", fake_cerner.TOKEN_URL, callback=mac_token)
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "token_exchange_failed"
    assert not connection_of(run).has_tokens


def test_callback_survives_odd_input(
    consenting_patient, api_client_for, client, ehr, health_system
):
    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    params["iss"] = "https://authorization.example.test/tenants/é"
    response = client.get(CALLBACK, params)
    assert response.status_code == 302
    assert dict(parse_qsl(urlsplit(response["Location"]).query))["outcome"] == "iss_mismatch"


def test_server_no_longer_r4_at_callback(
    consenting_patient, api_client_for, client, ehr, health_system
):
    start = _start(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(start.authorize_url)
    HealthSystem.objects.filter(pk=health_system.pk).update(discovery_expires_at=timezone.now())
    capability = ehr.capability_statement()
    capability["fhirVersion"] = "5.0.0"
    ehr.capability_statement = lambda: capability
    response = client.get(CALLBACK, params)
    assert dict(parse_qsl(urlsplit(response["Location"]).query))["outcome"] == "ehr_misconfigured"
    assert ehr.token_requests == []


@pytest.mark.parametrize(
    ("iss", "outcome"),
    [
        (fake_cerner.AS_ISSUER, "connected"),
        (f"{fake_cerner.AUTH_ORIGIN}/tenants/another-tenant", "iss_mismatch"),
        (f"https://evil.example.test/tenants/{fake_cerner.TENANT}", "iss_mismatch"),
    ],
)
def test_launch_via_capability_statement_fallback(iss, outcome, consenting_patient, connect, ehr):
    """No smart-configuration: endpoints from the CapabilityStatement's oauth-uris, no issuer
    advertised; `iss` must still be this tenant at the authorization server's origin."""
    import responses as responses_lib

    ehr.rsps.replace(
        responses_lib.GET, f"{fake_cerner.FHIR_BASE}/.well-known/smart-configuration", status=404
    )
    ehr.authz_iss = iss
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == outcome


def test_every_resource_unticked(consenting_patient, connect, ehr):
    run = connect(
        consenting_patient,
        untick=(
            "patient/Patient.rs",
            "patient/Observation.s",
            "patient/Condition.rs",
            "patient/AllergyIntolerance.rs",
            "patient/Communication.rs",
            "user/Practitioner.rs",
            "user/Organization.rs",
            "user/Location.rs",
        ),
    )
    assert run["result"]["outcome"] == "no_resources_granted"
    connection = connection_of(run)
    assert connection.granted_resources == []
    assert connection.declined_resources == [
        "Patient",
        "Observation",
        "Condition",
        "AllergyIntolerance",
    ]


def test_no_refresh_token_granted(consenting_patient, connect, ehr):
    run = connect(consenting_patient, untick=("offline_access",))
    assert run["result"]["outcome"] == "connected"
    connection = connection_of(run)
    assert connection.refresh_token_blob is None
    body = run["api"].get(f"/api/v1/connections/{connection.pk}").json()
    assert body["offline_access"] is False
    # When the access token runs out there is nothing to refresh with: reconnect.
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    from fhirlink.exceptions import ReauthRequired
    from fhirlink.services.tokens import connection_access_token

    with pytest.raises(ReauthRequired):
        connection_access_token(connection_id=connection.pk)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert connection.last_outcome == "no_refresh_token"


def test_health_system_list_and_disabled(consenting_patient, api_client_for, ehr, health_system):
    api = api_client_for(consenting_patient, scope="connections")
    listed = api.get("/api/v1/health-systems")
    assert listed.status_code == 200
    assert listed.json() == {
        "next": None,
        "previous": None,
        "results": [
            {
                "id": str(health_system.pk),
                "name": "Test Health",
                "city": "",
                "state": "",
                "postal_code": "",
                "logo_url": None,
                "available": True,
                "availability": "available",
                "directory": "registered",
            }
        ],
    }
    HealthSystem.objects.filter(pk=health_system.pk).update(enabled=False)
    assert api.get("/api/v1/health-systems").json() == {
        "next": None,
        "previous": None,
        "results": [],
    }
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 404
    assert response.json()["code"] == "health_system_not_found"
    assert Connection.objects.count() == 0


def test_redirect_uri_to_register_is_shown_to_operators(admin_client, ehr, health_system):
    """healthsystem_check and the admin show the health system's own redirect URI, and warn
    while a registration still names the shared (legacy) callback."""
    import json as json_lib
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("healthsystem_check", "test-health", "--json", stdout=out)
    report = json_lib.loads(out.getvalue())
    assert report["redirect_uri"] == HS_REDIRECT_URI
    assert report["redirect_uri_to_register"] == HS_REDIRECT_URI
    assert not [w for w in report["warnings"] if "redirect URI" in w]
    page = admin_client.get(f"/admin/fhirlink/healthsystem/{health_system.pk}/change/")
    assert page.status_code == 200
    assert HS_REDIRECT_URI in page.content.decode()

    HealthSystem.objects.filter(pk=health_system.pk).update(redirect_uri=REDIRECT_URI)
    out = StringIO()
    call_command("healthsystem_check", "test-health", "--json", stdout=out)
    report = json_lib.loads(out.getvalue())
    assert report["redirect_uri"] == REDIRECT_URI
    assert report["redirect_uri_to_register"] == HS_REDIRECT_URI
    assert [w for w in report["warnings"] if "redirect URI" in w] == [
        f"the registration uses the redirect URI {REDIRECT_URI}; register {HS_REDIRECT_URI} at "
        "the EHR and set it here (a shared redirect URI needs `iss` in every authorization "
        "response)"
    ]
