"""Endpoint health: checks of smart-configuration + CapabilityStatement, recorded changes,
failure counting, down after N failures, what the connections API tells the patient, and the
scheduled syncs leaving a down health system alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import responses
from django.core.cache import cache
from django.utils import timezone

from fhirlink.directory.health import endpoint_check, endpoint_checks_due
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    DirectoryEntry,
    EndpointChange,
    EndpointHealth,
    EndpointState,
    HealthSystem,
    SyncRun,
    SyncRunStatus,
)
from fhirlink.sync.tasks import schedule_incremental_syncs
from tests.factories import PatientFactory
from tests.fhirlink.conftest import grant_ehr_sync

BASE = "https://fhir.health.example/r4/t1"


def capability(*, date: str, resources: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "date": date,
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": r, "interaction": [{"code": "read"}, {"code": "search-type"}]}
                    for r in resources
                ],
            }
        ],
    }


def smart(token: str) -> dict[str, Any]:
    return {
        "authorization_endpoint": "https://auth.health.example/authorize",
        "token_endpoint": token,
        "jwks_uri": "https://auth.health.example/jwks",
    }


@pytest.fixture
def connected(db: None) -> Connection:
    from tests.factories import PatientFactory

    hs = HealthSystem.objects.create(
        slug="h1", name="Health One", fhir_base_url=BASE + "/", client_id="c", redirect_uri=""
    )
    return Connection.objects.create(
        patient=PatientFactory.create(), health_system=hs, status=ConnectionStatus.ACTIVE
    )


@responses.activate
def test_check_records_changes(connected: Connection, settings: Any) -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", json=smart("https://a/token"))
    responses.get(
        f"{BASE}/metadata", json=capability(date="2026-01-01", resources=["Patient", "Goal"])
    )
    row = endpoint_check(fhir_base_url=BASE + "/")
    assert (row.fhir_base_url, row.state, row.check_count, row.failure_count) == (
        BASE,
        EndpointState.UP,
        1,
        0,
    )
    assert (row.snapshot or {})["resources"] == ["Goal", "Patient"]
    assert row.next_check_at is not None
    assert row.last_checked_at is not None
    assert row.next_check_at - row.last_checked_at == timedelta(
        minutes=settings.FHIRLINK_ENDPOINT_CHECK_MINUTES
    )
    assert EndpointChange.objects.count() == 0
    responses.replace(
        responses.GET, f"{BASE}/.well-known/smart-configuration", json=smart("https://b/token")
    )
    responses.replace(
        responses.GET,
        f"{BASE}/metadata",
        json=capability(date="2026-03-01", resources=["Patient", "Observation"]),
    )
    endpoint_check(fhir_base_url=BASE)
    change = EndpointChange.objects.get()
    assert (change.capability_date_before, change.capability_date_after) == (
        "2026-01-01",
        "2026-03-01",
    )
    assert (change.resources_added, change.resources_removed) == (["Observation"], ["Goal"])
    assert change.endpoints_moved == {"token_endpoint": ["https://a/token", "https://b/token"]}
    # The same answer again records no change.
    endpoint_check(fhir_base_url=BASE)
    assert EndpointChange.objects.count() == 1


@responses.activate
def test_down_after_failures_and_the_patient_is_told(
    connected: Connection, settings: Any, api_client_for: Any
) -> None:
    settings.FHIRLINK_ENDPOINT_DOWN_AFTER = 3
    responses.get(f"{BASE}/.well-known/smart-configuration", status=503)
    responses.get(f"{BASE}/metadata", status=503)
    api = api_client_for(connected.patient, scope="connections")
    assert api.get(f"/api/v1/connections/{connected.pk}").json()["ehr_status"] == {
        "state": "unknown",
        "since": None,
        "message": None,
    }
    for expected in ("unknown", "unknown", "down"):
        row = endpoint_check(fhir_base_url=BASE)
        assert row.state == expected
    assert (row.consecutive_failures, row.failure_count, row.last_error) == (3, 3, "http_503")
    status = api.get(f"/api/v1/connections/{connected.pk}").json()["ehr_status"]
    assert status["state"] == "down"
    assert status["since"] is not None
    assert status["message"].startswith("Your health system is not answering right now.")
    # Back up: the failures in a row reset, the total stays.
    responses.replace(
        responses.GET, f"{BASE}/.well-known/smart-configuration", json=smart("https://a/token")
    )
    responses.replace(
        responses.GET, f"{BASE}/metadata", json=capability(date="d", resources=["Patient"])
    )
    row = endpoint_check(fhir_base_url=BASE)
    assert (row.state, row.consecutive_failures, row.failure_count, row.down_since) == (
        EndpointState.UP,
        0,
        3,
        None,
    )
    assert api.get(f"/api/v1/connections/{connected.pk}").json()["ehr_status"]["state"] == "up"


@responses.activate
def test_a_non_r4_server_counts_as_a_failure(connected: Connection) -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    body = capability(date="d", resources=["Patient"])
    body["fhirVersion"] = "1.0.2"
    responses.get(f"{BASE}/metadata", json=body)
    row = endpoint_check(fhir_base_url=BASE)
    assert (row.state, row.consecutive_failures, row.last_error) == ("unknown", 1, "not_fhir_r4")


def test_due_connected_first_then_a_few_idle_and_leased(
    connected: Connection, settings: Any
) -> None:
    settings.FHIRLINK_ENDPOINT_IDLE_PER_TICK = 2
    for i in range(3):
        DirectoryEntry.objects.create(
            source="s", external_id=str(i), name=f"E{i}", fhir_base_url=f"https://e{i}.example/r4"
        )
    now = timezone.now()
    due = endpoint_checks_due(now=now)
    assert due == [BASE, "https://e0.example/r4", "https://e1.example/r4"]
    # Leased: the next tick does not enqueue them again; the third idle one comes next.
    assert endpoint_checks_due(now=now + timedelta(minutes=1)) == ["https://e2.example/r4"]
    assert EndpointHealth.objects.count() == 4
    # A disconnected connection's endpoint is no longer watched as connected.
    Connection.objects.filter(pk=connected.pk).update(status=ConnectionStatus.DISCONNECTED)
    later = now + timedelta(days=30)
    assert endpoint_checks_due(now=later) == ["https://e0.example/r4", "https://e1.example/r4"]


def test_scheduled_syncs_skip_a_health_system_that_is_down_not_a_requested_sync(
    connected: Connection, api_client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The beat job does not hammer a health system the checks find down (its base is stored
    without the trailing slash the registration has); the patient's own request still runs."""
    grant_ehr_sync(connected.patient)
    other = Connection.objects.create(
        patient=PatientFactory.create(),
        health_system=HealthSystem.objects.create(
            slug="h2", name="Health Two", fhir_base_url=BASE + "2", client_id="c", redirect_uri=""
        ),
        status=ConnectionStatus.ACTIVE,
    )
    grant_ehr_sync(other.patient)
    EndpointHealth.objects.create(fhir_base_url=BASE, state=EndpointState.DOWN)
    EndpointHealth.objects.create(fhir_base_url=BASE + "2", state=EndpointState.UP)

    def scheduled() -> list[str]:
        with (
            mock.patch("fhirlink.sync.tasks.sync_connection.apply_async") as apply_async,
            mock.patch("fhirlink.sync.tasks.sync_resume_stale.delay"),
        ):
            count = schedule_incremental_syncs()
        ids = [call.kwargs["args"][0] for call in apply_async.call_args_list]
        assert count == len(ids)
        return sorted(ids)

    assert scheduled() == [str(other.pk)]

    api = api_client_for(connected.patient, scope="connections")
    cache.delete(f"throttle_sync_request_{connected.patient.user.pk}")
    with (
        mock.patch("fhirlink.sync.tasks.sync_connection.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = api.post(f"/api/v1/connections/{connected.pk}/sync")
    assert response.status_code == 202, response.content
    assert [call.kwargs["args"][0] for call in apply_async.call_args_list] == [str(connected.pk)]
    SyncRun.objects.filter(connection=connected).update(status=SyncRunStatus.SUCCEEDED)

    EndpointHealth.objects.filter(fhir_base_url=BASE).update(state=EndpointState.UP)
    assert scheduled() == sorted([str(connected.pk), str(other.pk)])
