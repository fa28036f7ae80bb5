"""POST /api/v1/connections/{id}/sync (throttled), progress in GET /api/v1/connections/{id},
the beat schedule, erasure through the disconnect hook."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.utils import timezone

from fhirlink.models import Connection, ConnectionStatus, HealthSystem, SyncRun, SyncRunStatus
from fhirlink.sync.tasks import schedule_incremental_syncs
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_revoke
from tests.factories import PatientFactory
from tests.fhirlink.conftest import grant_ehr_sync


@pytest.fixture
def hs(db: None) -> HealthSystem:
    return HealthSystem.objects.create(
        slug="api-sync",
        name="API sync",
        fhir_base_url="https://fhir.example.test/r4/t1",
        client_id="c",
        redirect_uri="https://portal.example.test/fhirlink/callback",
    )


def make_connection(hs: HealthSystem, status: str = ConnectionStatus.ACTIVE) -> Connection:
    patient = PatientFactory.create()
    grant_ehr_sync(patient)
    return Connection.objects.create(
        patient=patient, health_system=hs, status=status, fhir_patient_id="1"
    )


@pytest.fixture
def enqueued():
    with mock.patch("fhirlink.sync.tasks.sync_connection.apply_async") as apply_async:
        yield apply_async


def test_sync_now_queues_once_and_is_throttled(
    hs, api_client_for, enqueued, django_capture_on_commit_callbacks
):
    connection = make_connection(hs)
    cache.delete(f"throttle_sync_request_{connection.patient.user.pk}")
    api = api_client_for(connection.patient, scope="connections")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/connections/{connection.pk}/sync")
    assert response.status_code == 202, response.content
    run = SyncRun.objects.get(connection=connection)
    assert response.json()["sync"]["run"] == str(run.pk)
    assert response.json()["sync"]["status"] == "queued"
    assert run.trigger == "patient"
    enqueued.assert_called_once_with(args=(str(connection.pk),))
    detail = api.get(f"/api/v1/connections/{connection.pk}").json()
    assert detail["sync"]["run"] == str(run.pk)
    again = api.post(f"/api/v1/connections/{connection.pk}/sync")
    assert again.status_code == 429
    assert SyncRun.objects.filter(connection=connection).count() == 1


def test_sync_now_refused(hs, api_client_for, enqueued):
    mine = make_connection(hs, status=ConnectionStatus.NEEDS_REAUTH)
    other = make_connection(hs)
    cache.delete(f"throttle_sync_request_{mine.patient.user.pk}")
    api = api_client_for(mine.patient, scope="connections")
    assert api.post(f"/api/v1/connections/{other.pk}/sync").status_code == 404
    cache.delete(f"throttle_sync_request_{mine.patient.user.pk}")
    response = api.post(f"/api/v1/connections/{mine.pk}/sync")
    assert response.status_code == 409
    assert response.json()["code"] == "connection_needs_reauth"
    cache.delete(f"throttle_sync_request_{mine.patient.user.pk}")
    assert (
        api_client_for(mine.patient, scope="records:read")
        .post(f"/api/v1/connections/{mine.pk}/sync")
        .status_code
        == 403
    )
    assert not SyncRun.objects.exists()
    enqueued.assert_not_called()


def test_schedule_skips_reauth_unconsented_busy_and_fresh(hs, enqueued):
    due = make_connection(hs)
    make_connection(hs, status=ConnectionStatus.NEEDS_REAUTH)
    unconsented = make_connection(hs)
    consent_revoke(patient=unconsented.patient, purpose=Purpose.EHR_SYNC)
    fresh = make_connection(hs)
    Connection.objects.filter(pk=fresh.pk).update(last_synced_at=timezone.now())
    busy = make_connection(hs)
    SyncRun.objects.create(
        connection=busy,
        trigger="schedule",
        status=SyncRunStatus.RUNNING,
        lease_until=timezone.now() + timedelta(minutes=1),
    )
    with mock.patch("fhirlink.sync.tasks.sync_resume_stale.delay"):
        assert schedule_incremental_syncs() == 1
    ((_, kwargs),) = [(c.args, c.kwargs) for c in enqueued.call_args_list]
    assert kwargs["args"] == (str(due.pk), "schedule")
    assert 0 <= kwargs["countdown"] <= 3000


def test_consent_revocation_handler_cancels_running_runs(hs, django_capture_on_commit_callbacks):
    connection = make_connection(hs)
    run = SyncRun.objects.create(
        connection=connection, trigger="schedule", status=SyncRunStatus.RUNNING
    )
    with django_capture_on_commit_callbacks(execute=True):
        consent_revoke(patient=connection.patient, purpose=Purpose.EHR_SYNC)
    run.refresh_from_db()
    assert run.cancel_requested is True
