"""Attacks on the SMART launch (issue #19, items 1, 2 and 4; state replay, foreign state, code
reuse, PKCE downgrade, open redirect, scope escalation).

Each test plays one attack against the launch as the app and the patient's browser drive it
(tests/fixtures/launch.py) with a Cerner-shaped fake EHR (`responses`), or against the sandbox,
and asserts that nothing was linked, exchanged or left live. The requirement each checks is in
its docstring. Against the code before this suite (the callback found the launch by `state`
alone, one redirect URI for every health system, tokens of a failed launch dropped, granted
scopes recorded as granted), the account-linking, mix-up, revocation and scope tests fail on
the property itself; state replay, code reuse and open redirect held before and are kept here
as regression tests of the new flow.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import responses
from django.test import Client
from django.utils import timezone

from fhirlink.exceptions import LaunchRefused
from fhirlink.models import Connection, ConnectionStatus, HealthSystem, LaunchAttempt
from fhirlink.services import launch as launch_service
from fhirlink.services.discovery import discover
from fhirlink.services.registry import health_system_register
from fhirlink.services.tokens import token_open
from patientportal.accesslog.models import AccessEvent
from tests.fhirlink import fake_cerner
from tests.fhirlink.conftest import HS_REDIRECT_URI, REDIRECT_URI, RETURN_URI, grant_ehr_sync
from tests.fixtures.launch import (
    deep_link,
    launch_begin,
    launch_create,
    launch_open,
    launch_return,
)

pytestmark = pytest.mark.django_db

CALLBACK = urlsplit(HS_REDIRECT_URI).path
EVIL_AS = "https://as.evil.example.test"
EVIL_TOKEN_URL = f"{EVIL_AS}/token"


def _begin(api_client_for, browser, patient, health_system, **payload):
    return launch_begin(
        api_client_for(patient, scope="connections"), browser, patient, health_system, **payload
    )


def _nothing_linked(connection_id: str) -> None:
    connection = Connection.objects.get(pk=connection_id)
    assert connection.status == ConnectionStatus.ERROR
    assert connection.fhir_patient_id == ""
    assert not connection.has_tokens
    assert connection.granted_resources == []


# --- 1. Account-linking CSRF (RFC 9700 §4.7.1, RFC 6749 §10.12) ---------------------------------


@pytest.mark.parametrize("victim_signed_in", [True, False])
def test_account_linking_csrf_authorize_url_completed_in_another_browser(
    victim_signed_in, consenting_patient, other_patient, api_client_for, client, ehr, health_system
):
    """RFC 9700 §4.7.1 / RFC 6749 §10.12 (CSRF against the redirect URI), OWASP ASVS 5.0
    V10.2 (OAuth client): patient A's authorize URL, completed in patient B's browser (B signs
    in at the health system), must not link B's record to A's account. The callback requires
    the binding cookie of the browser that opened A's start URL; B's browser has none."""
    attacker = _begin(api_client_for, client, consenting_patient, health_system)
    victim = Client()
    if victim_signed_in:
        victim.force_login(other_patient.user)
    params = ehr.authorize(attacker.authorize_url, patient="4342008")  # B's record at the EHR
    result = launch_return(victim, attacker.redirect_uri, params)

    assert deep_link(result) == {"outcome": "state_foreign"}  # no connection id for B's app
    assert ehr.token_requests == []  # B's code was never exchanged
    _nothing_linked(attacker.start["connection"]["id"])
    assert LaunchAttempt.objects.get().outcome == "state_foreign"
    assert AccessEvent.objects.filter(action="connect", outcome="denied").count() == 1
    # A sees nothing of B's record through the API.
    body = attacker.api.get(f"/api/v1/connections/{attacker.start['connection']['id']}").json()
    assert body["status"] == "error"
    assert body["last_outcome"] == "state_foreign"
    assert body["granted_resources"] == []
    # The attacker's own browser cannot finish it afterwards either (single use).
    assert deep_link(launch_return(client, attacker.redirect_uri, params)) == {
        "outcome": "state_replayed"
    }
    assert ehr.token_requests == []


def test_account_linking_csrf_callback_in_the_right_browser_signed_in_as_another_account(
    consenting_patient, other_patient, api_client_for, client, ehr, health_system
):
    """RFC 9700 §4.7.1: the launch is bound to the account too. The browser that started it,
    signed in as another account by the time the EHR sends it back, links nothing."""
    run = _begin(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(run.authorize_url)
    client.force_login(other_patient.user)
    result = launch_return(client, run.redirect_uri, params)
    assert deep_link(result) == {"outcome": "state_foreign"}
    assert ehr.token_requests == []
    _nothing_linked(run.start["connection"]["id"])


def test_account_linking_csrf_start_url_opened_by_another_account(
    consenting_patient, other_patient, api_client_for, client, ehr, health_system
):
    """RFC 9700 §4.7.1, SMART App Launch 2.x (state binds the request to the user agent):
    patient A's start URL, opened in a browser signed in as patient B, starts nothing (no
    state, no authorize URL, no binding cookie), is consumed, and links nothing."""
    start = launch_create(api_client_for(consenting_patient, scope="connections"), health_system)
    victim = Client()
    response = launch_open(victim, start["start_url"], other_patient)
    assert response.status_code == 302
    assert response["Location"] == f"{RETURN_URI}?outcome=start_foreign"
    assert not [name for name in response.cookies if name.startswith("fhirlink_launch_")]
    attempt = LaunchAttempt.objects.get()
    assert attempt.started_at is not None
    assert attempt.state_hash is None
    assert attempt.binding_hash == ""
    assert attempt.outcome == "start_foreign"
    # A cannot use it any more either: single use.
    again = launch_open(client, start["start_url"], consenting_patient)
    assert again["Location"] == (
        f"{RETURN_URI}?connection={start['connection']['id']}&outcome=start_replayed"
    )
    assert ehr.token_requests == []
    _nothing_linked(start["connection"]["id"])


def test_start_url_signed_out_goes_to_sign_in_and_consumes_nothing(
    consenting_patient, api_client_for, ehr, health_system
):
    """OWASP ASVS 5.0 V10.2: the start URL never starts a launch for an unauthenticated
    browser: it sends it to this server's sign-in page (a relative `next`), unconsumed."""
    start = launch_create(api_client_for(consenting_patient, scope="connections"), health_system)
    path = urlsplit(start["start_url"]).path
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"
    attempt = LaunchAttempt.objects.get()
    assert attempt.started_at is None
    assert attempt.state_hash is None


