"""Discovery: smart-configuration, CapabilityStatement oauth-uris fallback, FHIR 4.0.x, caching,
scopes (configured ∩ supported, v1/v2), and the outbound HTTP client's error split."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
import requests
import responses
from django.core.management import call_command
from django.utils import timezone

from fhirlink import http
from fhirlink.exceptions import EhrUnavailable, UnsupportedFhirVersion
from fhirlink.models import HealthSystem
from fhirlink.scopes import compare_grant, granted_resources, requested_scopes
from fhirlink.services.discovery import discover
from tests.fhirlink import fake_cerner

pytestmark = pytest.mark.django_db


def test_discovery_from_smart_configuration(ehr, health_system):
    doc = discover(health_system)
    assert doc["source"] == "smart-configuration"
    assert doc["fhir_version"] == "4.0.1"
    assert doc["issuer"] == fake_cerner.AS_ISSUER
    assert doc["token_endpoint"] == fake_cerner.TOKEN_URL
    assert doc["revocation_endpoint"] == fake_cerner.REVOKE_URL
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "Observation" in doc["resources"]
    health_system.refresh_from_db()
    assert health_system.discovery == doc
    assert health_system.discovery_expires_at > timezone.now() + timedelta(minutes=59)


def test_discovery_is_cached_until_it_expires(ehr, health_system):
    discover(health_system)
    calls = len(ehr.rsps.calls)
    discover(HealthSystem.objects.get(pk=health_system.pk))
    assert len(ehr.rsps.calls) == calls
    HealthSystem.objects.filter(pk=health_system.pk).update(discovery_expires_at=timezone.now())
    discover(HealthSystem.objects.get(pk=health_system.pk))
    assert len(ehr.rsps.calls) == calls + 2


def test_fallback_to_capability_statement_oauth_uris(ehr, health_system):
    ehr.rsps.replace(
        responses.GET, f"{fake_cerner.FHIR_BASE}/.well-known/smart-configuration", status=404
    )
    doc = discover(health_system)
    assert doc["source"] == "capability-statement"
    capability = fake_cerner.example("CapabilityStatement/metadata-secure-fhir-ehr.json")
    uris = {
        e["url"]: e["valueUri"]
        for e in capability["rest"][0]["security"]["extension"][0]["extension"]
    }
    rewrite = lambda u: u.replace("https://authorization.cerner.com", fake_cerner.AUTH_ORIGIN)  # noqa: E731
    assert doc["authorization_endpoint"] == rewrite(uris["authorize"])
    assert doc["token_endpoint"] == rewrite(uris["token"])
    assert doc["revocation_endpoint"] == rewrite(uris["revoke"])
    assert doc["scopes_supported"] is None


def test_refuses_a_server_that_is_not_fhir_r4(
    ehr, health_system, consenting_patient, api_client_for
):
    capability = ehr.capability_statement()
    capability["fhirVersion"] = "3.0.2"
    ehr.rsps.replace(responses.GET, f"{fake_cerner.FHIR_BASE}/metadata", json=capability)
    with pytest.raises(UnsupportedFhirVersion):
        discover(health_system)
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 502
    assert response.json()["code"] == "ehr_unsupported_fhir_version"


def test_unreachable_server(ehr, health_system, consenting_patient, api_client_for):
    ehr.rsps.replace(
        responses.GET, f"{fake_cerner.FHIR_BASE}/.well-known/smart-configuration", status=503
    )
    with pytest.raises(EhrUnavailable):
        discover(health_system)
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 503
    assert response.json()["code"] == "ehr_unavailable"


def test_scopes_v1_and_v2():
    listed = [
        "patient/Observation.read",
        "patient/Observation.s",
        "patient/Condition.read",
        "patient/Condition.rs",
        "patient/Binary.r",
    ]
    v2, chosen = requested_scopes(
        resources=["Observation", "Condition", "Binary", "Coverage"],
        supported_resources=["Observation", "Condition", "Binary", "Coverage"],
        scopes_supported=listed,
        syntax="v2",
    )
    assert v2 == [
        "launch/patient",
        "openid",
        "fhirUser",
        "offline_access",
        "patient/Observation.s",
        "patient/Condition.rs",
        "patient/Binary.r",
        # Not in scopes_supported, which is not exhaustive: still asked for (issue #20).
        "patient/Coverage.rs",
    ]
    assert chosen == ["Observation", "Condition", "Binary", "Coverage"]
    v1, _ = requested_scopes(
        resources=["Observation", "Condition", "Binary"],
        supported_resources=None,
        scopes_supported=listed,
        syntax="v1",
    )
    # Binary is listed in v2 only: v1's default form (the list is a hint).
    assert v1[4:] == ["patient/Observation.read", "patient/Condition.read", "patient/Binary.read"]
    # Nothing listed (CapabilityStatement fallback): configured ∩ resources, default forms.
    bare, _ = requested_scopes(
        resources=["Observation", "Goal"],
        supported_resources=["Observation"],
        scopes_supported=None,
        syntax="v2",
    )
    assert bare[4:] == ["patient/Observation.rs"]


def test_granted_scope_parsing():
    granted = (
        "launch/patient openid fhirUser patient/Observation.s patient/Condition.read "
        "patient/Basic.c user/Goal.rs"
    )
    assert granted_resources(granted.split()) == ["Observation", "Condition", "Goal"]
    assert compare_grant(
        requested=["Observation", "Condition", "AllergyIntolerance"], granted=granted.split()
    ) == (
        ["Observation", "Condition"],
        ["AllergyIntolerance"],
    )


def test_healthsystem_check_command(ehr, health_system):
    out = StringIO()
    call_command("healthsystem_check", health_system.slug, "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["fhir_version"] == "4.0.1"
    assert report["pkce_s256"] == "advertised"
    assert report["revocation"] == fake_cerner.REVOKE_URL
    assert report["scope_syntax"] == "v2"
    # Communication is readable in Cerner's CapabilityStatement but not in scopes_supported,
    # which is a hint only (issue #20): still asked for. Basic cannot be read there (no read or
    # search interaction). The references' user/ forms as listed.
    assert report["requested_resources"] == [
        "Patient",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "Communication",
        "Practitioner",
        "Organization",
        "Location",
    ]
    assert report["not_supported"] == ["Basic"]
    assert report["warnings"] == []
    by_type = {row["resource"]: row for row in report["types"]}
    assert by_type["Observation"] == {
        "resource": "Observation",
        "scope": "patient/Observation.s",
        "requested": True,
        "why": "scopes_supported lists patient/Observation.s",
        "origin": "configured",
        "in_capability_statement": True,
        "scopes_supported": "listed",
    }
    assert by_type["Communication"]["why"] == "not in scopes_supported, which is not exhaustive"
    assert by_type["Basic"]["why"] == "not in the server's CapabilityStatement"
    assert by_type["Practitioner"]["scope"] == "user/Practitioner.rs"
    assert by_type["Practitioner"]["origin"] == "read by reference"
    assert by_type["Medication"] == {
        "resource": "Medication",
        "scope": None,
        "requested": False,
        "why": "not in the server's CapabilityStatement",
        "origin": "read by reference",
        "in_capability_statement": False,
        "scopes_supported": "-",
    }
    text = StringIO()
    call_command("healthsystem_check", str(health_system.pk), stdout=text)
    assert "fhir_version               4.0.1" in text.getvalue()
    assert "  Observation            patient/Observation.s" in text.getvalue()


def test_healthsystem_check_warns_when_nothing_would_be_requested(ehr, health_system):
    health_system.resources = ["Basic2", "NotAType"]
    health_system.save(update_fields=["resources"])
    out, err = StringIO(), StringIO()
    call_command("healthsystem_check", health_system.slug, stdout=out, stderr=err)
    assert "WARNING: nothing would be requested" in err.getvalue()
    report = json.loads(
        (lambda s: (call_command("healthsystem_check", health_system.slug, "--json", stdout=s), s))(
            StringIO()
        )[1].getvalue()
    )
    assert report["not_supported"] == ["Basic2", "NotAType"]
    assert report["requested_resources"] == ["Practitioner", "Organization", "Location"]
    assert report["warnings"] == [
        "nothing would be requested: none of the configured resources is in the server's "
        "CapabilityStatement (a launch would fail with ehr_misconfigured)"
    ]


# --- the outbound HTTP client ----------------------------------------------------------------


@responses.activate
def test_http_error_split():
    url = "https://ehr.example.test/x"
    responses.add(responses.GET, url, status=302, headers={"Location": "https://elsewhere.test/"})
    with pytest.raises(http.EhrTerminal) as redirect:
        http.request("GET", url)
    assert redirect.value.status == 302
    assert len(responses.calls) == 1  # not followed
    responses.replace(responses.GET, url, status=429, headers={"Retry-After": "7"})
    with pytest.raises(http.EhrRetryable) as throttled:
        http.request("GET", url)
    assert throttled.value.retry_after == 7
    responses.replace(responses.GET, url, status=500, body="<html>boom</html>")
    with pytest.raises(http.EhrRetryable):
        http.request("GET", url)
    responses.replace(
        responses.GET,
        url,
        status=400,
        json={"error": "invalid_grant", "error_description": "secret stuff"},
    )
    with pytest.raises(http.EhrTerminal) as terminal:
        http.request("GET", url)
    assert terminal.value.oauth_error == "invalid_grant"
    assert "secret stuff" not in str(terminal.value) + repr(terminal.value)
    responses.replace(responses.GET, url, body=requests.ConnectTimeout())
    with pytest.raises(http.EhrRetryable):
        http.request("GET", url)


def test_http_refuses_plain_http_except_sandbox_loopback(settings):
    with pytest.raises(http.EhrTerminal):
        http.check_url("http://ehr.example.test/r4")
    with pytest.raises(http.EhrTerminal):
        http.check_url("https://user:pw@ehr.example.test/r4")
    settings.SANDBOX_ENABLED = True
    http.check_url("http://127.0.0.1:8001/r4")
    settings.SANDBOX_ENABLED = False
    with pytest.raises(http.EhrTerminal):
        http.check_url("http://127.0.0.1:8001/r4")


def test_http_timeouts_are_explicit(monkeypatch, settings):
    seen = {}

    def fake_request(method, url, **kwargs):
        seen.update(kwargs)
        raise requests.ReadTimeout()

    monkeypatch.setattr(http._session, "request", fake_request)
    with pytest.raises(http.EhrRetryable):
        http.request("GET", "https://ehr.example.test/")
    assert seen["timeout"] == (
        settings.FHIRLINK_HTTP_CONNECT_TIMEOUT,
        settings.FHIRLINK_HTTP_READ_TIMEOUT,
    )
    assert seen["allow_redirects"] is False
