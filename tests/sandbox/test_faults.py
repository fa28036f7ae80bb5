"""Fault injection per tenant: from the fixture, the command and the environment."""

from __future__ import annotations

import json
import time

import pytest
import requests
from django.core.management import call_command

pytestmark = pytest.mark.integration


def _search(sandbox, launch, **params):
    query = "&".join(f"{k}={v}" for k, v in {"patient": launch.token["patient"], **params}.items())
    return launch.get(f"{sandbox.fhir_base}/Observation?{query}")


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors_then_recovery(sandbox, nancy, code):
    sandbox.set_faults(status={"code": code, "times": 2})

    statuses = [_search(sandbox, nancy).status_code for _ in range(3)]

    assert statuses == [code, code, 200]


def test_rate_limit_with_retry_after(sandbox, nancy):
    sandbox.set_faults(rate_limit={"retry_after": 7, "times": 1})

    limited = _search(sandbox, nancy)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert _search(sandbox, nancy).status_code == 200


def test_latency(sandbox, nancy):
    sandbox.set_faults(latency_ms={"ms": 300})
    started = time.monotonic()

    assert _search(sandbox, nancy).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_timeout(sandbox, nancy):
    sandbox.set_faults(timeout={"seconds": 1.5, "times": 1})

    with pytest.raises(requests.Timeout):
        nancy.get(f"{sandbox.fhir_base}/Patient/{nancy.token['patient']}", timeout=0.3)


def test_malformed_json(sandbox, nancy):
    sandbox.set_faults(malformed_json={"times": 1})

    response = _search(sandbox, nancy)

    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_truncated_page(sandbox, nancy):
    sandbox.set_faults(truncated_page={"times": 1})

    response = _search(sandbox, nancy)

    assert response.status_code == 200
    assert response.text.startswith('{"resourceType":"Bundle"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_looping_next_link(sandbox, nancy):
    sandbox.set_faults(looping_next={"times": 1})
    first = _search(sandbox, nancy, _count=10)

    bundle = first.json()

    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["next"] == links["self"]


def test_invalid_fhir(sandbox, nancy):
    sandbox.set_faults(invalid_fhir={"times": 1})

    bundle = _search(sandbox, nancy).json()

    assert bundle["type"] == "not-a-bundle-type"
    assert all("resourceType" not in e["resource"] for e in bundle["entry"])


def test_grant_revoked_mid_sync(sandbox, smart, nancy):
    sandbox.set_faults(revoke_grant_after={"requests": 2})

    statuses = [_search(sandbox, nancy, _count=10).status_code for _ in range(4)]

    assert statuses == [200, 200, 401, 401]
    refresh = smart.token_post(
        {
            "grant_type": "refresh_token",
            "refresh_token": nancy.token["refresh_token"],
            "client_id": "conformance-app",
        }
    )
    assert refresh.json()["error"] == "invalid_grant"


def test_faults_are_per_tenant_and_limited_to_resource_types(sandbox, nancy):
    sandbox.create_tenant("11111111-2222-3333-4444-555555555555")
    sandbox.set_faults(tenant="11111111-2222-3333-4444-555555555555", status={"code": 500})
    sandbox.set_faults(status={"code": 503, "resource_types": ["Condition"]})

    assert _search(sandbox, nancy).status_code == 200
    assert (
        nancy.get(f"{sandbox.fhir_base}/Condition?patient={nancy.token['patient']}").status_code
        == 503
    )
    sandbox.clear_faults()
    assert (
        nancy.get(f"{sandbox.fhir_base}/Condition?patient={nancy.token['patient']}").status_code
        == 200
    )


def test_faults_command(sandbox, nancy, capsys):
    call_command("sandbox_faults", "--status", "502", "--times", "1")

    assert json.loads(capsys.readouterr().out)["faults"] == {"status": {"code": 502, "times": 1}}
    assert _search(sandbox, nancy).status_code == 502
    assert _search(sandbox, nancy).status_code == 200
    call_command("sandbox_faults", "--json", '{"latency_ms": {"ms": 1}}')
    call_command("sandbox_faults", "--clear")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["faults"] == {}


def test_faults_from_the_environment(sandbox, nancy, monkeypatch):
    monkeypatch.setenv("SANDBOX_FAULTS", json.dumps({sandbox.tenant: {"status": {"code": 500}}}))

    assert _search(sandbox, nancy).status_code == 500
    monkeypatch.setenv("SANDBOX_FAULTS", json.dumps({"*": {"rate_limit": {"retry_after": 2}}}))
    assert _search(sandbox, nancy).status_code == 429
    monkeypatch.delenv("SANDBOX_FAULTS")
    assert _search(sandbox, nancy).status_code == 200


def test_an_unknown_fault_is_refused(sandbox):
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.set_faults(explode=True)