def test_start_url_expired_or_unknown(
    consenting_patient, api_client_for, client, ehr, health_system
):
    """The start URL is short-lived (FHIRLINK_LAUNCH_START_TTL) and unguessable: an expired one
    starts nothing; an unknown one is a 404."""
    start = launch_create(api_client_for(consenting_patient, scope="connections"), health_system)
    LaunchAttempt.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = launch_open(client, start["start_url"], consenting_patient)
    assert response["Location"] == (
        f"{RETURN_URI}?connection={start['connection']['id']}&outcome=start_expired"
    )
    assert LaunchAttempt.objects.get().state_hash is None
    assert launch_open(client, start["start_url"][:-4] + "AAAA").status_code == 404


# --- State replay, foreign state, code reuse ----------------------------------------------------


def test_state_replay(consenting_patient, api_client_for, client, ehr, health_system):
    """RFC 9700 §4.7.1 / RFC 6749 §10.12 (state is single use): the same authorization
    response delivered twice is refused the second time, without a token request, and the
    connection made by the first stays as it was."""
    run = _begin(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(run.authorize_url)
    first = launch_return(client, run.redirect_uri, params)
    assert first["outcome"] == "connected"
    connection = Connection.objects.get()
    access = token_open(connection, "access_token")
    requests_before = len(ehr.token_requests)
    second = launch_return(client, run.redirect_uri, params)
    assert deep_link(second) == {"outcome": "state_replayed"}
    assert len(ehr.token_requests) == requests_before
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE
    assert token_open(connection, "access_token") == access


def test_foreign_state(
    consenting_patient, other_patient, api_client_for, client, ehr, health_system
):
    """RFC 9700 §4.7.1: a browser that started its own launch (it holds a binding cookie)
    cannot finish another one with that launch's `state`: the cookie must belong to the
    attempt the state names."""
    victim_browser = Client()
    mine = _begin(api_client_for, victim_browser, other_patient, health_system)
    theirs = _begin(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(theirs.authorize_url, patient="4342008")
    result = launch_return(victim_browser, mine.redirect_uri, params)
    assert deep_link(result) == {"outcome": "state_foreign"}
    assert ehr.token_requests == []
    _nothing_linked(theirs.start["connection"]["id"])
    # The victim's own launch is untouched and still completes.
    own = launch_return(victim_browser, mine.redirect_uri, ehr.authorize(mine.authorize_url))
    assert own["outcome"] == "connected"
    assert own["connection"] == mine.start["connection"]["id"]


def test_code_reuse(consenting_patient, api_client_for, client, ehr, health_system):
    """RFC 9700 §4.5 / §2.1.1 (PKCE binds the code to the request), RFC 6749 §4.1.2: a code
    issued for one launch and delivered with another launch's state is sent with the other
    launch's PKCE verifier, which the server refuses: nothing links. A code already redeemed
    and replayed is refused before any token request (state replay)."""
    first = _begin(api_client_for, client, consenting_patient, health_system)
    stolen = ehr.authorize(first.authorize_url)  # code for the first launch, never delivered
    second = _begin(api_client_for, client, consenting_patient, health_system)
    fresh = ehr.authorize(second.authorize_url)
    mixed = {**fresh, "code": stolen["code"]}
    result = launch_return(client, second.redirect_uri, mixed)
    assert result["outcome"] == "token_exchange_failed"
    assert len(ehr.token_requests) == 1
    sent = ehr.token_requests[0]["form"]
    assert sent["code"] == stolen["code"]
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(sent["code_verifier"].encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    assert challenge == dict(parse_qsl(urlsplit(second.authorize_url).query))["code_challenge"]
    assert challenge != dict(parse_qsl(urlsplit(first.authorize_url).query))["code_challenge"]
    assert not Connection.objects.get().has_tokens


# --- PKCE downgrade ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "started"),
    [(["plain"], False), ([], False), (["plain", "S256"], True), (None, True)],
)
def test_pkce_downgrade(
    methods, started, consenting_patient, api_client_for, client, ehr, health_system
):
    """SMART App Launch 2.x §PKCE (S256 required, `plain` never), RFC 9700 §2.1.1, OWASP ASVS
    5.0 V10.2: a server listing PKCE methods without S256 is refused before any launch (502
    ehr_misconfigured); otherwise the authorize request always carries an S256 challenge
    (never `plain`, never none) and the exchange its verifier."""
    original = ehr.smart_configuration

    def configuration() -> dict[str, Any]:
        doc = original()
        if methods is None:
            doc.pop("code_challenge_methods_supported", None)
        else:
            doc["code_challenge_methods_supported"] = methods
        return doc

    ehr.smart_configuration = configuration
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    if not started:
        assert response.status_code == 502
        assert response.json()["code"] == "ehr_misconfigured"
        assert LaunchAttempt.objects.count() == 0
        return
    assert response.status_code == 201
    opened = launch_open(client, response.json()["start_url"], consenting_patient)
    query = dict(parse_qsl(urlsplit(opened["Location"]).query))
    assert query["code_challenge_method"] == "S256"
    assert "plain" not in opened["Location"]
    result = launch_return(client, query["redirect_uri"], ehr.authorize(opened["Location"]))
    assert result["outcome"] == "connected"
    verifier = ehr.token_requests[0]["form"]["code_verifier"]
    assert verifier != query["code_challenge"]
    assert (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        == query["code_challenge"]
    )


# --- Open redirect -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "return_uri",
    [
        "https://evil.example/steal",
        f"{RETURN_URI}.evil.example",
        f"{RETURN_URI}/../../evil",
        f"{RETURN_URI}?next=https://evil.example",
        "//evil.example/connections/result",
    ],
)
def test_open_redirect_unregistered_return_uri(
    return_uri, consenting_patient, api_client_for, ehr, health_system
):
    """RFC 9700 §4.11 (open redirectors), OWASP ASVS 5.0 V10.2 / V3 (redirects only to an
    allow-list): a return URI that is not registered exactly is refused at the start (400);
    nothing is created."""
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post(
        "/api/v1/connections", {"health_system": str(health_system.pk), "return_uri": return_uri}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert LaunchAttempt.objects.count() == 0
    assert Connection.objects.count() == 0


def test_open_redirect_deep_link_only_to_a_registered_uri(
    consenting_patient, api_client_for, client, ehr, health_system, settings
):
    """RFC 9700 §4.11: the browser only ever leaves the callback (and the start URL) for a
    registered return URI, even if the one recorded at the start was deregistered since."""
    settings.FHIRLINK_APP_RETURN_URIS = [RETURN_URI, "https://app.example.test/done"]
    run = _begin(
        api_client_for,
        client,
        consenting_patient,
        health_system,
        return_uri="https://app.example.test/done",
    )
    params = ehr.authorize(run.authorize_url)
    settings.FHIRLINK_APP_RETURN_URIS = [RETURN_URI]
    result = launch_return(client, run.redirect_uri, params)
    assert result["location"].startswith(f"{RETURN_URI}?")
    assert result["outcome"] == "connected"


# --- Scope escalation ----------------------------------------------------------------------------


def test_scope_escalation_granted_beyond_requested(
    consenting_patient, api_client_for, client, ehr, health_system
):
    """SMART App Launch 2.x (scopes: the granted `scope` is authoritative, and an app uses only
    what it asked for), RFC 6749 §3.3, OWASP ASVS 5.0 V10.2 (least privilege): scopes granted
    beyond the request are neither recorded nor used: the connection keeps requested ∩
    granted (a narrowing of a requested scope counts), and the sync reads only those types."""
    run = _begin(api_client_for, client, consenting_patient, health_system)
    params = ehr.authorize(run.authorize_url)
    grant = ehr.grants[params["code"]]
    requested = grant.scope.split()
    extra = [
        "patient/Encounter.rs",
        "patient/*.rs",
        "user/Practitioner.rs",
        "system/Observation.rs",
        "patient/Observation.cruds",
        "patient/Condition.rs?category=problem-list-item",
    ]
    grant.scope = " ".join([*requested, *extra])
    result = launch_return(client, run.redirect_uri, params)
    assert result["outcome"] == "connected"
    connection = Connection.objects.get()
    assert connection.granted_scopes.split() == [
        *requested,
        "patient/Condition.rs?category=problem-list-item",
    ]
    assert connection.granted_resources == run.start["requested_resources"]
    assert "Encounter" not in connection.granted_resources


def test_granted_within_request_keeps_narrowings_only():
    """The rule behind the scope-escalation test, case by case."""
    requested = ["openid", "patient/Observation.rs", "patient/Patient.read"]
    granted = [
        "openid",
        "patient/Observation.s",  # narrower: kept
        "patient/Observation.rs?category=laboratory",  # narrower: kept
        "patient/Patient.rs",  # v2 form of the v1 read: kept
        "patient/Observation.rsd",  # broader: dropped
        "patient/*.rs",  # wildcard: dropped
        "user/Observation.rs",  # another context: dropped
        "launch",  # not asked: dropped
    ]
    assert launch_service.granted_within_request(granted=granted, requested=requested) == [
        "openid",
        "patient/Observation.s",
        "patient/Observation.rs?category=laboratory",
        "patient/Patient.rs",
    ]


# --- 2. Mix-up (RFC 9700 §4.4, RFC 9207) --------------------------------------------------------


@pytest.fixture
def evil_health_system(ehr, health_system) -> HealthSystem:
    """A second registered health system whose authorization server is the attacker's."""
    evil, _ = health_system_register(
        slug="evil-health",
        name="Evil Health",
        fhir_base_url="https://fhir.evil.example.test/r4/t2",
        tenant="t2",
        client_id="portal-at-evil",
        client_auth="public",
        scope_syntax="v2",
        resources=["Patient", "Observation"],
    )
    doc = {
        **discover(health_system),
        "issuer": f"{EVIL_AS}/t2",
        "authorization_endpoint": f"{EVIL_AS}/authorize",
        "token_endpoint": EVIL_TOKEN_URL,
        "revocation_endpoint": f"{EVIL_AS}/revoke",
    }
    HealthSystem.objects.filter(pk=evil.pk).update(
        discovery=doc, discovery_expires_at=timezone.now() + timedelta(hours=1)
    )
    ehr.evil_token_requests = []

    def evil_token(request: Any) -> tuple[int, dict[str, str], str]:
        ehr.evil_token_requests.append(dict(parse_qsl(request.body)))
        return 400, {"Content-Type": "application/json"}, json.dumps({"error": "invalid_grant"})

    ehr.rsps.add_callback(responses.POST, EVIL_TOKEN_URL, callback=evil_token)
    evil.refresh_from_db()
    return evil


def _honest_authorize_with(state: str, *, code_challenge: str) -> str:
    """The authorize request the attacker forwards the victim to at the honest server: our
    client id and the honest server's registered redirect URI, the attacker's state and PKCE."""
    return f"{fake_cerner.AUTH_ORIGIN}/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": fake_cerner.CLIENT_ID,
            "redirect_uri": HS_REDIRECT_URI,
            "scope": "launch/patient openid fhirUser patient/Observation.rs",
            "state": state,
            "aud": fake_cerner.FHIR_BASE,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
    )


@pytest.mark.parametrize("honest_sends_iss", [False, True])
def test_mix_up_code_from_another_authorization_server(
    honest_sends_iss,
    consenting_patient,
    api_client_for,
    client,
    ehr,
    health_system,
    evil_health_system,
):
    """RFC 9700 §4.4 (mix-up), RFC 9207, OWASP ASVS 5.0 V10.2: the patient starts a launch
    at the attacker's authorization server, which forwards the browser to the honest one with
    that launch's state. The honest server's code arrives at the honest server's own redirect
    URI: it is refused there (the launch named another one) and never sent to any token
    endpoint, with or without `iss`."""
    run = _begin(api_client_for, client, consenting_patient, evil_health_system)
    assert run.redirect_uri == f"{REDIRECT_URI}/evil-health"
    ehr.authz_iss = fake_cerner.AS_ISSUER if honest_sends_iss else None
    params = ehr.authorize(_honest_authorize_with(run.state, code_challenge="A" * 43))
    # The honest server sends the browser to ITS redirect URI.
    result = launch_return(client, HS_REDIRECT_URI, params)
    assert deep_link(result) == {
        "connection": run.start["connection"]["id"],
        "outcome": "redirect_uri_mismatch",
    }
    assert ehr.evil_token_requests == []  # the honest code never reached the attacker
    assert ehr.token_requests == []
    _nothing_linked(run.start["connection"]["id"])


def test_mix_up_iss_of_another_server(consenting_patient, connect, ehr):
    """RFC 9207 §2.4: an `iss` that is not the issuer the launch was sent to is refused before
    the exchange."""
    ehr.authz_iss = f"{fake_cerner.AUTH_ORIGIN}/tenants/another-tenant"
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "iss_mismatch"
    assert ehr.token_requests == []


def test_mix_up_iss_required_when_advertised(consenting_patient, connect, ehr):
    """RFC 9207 §2.4: when the server advertises
    `authorization_response_iss_parameter_supported`, a response without `iss` is refused."""
    original = ehr.smart_configuration
    ehr.smart_configuration = lambda: {
        **original(),
        "authorization_response_iss_parameter_supported": True,
    }
    ehr.authz_iss = None
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "iss_missing"
    assert ehr.token_requests == []


@pytest.mark.parametrize(
    ("other_fhir_base", "iss", "outcome"),
    [
        ("https://fhir.other.example.test/r4/t3", None, "iss_missing"),
        ("https://fhir.other.example.test/r4/t3", "ok", "connected"),
        # Another tenant of the same vendor's platform (same FHIR and authorization origins).
        ("https://fhir-myrecord.example.test/r4/t3", None, "connected"),
    ],
)
def test_mix_up_shared_legacy_redirect_uri_requires_iss(
    other_fhir_base,
    iss,
    outcome,
    consenting_patient,
    api_client_for,
    client,
    ehr,
    health_system,
):
    """RFC 9700 §4.4.2 (distinct redirect URIs, or `iss`): registrations made before
    per-health-system redirect URIs keep the shared /fhirlink/callback; while it is shared with
    a health system at another server, only `iss` tells them apart, so it is required. Tenants
    of one vendor's platform (same origins) are one operator and may share it."""
    HealthSystem.objects.filter(slug="test-health").update(redirect_uri=REDIRECT_URI)
    health_system_register(
        slug="other-legacy",
        name="Other (legacy)",
        fhir_base_url=other_fhir_base,
        client_id="portal-other",
        client_auth="public",
        redirect_uri=REDIRECT_URI,
    )
    run = _begin(api_client_for, client, consenting_patient, health_system)
    assert run.redirect_uri == REDIRECT_URI
    ehr.authz_iss = fake_cerner.AS_ISSUER if iss else None
    result = launch_return(client, REDIRECT_URI, ehr.authorize(run.authorize_url))
    assert result["outcome"] == outcome
    assert len(ehr.token_requests) == (1 if outcome == "connected" else 0)


def test_mix_up_code_only_to_the_issuing_servers_token_endpoint(
    consenting_patient, api_client_for, client, ehr, health_system, evil_health_system
):
    """RFC 9700 §4.4: a launch's code is sent to the token endpoint recorded for the server the
    launch was sent to, with the redirect URI the request named, and nowhere else."""
    run = _begin(api_client_for, client, consenting_patient, health_system)
    result = launch_return(client, run.redirect_uri, ehr.authorize(run.authorize_url))
    assert result["outcome"] == "connected"
    assert [r["form"]["redirect_uri"] for r in ehr.token_requests] == [HS_REDIRECT_URI]
    assert ehr.evil_token_requests == []
    assert LaunchAttempt.objects.get().token_endpoint == fake_cerner.TOKEN_URL


# --- 4. Tokens of a failed launch are revoked (RFC 7009) ----------------------------------------


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        ("id_token_signature", "id_token_signature"),
        ("patient_mismatch", "fhir_user_mismatch"),
        ("practitioner", "fhir_user_not_patient"),
        ("database", "internal_error"),
        ("non_bearer", "token_exchange_failed"),
    ],
)
def test_failed_launch_tokens_are_revoked(
    failure, outcome, consenting_patient, connect, ehr, monkeypatch
):
    """RFC 7009 §2, RFC 9700 §2.2 / §4.14 (limit token lifetime and privilege), OWASP ASVS
    5.0 V10.2: a launch refused after the code exchange (an id_token check, a patient
    mismatch, a failure while linking, a token we cannot use) revokes the refresh and the
    access token it obtained at the server's revocation endpoint; nothing is stored."""
    if failure == "id_token_signature":
        ehr.id_token_key = fake_cerner.new_rsa_key("x")[0]
    elif failure == "patient_mismatch":
        ehr.fhir_user = "not-a-reference"  # (another Patient is a proxy: test_people.py)
    elif failure == "practitioner":
        ehr.fhir_user = f"{fake_cerner.FHIR_BASE}/Practitioner/12742069"
    elif failure == "non_bearer":
        issue = ehr._token

        def mac_token(request: Any) -> tuple[int, dict[str, str], str]:
            status, headers, body = issue(request)
            return status, headers, json.dumps({**json.loads(body), "token_type": "mac"})

        ehr.rsps.remove(responses.POST, fake_cerner.TOKEN_URL)
        ehr.rsps.add_callback(responses.POST, fake_cerner.TOKEN_URL, callback=mac_token)
    else:

        def broken(*args: Any, **kwargs: Any) -> list[str]:
            raise RuntimeError("database went away")

        monkeypatch.setattr(launch_service, "tokens_seal", broken)
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == outcome
    grant = ehr.refresh_index[next(iter(ehr.refresh_index))]
    access = [t for t in ehr.issued_tokens if t.count(".") == 4]
    assert ehr.revoked == [
        {
            "token": grant.refresh_token,
            "token_type_hint": "refresh_token",
            "client_id": fake_cerner.CLIENT_ID,
        },
        {"token": access[0], "token_type_hint": "access_token", "client_id": fake_cerner.CLIENT_ID},
    ]
    assert grant.revoked is True
    connection = Connection.objects.get()
    assert not connection.has_tokens
    assert connection.fhir_patient_id == ""


