"""Discovery documents: smart-configuration, CapabilityStatement, OIDC, JWKS."""

from __future__ import annotations

import pytest
import requests

from fhirlink.sandbox.conf import DEMO_TENANT

pytestmark = pytest.mark.integration


def test_smart_configuration_is_modelled_on_the_live_patient_document(sandbox):
    response = requests.get(sandbox.smart_configuration_url, timeout=10)

    assert response.status_code == 200
    config = response.json()
    prefix = f"{sandbox.origin}/tenants/{DEMO_TENANT}/protocols/oauth2/profiles/smart-v1"
    assert config["authorization_endpoint"] == f"{prefix}/personas/patient/authorize"
    assert config["token_endpoint"] == (
        f"{sandbox.origin}/tenants/{DEMO_TENANT}/hosts/fhir-myrecord.cerner.com/protocols/oauth2/profiles/smart-v1/token"
    )
    assert config["revocation_endpoint"] == f"{prefix}/token/revoke"
    assert config["introspection_endpoint"] == f"{sandbox.origin}/tokeninfo"
    assert (
        config["management_endpoint"]
        == f"{sandbox.origin}/tenants/{DEMO_TENANT}/personas/patient/my-authorizations"
    )
    assert config["jwks_uri"] == f"{sandbox.origin}/jwk"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "private_key_jwt",
    ]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "refresh_token" not in config["grant_types_supported"]
    for capability in (
        "permission-v2",
        "permission-v1",
        "context-standalone-patient",
        "client-public",
        "client-confidential-asymmetric",
        "permission-offline",
    ):
        assert capability in config["capabilities"]
    assert "context-ehr-encounter" not in config["capabilities"]
    scopes = set(config["scopes_supported"])
    assert {
        "patient/Observation.read",
        "patient/Observation.s",
        "patient/Condition.rs",
        "patient/Binary.r",
    } <= scopes
    assert "patient/Observation.rs" not in scopes
    assert not any(s.endswith((".write", ".c", ".u", ".d", ".cruds")) for s in scopes)
    assert not any("*" in s for s in scopes)


def test_capability_statement_declares_r4_resources_and_oauth_uris(sandbox):
    response = requests.get(f"{sandbox.fhir_base}/metadata", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    rest = body["rest"][0]
    assert rest["security"]["cors"] is True
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    oauth = {e["url"]: e["valueUri"] for e in rest["security"]["extension"][0]["extension"]}
    assert (
        rest["security"]["extension"][0]["url"]
        == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    )
    assert set(oauth) == {"token", "revoke", "authorize", "manage", "introspect"}
    config = requests.get(sandbox.smart_configuration_url, timeout=10).json()
    assert oauth["token"] == config["token_endpoint"]
    assert oauth["authorize"] == config["authorization_endpoint"]
    types = {r["type"]: r for r in rest["resource"]}
    for rtype in (
        "Patient",
        "Condition",
        "Observation",
        "MedicationRequest",
        "AllergyIntolerance",
        "Immunization",
        "Procedure",
        "Encounter",
        "DiagnosticReport",
        "DocumentReference",
        "Binary",
        "CarePlan",
        "Goal",
        "CareTeam",
        "Device",
        "Practitioner",
        "Organization",
        "Location",
        "Provenance",
    ):
        assert rtype in types
    observation_params = {p["name"] for p in types["Observation"]["searchParam"]}
    assert {
        "patient",
        "subject",
        "_id",
        "category",
        "code",
        "date",
        "_lastUpdated",
    } <= observation_params
    assert types["Binary"]["interaction"] == [{"code": "read"}]


def test_oidc_discovery_lives_under_the_issuer_and_not_at_the_root(sandbox):
    issuer = f"{sandbox.origin}/tenants/{DEMO_TENANT}/oidc/idsps/{DEMO_TENANT}/"

    response = requests.get(f"{issuer}.well-known/openid-configuration", timeout=10)

    assert response.status_code == 200
    assert response.json()["issuer"] == issuer
    assert response.json()["jwks_uri"] == f"{sandbox.origin}/jwk"
    assert response.json()["id_token_signing_alg_values_supported"] == ["RS256"]
    assert (
        requests.get(f"{sandbox.origin}/.well-known/openid-configuration", timeout=10).status_code
        == 404
    )


def test_jwks_publishes_rsa_keys_with_kid(sandbox):
    keys = requests.get(f"{sandbox.origin}/jwk", timeout=10).json()["keys"]

    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["alg"] == "RS256"
    assert keys[0]["kid"].endswith(".rsa")
    assert "d" not in keys[0]


def test_an_unknown_tenant_is_refused(sandbox):
    base = sandbox.fhir_base_for("00000000-0000-0000-0000-000000000000")

    assert requests.get(f"{base}/.well-known/smart-configuration", timeout=10).status_code == 403
    response = requests.get(f"{base}/Patient/12800101", timeout=10)
    assert response.status_code == 403
    assert response.json()["issue"][0]["diagnostics"] == "Tenant not valid or accessible."


def test_a_second_tenant_has_its_own_urls(sandbox):
    other = sandbox.create_tenant("11111111-2222-3333-4444-555555555555")

    config = requests.get(
        f"{sandbox.fhir_base_for(other)}/.well-known/smart-configuration", timeout=10
    ).json()

    assert config["authorization_endpoint"].startswith(f"{sandbox.origin}/tenants/{other}/")
    assert f"/tenants/{other}/hosts/" in config["token_endpoint"]
