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


def test_connections_are_read_only(admin_client, admin_user, consenting_patient, connect):
    run = connect(consenting_patient)
    cid = run["result"]["connection"]
    # The launch signs the patient's browser in (the start URL needs it): sign staff back in.
    admin_client.force_login(admin_user)
    assert admin_client.get(f"/admin/fhirlink/connection/{cid}/change/").status_code == 200
    assert admin_client.get("/admin/fhirlink/connection/add/").status_code == 403
    assert admin_client.post(f"/admin/fhirlink/connection/{cid}/delete/").status_code == 403


def test_a_running_syncs_progress_shows_in_the_admin(admin_client, health_system):
    """Staff see a running sync's overall percent in the runs list and, on the run, each
    type's streams done, pages and counts."""
    from django.urls import reverse

    from fhirlink.models import Connection, SyncRun, SyncStream
    from tests.factories import PatientFactory

    connection = Connection.objects.create(
        patient=PatientFactory.create(),
        health_system=health_system,
        status="active",
        fhir_patient_id="12724066",
    )
    run = SyncRun.objects.create(
        connection=connection, trigger="connect", status="running", pages=5
    )
    streams = [
        ("Observation", "Observation:w1", "done", 3, 600),
        ("Observation", "Observation:w2", "pending", 2, 400),  # under way: pages stored
        ("Condition", "Condition", "pending", 0, 0),
    ]
    for rtype, key, status, pages, fetched in streams:
        SyncStream.objects.create(
            run=run,
            resource_type=rtype,
            key=key,
            mode="full",
            status=status,
            pages=pages,
            fetched=fetched,
            created=fetched,
        )
    listing = admin_client.get(reverse("admin:fhirlink_syncrun_changelist")).content.decode()
    assert '<td class="field-percent">33</td>' in listing
    page = admin_client.get(reverse("admin:fhirlink_syncrun_change", args=[run.pk]))
    body = page.content.decode()
    assert "Observation: running (1/2 streams, 5 pages; fetched 1000, created 1000" in body
    assert "Condition: pending (0/1 streams, 0 pages; fetched 0" in body
