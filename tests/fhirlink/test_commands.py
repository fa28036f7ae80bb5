"""Operator commands and the demo seed."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from fhirlink import demo
from fhirlink.models import HealthSystem
from fhirlink.services.oauth_client import health_system_secret

pytestmark = pytest.mark.django_db


def test_healthsystem_register_is_idempotent(monkeypatch, settings):
    monkeypatch.setenv("HS_SECRET", "the-client-secret")
    args = [
        "--slug",
        "acme",
        "--name",
        "Acme Health",
        "--fhir-base-url",
        "https://fhir-myrecord.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d",
        "--client-id",
        "acme-client",
        "--client-auth",
        "client_secret_basic",
        "--secret-env",
        "HS_SECRET",
        "--scope-syntax",
        "v1",
        "--resources",
        "Observation, Condition",
    ]
    out = StringIO()
    call_command("healthsystem_register", *args, stdout=out)
    hs = HealthSystem.objects.get(slug="acme")
    assert out.getvalue().startswith("Registered health system acme")
    assert hs.tenant == "ec2458f2-1e24-41c8-b71b-0e701af7583d"
    assert hs.redirect_uri == settings.FHIRLINK_REDIRECT_URI + "/acme"  # its own (mix-up)
    assert hs.resources == ["Observation", "Condition"]
    assert hs.scope_syntax == "v1"
    assert health_system_secret(hs) == "the-client-secret"
    assert "the-client-secret" not in out.getvalue()
    call_command("healthsystem_register", "--slug", "acme", "--disable", stdout=StringIO())
    hs = HealthSystem.objects.get(slug="acme")
    assert HealthSystem.objects.count() == 1
    assert hs.enabled is False
    assert hs.name == "Acme Health"
    assert health_system_secret(hs) == "the-client-secret"


def test_healthsystem_register_refuses_bad_input():
    with pytest.raises(CommandError):
        call_command(
            "healthsystem_register",
            "--slug",
            "x",
            "--name",
            "X",
            "--fhir-base-url",
            "https://f.example/r4/t",
            "--client-id",
            "c",
            "--client-auth",
            "private_key_jwt",
            stdout=StringIO(),
        )
    assert not HealthSystem.objects.exists()


def test_healthsystem_check_unknown():
    with pytest.raises(CommandError):
        call_command("healthsystem_check", "nope", stdout=StringIO())


def test_demo_seed_is_idempotent(monkeypatch, settings):
    calls = []
    monkeypatch.setattr(demo, "call_command", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(demo, "seed_directory", lambda stdout: None)  # its own tests
    settings.SANDBOX_ENABLED = True
    settings.SANDBOX_BASE_URL = "http://127.0.0.1:8001"
    settings.GENERIC_SANDBOX_BASE_URL = "http://127.0.0.1:8002"
    demo.seed(StringIO())
    demo.seed(StringIO())
    systems = {hs.slug: hs for hs in HealthSystem.objects.all()}
    assert sorted(systems) == ["generic-sandbox", "sandbox-demo"]
    cerner, generic = systems["sandbox-demo"], systems["generic-sandbox"]
    assert cerner.fhir_base_url == f"http://127.0.0.1:8001/r4/{demo.DEMO_TENANT}"
    # The sandbox's generic SMART 2.x profile, connectable from the demo (its patient picker).
    assert (generic.fhir_base_url, generic.tenant, generic.enabled) == (
        "http://127.0.0.1:8002/fhir/generic",
        "generic",
        True,
    )
    assert generic.redirect_uri == "http://127.0.0.1:8000/fhirlink/callback/generic-sandbox"
    assert cerner.client_id == generic.client_id == demo.DEMO_CLIENT_ID
    # Each registered at its sandbox tenant with its own redirect URI, once per seed.
    registered = [
        (call[call.index("--tenant") + 1], call[call.index("--redirect-uri") + 1]) for call in calls
    ]
    assert {call[0] for call in calls} == {"sandbox_client_register"}
    assert registered == 2 * [
        (demo.DEMO_TENANT, cerner.redirect_uri),
        ("generic", generic.redirect_uri),
    ]
    settings.SANDBOX_ENABLED = False
    HealthSystem.objects.all().delete()
    demo.seed(StringIO())
    assert not HealthSystem.objects.exists()


def test_generate_key_and_jwks_endpoint(client):
    out = StringIO()
    call_command(
        "healthsystem_register",
        "--slug",
        "jwt-hs",
        "--name",
        "JWT Health",
        "--fhir-base-url",
        "https://fhir.example.test/r4/t1",
        "--client-id",
        "jwt-client",
        "--client-auth",
        "private_key_jwt",
        "--jwt-key-id",
        "portal-2026",
        "--jwt-alg",
        "ES384",
        "--generate-key",
        stdout=out,
    )
    printed = out.getvalue()
    assert "PRIVATE KEY" not in printed
    public = json.loads(printed[printed.index("{") :])["keys"][0]
    assert public["kid"] == "portal-2026"
    assert public["alg"] == "ES384"
    assert public["crv"] == "P-384"
    assert "d" not in public  # no private part
    hs = HealthSystem.objects.get(slug="jwt-hs")
    assert health_system_secret(hs).startswith("-----BEGIN PRIVATE KEY-----")
    served = client.get("/fhirlink/jwks.json")
    assert served.status_code == 200
    assert served.json() == {"keys": [public]}


def test_periodic_tasks(consenting_patient, connect, ehr):
    from datetime import timedelta

    from django.utils import timezone

    from fhirlink.models import LaunchAttempt
    from fhirlink.tasks import launch_attempts_purge

    connect(consenting_patient)
    assert launch_attempts_purge.apply().get() == 0
    LaunchAttempt.objects.update(expires_at=timezone.now() - timedelta(days=2))
    assert launch_attempts_purge.apply().get() == 1
    assert LaunchAttempt.objects.count() == 0
