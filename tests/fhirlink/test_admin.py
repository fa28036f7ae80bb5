"""Admin: operators register health systems with a write-only secret; connections are read-only."""

from __future__ import annotations

import pytest

from fhirlink.models import HealthSystem
from fhirlink.services.oauth_client import health_system_secret
from tests.factories import UserFactory
from tests.fhirlink import fake_cerner

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    return client


def _form(**overrides):
    data = {
        "name": "Admin Health",
        "slug": "admin-health",
        "logo_url": "",
        "fhir_base_url": fake_cerner.FHIR_BASE,
        "tenant": fake_cerner.TENANT,
        "client_id": "admin-client",
        "client_auth": "client_secret_basic",
        "jwt_key_id": "",
        "jwt_alg": "RS384",
        "scope_syntax": "v2",
        "resources": '["Observation"]',
        "redirect_uri": "https://portal.example/fhirlink/callback",
        "enabled": "on",
        "secret": "admin-typed-secret",
    }
    data.update(overrides)
    return data


def test_add_with_secret_and_secret_is_never_shown(admin_client):
    response = admin_client.post("/admin/fhirlink/healthsystem/add/", _form())
    assert response.status_code == 302, response.content
    hs = HealthSystem.objects.get(slug="admin-health")
    assert health_system_secret(hs) == "admin-typed-secret"
    page = admin_client.get(f"/admin/fhirlink/healthsystem/{hs.pk}/change/")
    assert page.status_code == 200
    assert b"admin-typed-secret" not in page.content
    # Saving without a new secret keeps the stored one.
    response = admin_client.post(
        f"/admin/fhirlink/healthsystem/{hs.pk}/change/", _form(secret="", name="Renamed")
    )
    assert response.status_code == 302
    hs.refresh_from_db()
    assert hs.name == "Renamed"
    assert health_system_secret(hs) == "admin-typed-secret"


def test_confidential_without_secret_is_refused(admin_client):
    response = admin_client.post("/admin/fhirlink/healthsystem/add/", _form(secret=""))
    assert response.status_code == 200
    assert not HealthSystem.objects.exists()


def test_check_action(admin_client, ehr, health_system):
    response = admin_client.post(
        "/admin/fhirlink/healthsystem/",
        {"action": "run_check", "_selected_action": [str(health_system.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"FHIR 4.0.1, PKCE advertised, revocation yes" in response.content


def test_connections_are_read_only(admin_client, consenting_patient, connect):
    run = connect(consenting_patient)
    cid = run["result"]["connection"]
    assert admin_client.get(f"/admin/fhirlink/connection/{cid}/change/").status_code == 200
    assert admin_client.get("/admin/fhirlink/connection/add/").status_code == 403
    assert admin_client.post(f"/admin/fhirlink/connection/{cid}/delete/").status_code == 403
