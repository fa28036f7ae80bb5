"""The authorization server: launch, PKCE, aud, scopes, clients, code exchange."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from fhirlink.sandbox.conf import DEMO_TENANT
from fhirlink.sandbox.forms_driver import AuthorizeFailed
from fhirlink.sandbox.models import SandboxAccessToken, SandboxGrant

from .conftest import CLIENT, REDIRECT, query_of

pytestmark = pytest.mark.integration


def test_standalone_patient_launch_returns_a_cerner_shaped_token(smart, sandbox):
    launch = smart.launch(patient="nancy")
    token = launch.token

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 570
    assert token["patient"] == sandbox.patients["nancy"].fhir_id
    assert token["need_patient_banner"] is True
    assert token["smart_style_url"] == "https://smart.cerner.com/styles/smart-v1.json"
    assert token["tenant"] == DEMO_TENANT
    assert "refresh_token" in token
    assert token["access_token"].count(".") == 4  # opaque, JWE-shaped
    with pytest.raises(jwt.DecodeError):
        jwt.decode(token["access_token"], options={"verify_signature": False})
    assert " ".join(token["scope"]) if isinstance(token["scope"], list) else token["scope"]
    assert (
        SandboxAccessToken.objects.filter(token_hash=token["access_token"]).count() == 0
    )  # stored hashed


def test_id_token_is_rs256_with_kid_and_verifies_against_the_jwks(smart, sandbox):
    launch = smart.launch(patient="nancy")
    id_token = launch.token["id_token"]
    header = jwt.get_unverified_header(id_token)
    jwks = jwt.PyJWKClient(f"{sandbox.origin}/jwk")

    claims = jwt.decode(
        id_token,
        jwks.get_signing_key_from_jwt(id_token).key,
        algorithms=["RS256"],
        audience=CLIENT,
        issuer=f"{sandbox.origin}/tenants/{DEMO_TENANT}/oidc/idsps/{DEMO_TENANT}/",
    )

    assert header["alg"] == "RS256"
    assert header["kid"].endswith(".rsa")
    assert claims["sub"] == sandbox.patients["nancy"].username
    assert claims["fhirUser"] == f"{sandbox.fhir_base}/Patient/{sandbox.patients['nancy'].fhir_id}"
    assert claims["nonce"] == launch.nonce
    assert claims["exp"] - claims["iat"] == 570


def test_state_is_echoed_and_the_code_is_single_use(smart, sandbox):
    oauth, location, state = smart.code_location()
    assert query_of(location)["state"] == state
    code = query_of(location)["code"]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT,
        "code_verifier": oauth._code_verifier,
    }

    first = smart.token_post(body)
    second = smart.token_post(body)

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert "code-invalid-or-expired" in second.json()["error_uri"]
    assert second.json()["error_uri"].startswith(f"{sandbox.origin}/errors/urn%3Acerner%3Aerror%3A")
    # A replayed code revokes what it produced.
    assert (
        requests.get(
            f"{sandbox.fhir_base}/Patient/{sandbox.patients['nancy'].fhir_id}",
            headers={"Authorization": f"Bearer {first.json()['access_token']}"},
            timeout=10,
        ).status_code
        == 401
    )


def test_wrong_pkce_verifier_is_invalid_grant(smart):
    _, location, _ = smart.code_location()

    response = smart.token_post(
        {
            "grant_type": "authorization_code",
            "code": query_of(location)["code"],
            "redirect_uri": REDIRECT,
            "client_id": CLIENT,
            "code_verifier": "x" * 50,
        }
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "pkce-verification-failed" in response.json()["error_uri"]


def test_redirect_uri_must_match_at_the_token_endpoint(smart):
    oauth, location, _ = smart.code_location()

    response = smart.token_post(
        {
            "grant_type": "authorization_code",
            "code": query_of(location)["code"],
            "redirect_uri": REDIRECT + "/other",
            "client_id": CLIENT,
            "code_verifier": oauth._code_verifier,
        }
    )

    assert response.json()["error"] == "invalid_grant"


def test_public_clients_must_send_pkce_unless_the_tenant_switch_says_otherwise(smart, sandbox):
    oauth = smart.session(pkce=False)
    url = smart.authorize_url(oauth, state="s1")

    location = sandbox.login("nancy", url)

    assert query_of(location)["error"] == "invalid_request"
    assert "pkce-required" in query_of(location)["error_uri"]
    assert query_of(location)["state"] == "s1"
    sandbox.set_switches(pkce_required_for_public=False)
    assert "code" in query_of(
        sandbox.login("nancy", smart.authorize_url(smart.session(pkce=False)))
    )


def test_plain_pkce_is_refused(smart, sandbox):
    url = smart.authorize_url(
        smart.session(pkce=False), code_challenge="abc", code_challenge_method="plain"
    )

    assert query_of(sandbox.login("nancy", url))["error"] == "invalid_request"


@pytest.mark.parametrize(
    "aud", [None, "https://fhir-myrecord.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d"]
)
def test_aud_is_required_and_must_be_the_fhir_base(smart, sandbox, aud):
    oauth = smart.session()
    params = {"aud": aud} if aud else {}
    url, _ = oauth.authorization_url(smart.config["authorization_endpoint"], state="s", **params)

    location = sandbox.login("nancy", url)

    assert query_of(location)["error"] == "invalid_request"
    assert "aud-invalid" in query_of(location)["error_uri"]
    assert SandboxGrant.objects.count() == 0


def test_unknown_client_and_unregistered_redirect_uri_show_an_error_page(smart, sandbox):
    bad_client = smart.authorize_url(smart.session(client_id="nobody"))
    with pytest.raises(AuthorizeFailed) as unknown:
        sandbox.login("nancy", bad_client)
    assert unknown.value.status == 400

    oauth = smart.session()
    oauth.redirect_uri = REDIRECT + "/evil"
    with pytest.raises(AuthorizeFailed) as mismatch:
        sandbox.login("nancy", smart.authorize_url(oauth))
    assert "redirect_uri" in mismatch.value.message


def test_launch_patient_scope_is_required(smart, sandbox):
    url = smart.authorize_url(smart.session(scopes=["openid", "fhirUser"]))

    location = sandbox.login("nancy", url)

    assert query_of(location)["error"] == "invalid_scope"


def test_v2_registration_silently_drops_v1_read_scopes(smart, sandbox):
    scopes = [
        "openid",
        "fhirUser",
        "launch/patient",
        "patient/Condition.read",
        "patient/Observation.read",
        "patient/Condition.rs",
    ]

    launch = smart.launch(scopes=scopes)

    assert launch.token["scope"] == ["openid", "fhirUser", "launch/patient", "patient/Condition.rs"]


def test_v1_registration_keeps_v1_scopes_and_drops_v2(smart, sandbox):
    sandbox.register_client("v1-app", REDIRECT, smart_version="v1")
    scopes = [
        "launch/patient",
        "patient/Observation.read",
        "patient/Condition.rs",
        "offline_access",
    ]

    launch = smart.launch(scopes=scopes, client_id="v1-app")

    assert launch.token["scope"] == ["launch/patient", "patient/Observation.read", "offline_access"]


def test_wildcards_and_observation_rs_are_not_granted(smart, sandbox):
    launch = smart.launch(
        scopes=["launch/patient", "patient/*.rs", "patient/Observation.rs", "patient/Observation.s"]
    )

    assert launch.token["scope"] == ["launch/patient", "patient/Observation.s"]
    sandbox.set_switches(wildcard_scopes="reject")
    url = smart.authorize_url(smart.session(scopes=["launch/patient", "patient/*.read"]))
    assert query_of(sandbox.login("nancy", url))["error"] == "invalid_scope"


def test_the_patient_can_untick_scopes(smart):
    launch = smart.launch(untick=("patient/Condition.rs", "offline_access"))

    granted = launch.token["scope"]
    assert "patient/Condition.rs" not in granted
    assert "offline_access" not in granted
    assert "patient/Observation.s" in granted
    assert "refresh_token" not in launch.token


def test_denying_returns_access_denied_with_state(smart, sandbox):
    oauth = smart.session()
    url = smart.authorize_url(oauth, state="deny-state")

    location = sandbox.authorize(url, "nancysandbox", "Sandbox-Nancy-2026", deny=True)

    assert query_of(location) == {"error": "access_denied", "state": "deny-state"}
    assert SandboxGrant.objects.count() == 0


def test_wrong_password_shows_the_login_page_again(smart, sandbox):
    with pytest.raises(AuthorizeFailed) as failed:
        sandbox.authorize(smart.authorize_url(smart.session()), "nancysandbox", "wrong")

    assert failed.value.message == "Wrong username or password."


def test_offline_access_needs_an_offline_registration(smart, sandbox):
    sandbox.register_client("online-app", REDIRECT, access="online")
    sandbox.register_client("no-refresh-app", REDIRECT, access="none")
    scopes = ["launch/patient", "offline_access", "online_access", "patient/Patient.rs"]

    online = smart.launch(scopes=scopes, client_id="online-app")
    none = smart.launch(scopes=scopes, client_id="no-refresh-app")

    assert online.token["scope"] == ["launch/patient", "online_access", "patient/Patient.rs"]
    assert "refresh_token" in online.token
    assert none.token["scope"] == ["launch/patient", "patient/Patient.rs"]
    assert "refresh_token" not in none.token


def test_the_provider_persona_refuses_a_patient_app(smart, sandbox):
    url = smart.authorize_url(smart.session(), state="p").replace(
        "/personas/patient/", "/personas/provider/"
    )

    location = sandbox.login("nancy", url)

    assert query_of(location)["error"] == "unauthorized_client"
    assert "client-persona-mismatch" in query_of(location)["error_uri"]


def test_confidential_client_secret_basic(smart, sandbox):
    sandbox.register_client("conf-app", REDIRECT, confidential=True, secret="s3cret-value")
    oauth, location, _ = smart.code_location(client_id="conf-app")
    body = {
        "grant_type": "authorization_code",
        "code": query_of(location)["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": oauth._code_verifier,
    }

    wrong = smart.token_post(body, auth=("conf-app", "nope"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    right = smart.token_post(body, auth=("conf-app", "s3cret-value"))
    assert right.status_code == 200
    assert right.json()["patient"] == sandbox.patients["nancy"].fhir_id


def test_confidential_client_private_key_jwt_es384(smart, sandbox):
    key = ec.generate_private_key(ec.SECP384R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    sandbox.register_client(
        "jwt-app",
        REDIRECT,
        confidential=True,
        jwks={"keys": [{**public, "kid": "k1", "alg": "ES384"}]},
    )
    oauth, location, _ = smart.code_location(client_id="jwt-app")
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": "jwt-app",
            "sub": "jwt-app",
            "aud": smart.config["token_endpoint"],
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="ES384",
        headers={"kid": "k1"},
    )
    body = {
        "grant_type": "authorization_code",
        "code": query_of(location)["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": oauth._code_verifier,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }

    response = smart.token_post(body)

    assert response.status_code == 200, response.text
    _, again, _ = smart.code_location(client_id="jwt-app")
    replayed = smart.token_post({**body, "code": query_of(again)["code"]})
    assert replayed.status_code == 401
    assert "client-assertion-replayed" in replayed.json()["error_uri"]
    forged = jwt.encode(
        {
            "iss": "jwt-app",
            "sub": "jwt-app",
            "aud": smart.config["token_endpoint"],
            "exp": now + 300,
            "jti": "x",
        },
        ec.generate_private_key(ec.SECP384R1()),
        algorithm="ES384",
        headers={"kid": "k1"},
    )
    assert (
        smart.token_post({**body, "client_assertion": forged}).json()["error"] == "invalid_client"
    )


def test_the_login_page_is_bound_to_the_browser_that_started_it(smart, sandbox):
    url = smart.authorize_url(smart.session())
    first = requests.get(url, timeout=10)
    request_id = first.text.split('name="request_id" value="')[1].split('"')[0]

    stolen = requests.post(
        f"{sandbox.origin}/tenants/{DEMO_TENANT}/sandbox/login",
        data={
            "request_id": request_id,
            "username": "nancysandbox",
            "password": "Sandbox-Nancy-2026",
        },
        timeout=10,
    )

    assert stolen.status_code == 400
    assert "expired" in stolen.text