def test_refused_before_the_exchange_revokes_nothing(consenting_patient, connect, ehr):
    """Nothing was obtained, so nothing is revoked (and no token request is made)."""
    ehr.authz_iss = f"{fake_cerner.AUTH_ORIGIN}/tenants/another-tenant"
    assert connect(consenting_patient)["result"]["outcome"] == "iss_mismatch"
    assert ehr.token_requests == []
    assert ehr.revoked == []


@pytest.mark.integration
def test_failed_launch_tokens_are_dead_at_the_sandbox(sandbox, api_client_for, client, monkeypatch):
    """RFC 7009 against the sandbox: the tokens a launch obtained before its id_token check
    failed no longer work there (the FHIR API answers 401, the refresh `invalid_grant`)."""
    from fhirlink import http
    from fhirlink.services import oauth_client
    from tests.factories import PatientFactory

    hs, _ = health_system_register(
        slug="sandbox-revoke",
        name="Sandbox (revocation)",
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id="portal-revoke",
        client_auth="public",
        scope_syntax="v2",
        resources=["Patient", "Observation"],
    )
    sandbox.register_client("portal-revoke", hs.redirect_uri)
    patient = PatientFactory.create()
    grant_ehr_sync(patient)
    obtained: list[dict[str, Any]] = []
    exchange = oauth_client.exchange_code

    def recording_exchange(*args: Any, **kwargs: Any) -> Any:
        token = exchange(*args, **kwargs)
        obtained.append(dict(token))
        return token

    def refused(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise LaunchRefused("id_token_signature")

    monkeypatch.setattr(oauth_client, "exchange_code", recording_exchange)
    monkeypatch.setattr(launch_service, "verify_id_token", refused)
    run = launch_begin(api_client_for(patient, scope="connections"), client, patient, hs)
    result = launch_return(client, sandbox.login("nancy", run.authorize_url))
    assert result["outcome"] == "id_token_signature"
    [token] = obtained
    assert token["access_token"]
    assert token["refresh_token"]
    with pytest.raises(http.EhrTerminal) as refreshed:
        oauth_client.refresh(
            hs, token_endpoint=sandbox.token_url, refresh_token=token["refresh_token"]
        )
    assert refreshed.value.oauth_error == "invalid_grant"
    with pytest.raises(http.EhrHttpError) as read:
        http.request(
            "GET",
            f"{sandbox.fhir_base}/Patient/{token['patient']}",
            headers={"Authorization": f"Bearer {token['access_token']}"},
            accept="application/fhir+json",
        )
    assert read.value.status == 401
    assert not Connection.objects.get(patient=patient).has_tokens
