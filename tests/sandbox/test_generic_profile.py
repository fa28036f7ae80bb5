"""The sandbox's second profile: a standards-only SMART App Launch 2.x server (issue #20).

Its own live server and URL layout, the issuer on another origin than the FHIR base,
wildcard-only ``scopes_supported`` (and a v1-only variant), RFC 9207 ``iss`` on every
authorization response, refresh-token rotation with reuse detection, scopes enforced on every
read in FHIR's OperationOutcome shape, a patient picker, and Observation categories at consent.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import jwt
import pytest
import requests

from fhirlink.sandbox.conf import GENERIC_TENANT, OBSERVATION_CATEGORY_SYSTEM
from fhirlink.sandbox.models import SandboxAccessToken, SandboxGrant

from .conftest import CLIENT, query_of

pytestmark = pytest.mark.integration

LAB = f"patient/Observation.rs?category={OBSERVATION_CATEGORY_SYSTEM}|laboratory"
BASE_SCOPES = ["openid", "fhirUser", "launch/patient", "offline_access"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_discovery_issuer_on_another_origin_wildcard_scopes_and_iss_advertised(generic_sandbox):
    port = urlsplit(generic_sandbox.origin).port
    base = generic_sandbox.fhir_base
    config = requests.get(f"{base}/.well-known/smart-configuration", timeout=10).json()

    assert base == f"http://127.0.0.1:{port}/fhir/{GENERIC_TENANT}"
    assert config["issuer"] == f"http://localhost:{port}/auth/realms/{GENERIC_TENANT}"
    assert _origin(config["issuer"]) != _origin(base)
    oidc = f"{config['issuer']}/protocol/openid-connect"
    assert config["authorization_endpoint"] == f"{oidc}/auth"
    assert config["token_endpoint"] == f"{oidc}/token"
    assert config["revocation_endpoint"] == f"{oidc}/revoke"
    assert config["jwks_uri"] == f"{oidc}/certs"
    assert config["scopes_supported"] == [
        "fhirUser",
        "launch",
        "launch/patient",
        "offline_access",
        "online_access",
        "openid",
        "profile",
        "patient/*.rs",
        "patient/*.read",
    ]
    assert config["authorization_response_iss_parameter_supported"] is True
    assert config["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert {"permission-v1", "permission-v2"} <= set(config["capabilities"])
    assert "management_endpoint" not in config

    # The OpenID configuration sits under the issuer, on the issuer's origin.
    openid = requests.get(f"{config['issuer']}/.well-known/openid-configuration", timeout=10)
    assert openid.status_code == 200
    assert openid.json()["issuer"] == config["issuer"]
    assert openid.json()["jwks_uri"] == config["jwks_uri"]
    keys = requests.get(config["jwks_uri"], timeout=10).json()["keys"]
    assert [k["alg"] for k in keys] == ["RS256"]

    # The CapabilityStatement's oauth-uris point at the other origin too.
    metadata = requests.get(f"{base}/metadata", timeout=10).json()
    uris = {
        e["url"]: e["valueUri"]
        for e in metadata["rest"][0]["security"]["extension"][0]["extension"]
    }
    assert uris["authorize"] == config["authorization_endpoint"]
    assert metadata["implementation"]["url"] == base
    assert {"Practitioner", "Organization", "Location", "Observation"} <= {
        r["type"] for r in metadata["rest"][0]["resource"]
    }


def test_v1_only_variant_advertises_and_grants_v1_scopes_only(generic_sandbox, generic_smart):
    generic_sandbox.set_switches(scope_syntax="v1")
    config = requests.get(generic_sandbox.smart_configuration_url, timeout=10).json()
    assert [s for s in config["scopes_supported"] if "/" in s and s != "launch/patient"] == [
        "patient/*.read"
    ]
    assert "permission-v2" not in config["capabilities"]
    assert "permission-v1" in config["capabilities"]

    generic_smart.config = config
    launch = generic_smart.launch(
        scopes=[*BASE_SCOPES, "patient/Condition.rs", "patient/Observation.read"]
    )
    assert launch.token["scope"] == [*BASE_SCOPES, "patient/Observation.read"]


def test_the_cerner_and_generic_servers_do_not_serve_each_others_tenants(sandbox, generic_sandbox):
    cerner_on_generic = f"{generic_sandbox.origin}/fhir/{sandbox.tenant}/metadata"
    generic_on_cerner = f"{sandbox.origin}/r4/{GENERIC_TENANT}/metadata"
    assert requests.get(cerner_on_generic, timeout=10).status_code == 403
    assert requests.get(generic_on_cerner, timeout=10).status_code == 403
    assert requests.get(generic_sandbox.fhir_base + "/metadata", timeout=10).status_code == 200


def test_launch_with_wildcard_scopes_carries_iss_and_a_standard_token(
    generic_smart, generic_sandbox
):
    launch = generic_smart.launch(scopes=[*BASE_SCOPES, "patient/*.rs"])
    params = query_of(launch.location)
    token = launch.token

    assert params["iss"] == generic_sandbox.issuer
    assert set(params) == {"code", "state", "iss"}
    assert token["scope"] == [*BASE_SCOPES, "patient/*.rs"]
    assert token["patient"] == generic_sandbox.patients["nancy"].fhir_id
    assert "refresh_token" in token
    assert "tenant" not in token
    assert "smart_style_url" not in token
    claims = jwt.decode(
        token["id_token"],
        jwt.PyJWKClient(generic_smart.config["jwks_uri"])
        .get_signing_key_from_jwt(token["id_token"])
        .key,
        algorithms=["RS256"],
        audience=CLIENT,
        issuer=generic_sandbox.issuer,
    )
    assert claims["fhirUser"] == f"{generic_sandbox.fhir_base}/Patient/12800101"
    assert claims["sub"] != "nancysandbox"  # an opaque subject, not the login name

    # The wildcard reads every type, references included.
    for path in ("Patient/12800101", "Condition?patient=12800101"):
        assert launch.get(f"{generic_sandbox.fhir_base}/{path}").status_code == 200


def test_iss_is_on_error_redirects_before_login(generic_smart, generic_sandbox):
    _oauth, location, state = generic_smart.code_location(
        scopes=[*BASE_SCOPES, "patient/*.rs"], aud="https://elsewhere.example/fhir"
    )
    assert query_of(location) == {
        "error": "invalid_request",
        "error_description": "aud must be the FHIR base URL",
        "state": state,
        "iss": generic_sandbox.issuer,
    }


def test_denial_redirect_carries_iss(generic_smart, generic_sandbox):
    oauth = generic_smart.session(scopes=[*BASE_SCOPES, "patient/*.rs"])
    url = generic_smart.authorize_url(oauth, state="s-1")
    location = generic_sandbox.login("nancy", url, deny=True)
    assert query_of(location) == {
        "error": "access_denied",
        "state": "s-1",
        "iss": generic_sandbox.issuer,
    }


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(generic_smart):
    launch = generic_smart.launch(scopes=[*BASE_SCOPES, "patient/*.rs"])
    first = launch.token["refresh_token"]

    def refresh(token: str) -> requests.Response:
        return generic_smart.token_post(
            {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT}
        )

    one = refresh(first)
    assert one.status_code == 200, one.text
    second = one.json()["refresh_token"]
    assert second != first
    two = refresh(second)  # no throttle: refresh at once again
    assert two.status_code == 200, two.text
    third = two.json()["refresh_token"]
    assert third not in {first, second}

    reused = refresh(first)
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant", "error_description": "refresh-token-reused"}
    grant = SandboxGrant.objects.get()
    assert grant.status == SandboxGrant.Status.REVOKED
    assert SandboxAccessToken.objects.filter(grant=grant, revoked=False).count() == 0
    # The current one died with the family.
    assert refresh(third).json()["error"] == "invalid_grant"


def test_scopes_are_enforced_on_every_read_in_operation_outcome_shape(
    generic_smart, generic_sandbox
):
    launch = generic_smart.launch(scopes=[*BASE_SCOPES, "patient/Condition.rs"])
    base = generic_sandbox.fhir_base
    conditions = launch.get(f"{base}/Condition?patient=12800101").json()
    assert conditions["entry"]
    practitioner = next(
        r["resource"]["recorder"]["reference"]
        for r in conditions["entry"]
        if r["resource"].get("recorder")
    )

    denied = launch.get(f"{base}/{practitioner}")
    assert denied.status_code == 403
    assert denied.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "forbidden",
                "diagnostics": "The access token has no scope to read Practitioner.",
                "location": ["http.Authorization"],
            }
        ],
    }
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="fhir", error="insufficient_scope"'
    assert launch.get(f"{base}/Observation?patient=12800101&category=laboratory").status_code == 403

    with_refs = generic_smart.launch(
        scopes=[*BASE_SCOPES, "patient/Condition.rs", "patient/Practitioner.rs"]
    )
    assert with_refs.get(f"{base}/{practitioner}").status_code == 200


@pytest.mark.parametrize(("pick", "patient_id"), [("child", "12800106"), ("parent", "12800105")])
def test_the_patient_picker_chooses_whose_record_the_token_carries(
    generic_smart, generic_sandbox, pick, patient_id
):
    launch = generic_smart.launch(
        patient="parent", pick=pick, scopes=[*BASE_SCOPES, "patient/*.rs"]
    )
    token = launch.token
    assert token["patient"] == patient_id
    claims = jwt.decode(token["id_token"], options={"verify_signature": False})
    # fhirUser is the parent's own record, whoever's record was picked.
    assert claims["fhirUser"] == f"{generic_sandbox.fhir_base}/Patient/12800105"
    base = generic_sandbox.fhir_base
    assert launch.get(f"{base}/Patient/{patient_id}").json()["id"] == patient_id
    other = "12800105" if patient_id == "12800106" else "12800106"
    assert launch.get(f"{base}/Patient/{other}").status_code == 403
    grant = SandboxGrant.objects.get()
    assert (grant.patient_key, grant.user_key) == (pick, "parent" if pick == "child" else "")


def test_the_picker_refuses_a_record_the_login_does_not_manage(generic_smart, generic_sandbox):
    oauth = generic_smart.session(scopes=[*BASE_SCOPES, "patient/*.rs"])
    url = generic_smart.authorize_url(oauth)
    from fhirlink.sandbox.forms_driver import AuthorizeFailed

    with pytest.raises(AuthorizeFailed, match="not 'nancy'"):
        generic_sandbox.login("parent", url, pick="nancy")
    # Nancy manages nobody: no picker.
    with pytest.raises(AuthorizeFailed, match="no patient picker"):
        generic_sandbox.login("nancy", generic_smart.authorize_url(oauth), pick="nancy")


def test_the_cerner_profile_shows_no_picker(smart, sandbox):
    launch = smart.launch(patient="parent")
    assert launch.token["patient"] == "12800105"


def test_consent_to_some_observation_categories_grants_granular_scopes(
    generic_smart, generic_sandbox
):
    launch = generic_smart.launch(
        scopes=[*BASE_SCOPES, "patient/Observation.rs", "patient/Condition.rs"],
        untick_categories=("vital-signs", "social-history"),
    )
    assert launch.token["scope"] == [*BASE_SCOPES, LAB, "patient/Condition.rs"]
    base = generic_sandbox.fhir_base
    labs = launch.get(f"{base}/Observation?patient=12800101&category=laboratory")
    assert labs.status_code == 200
    entries = [e["resource"] for e in labs.json()["entry"] if e["search"]["mode"] == "match"]
    assert entries
    vitals = launch.get(f"{base}/Observation?patient=12800101&category=vital-signs")
    assert vitals.status_code == 403
    assert vitals.json()["resourceType"] == "OperationOutcome"

    # All categories ticked: the plain scope; none: no Observation scope at all.
    whole = generic_smart.launch(scopes=[*BASE_SCOPES, "patient/Observation.rs"])
    assert whole.token["scope"] == [*BASE_SCOPES, "patient/Observation.rs"]
    none = generic_smart.launch(
        scopes=[*BASE_SCOPES, "patient/Observation.rs", "patient/Condition.rs"],
        untick_categories=("laboratory", "vital-signs", "social-history"),
    )
    assert none.token["scope"] == [*BASE_SCOPES, "patient/Condition.rs"]


def test_the_plain_smart_client_check_completes_against_the_generic_profile(generic_sandbox):
    from fhirlink.sandbox.smart_client_check import run_check

    result = run_check(generic_sandbox.fhir_base, max_pages=2)

    assert result.patient == generic_sandbox.large_patient.fhir_id
    assert result.refreshed is True
    assert result.pages == 2
