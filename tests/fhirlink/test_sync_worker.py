"""The sync engine in a real Celery worker against the sandbox: the first sync at connect, a
re-run without duplicates, each fault ending with exactly the server's data, a worker killed
with SIGKILL mid-sync resuming to the same state, consent revoked and grant revoked mid-sync."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Count
from django.utils import timezone

from fhirlink.models import (
    Connection,
    ConnectionStatus,
    SyncedResource,
    SyncQuarantine,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncWatermark,
)
from fhirlink.sync.runs import sync_request
from fhirlink.sync.runs import sync_resume_stale as stale_connections
from fhirlink.sync.tasks import sync_resume_stale
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_revoke
from tests.fhirlink.test_sync_engine import download_all, stored

pytestmark = [pytest.mark.integration]

FINISHED = {SyncRunStatus.SUCCEEDED, SyncRunStatus.PARTIAL, SyncRunStatus.FAILED}


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """A real worker with short timeouts, backoff and lease (set before it starts)."""
    monkeypatch.setenv("FHIRLINK_HTTP_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("FHIRLINK_HTTP_READ_TIMEOUT", "1.5")
    monkeypatch.setenv("FHIRLINK_SYNC_BACKOFF_BASE", "0.05")
    monkeypatch.setenv("FHIRLINK_SYNC_BACKOFF_MAX", "1")
    monkeypatch.setenv("FHIRLINK_SYNC_LEASE_SECONDS", "3")
    return request.getfixturevalue("celery_worker_process")


def wait_finished(
    connection: Connection, runs: int = 1, timeout: float = 120, *, resume: bool = False
) -> SyncRun:
    """Wait for the connection's `runs`-th run to finish. With `resume`, do what the beat does
    whenever the run is stale (its lease ran out: a step message, an extra's among them, was
    lost with a killed worker): send `fhirlink.sync_resume_stale`."""
    deadline = time.monotonic() + timeout
    resumed = 0.0
    while time.monotonic() < deadline:
        done = SyncRun.objects.filter(connection=connection, status__in=FINISHED)
        if done.count() >= runs:
            latest = done.order_by("-finished_at").first()
            assert latest is not None
            return latest
        # At most once a lease (the worker's: 3 s), as the beat's tick is far apart.
        if resume and time.monotonic() - resumed > 3 and str(connection.pk) in stale_connections():
            sync_resume_stale.apply_async()
            resumed = time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"sync did not finish: {list(SyncRun.objects.values('status', 'errors'))}")


def assert_no_duplicates(connection: Connection) -> None:
    dupes = (
        SyncedResource.objects.filter(connection=connection)
        .values("resource_type", "fhir_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(dupes) == []


def reset_store(connection: Connection) -> None:
    SyncedResource.objects.filter(connection=connection).delete()
    SyncWatermark.objects.filter(connection=connection).delete()


def test_first_sync_at_connect_and_rerun(sandbox, sandbox_connect, worker):
    connection = sandbox_connect("nancy")  # the launch enqueues the first sync
    run = wait_finished(connection)
    assert run.status == SyncRunStatus.SUCCEEDED, run.errors
    assert run.trigger == "connect"
    expected = download_all(connection)
    assert stored(connection) == expected
    docs = sum(1 for k in expected if k[0] == "DocumentReference")
    assert (
        SyncedResource.objects.filter(connection=connection, resource_type="Binary").count() == docs
    )
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.last_synced_at is not None
    total = SyncedResource.objects.filter(connection=connection).count()

    assert sync_request(connection_id=connection.pk) is not None
    again = wait_finished(connection, runs=2)
    assert again.status == SyncRunStatus.SUCCEEDED
    assert SyncedResource.objects.filter(connection=connection).count() == total
    assert sum(c["created"] + c["updated"] for c in again.counts.values()) == 0
    assert_no_duplicates(connection)


FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("429 storm", {"rate_limit": {"retry_after": 1, "times": 6}}),
    ("5xx", {"status": {"code": 503, "times": 4}}),
    ("500", {"status": {"code": 500, "times": 3}}),
    ("timeouts", {"timeout": {"seconds": 3, "times": 2}}),
    ("not JSON", {"malformed_json": {"times": 2}}),
    ("truncated page", {"truncated_page": {"times": 1}}),
    ("not FHIR", {"invalid_fhir": {"times": 1}}),
    ("looping next link", {"looping_next": {"times": 2}}),
]


def test_each_fault_loses_and_duplicates_nothing(sandbox, sandbox_connect, worker):
    connection = sandbox_connect("nancy")
    wait_finished(connection)
    expected = download_all(connection)
    runs = 1
    for name, faults in FAULTS:
        reset_store(connection)
        sandbox.set_faults(**faults)
        sync_request(connection_id=connection.pk)
        runs += 1
        run = wait_finished(connection, runs=runs)
        sandbox.clear_faults()
        assert run.status == SyncRunStatus.SUCCEEDED, (name, run.errors)
        assert stored(connection) == expected, name
        assert_no_duplicates(connection)
    assert SyncQuarantine.objects.filter(connection=connection).count() >= 3
    assert set(SyncQuarantine.objects.values_list("error", flat=True)) >= {
        "page_not_json",
        "page_not_fhir_searchset",
    }


def test_worker_killed_mid_sync_resumes_to_the_same_state(sandbox, sandbox_connect, worker):
    sandbox.set_faults(latency_ms={"ms": 250})
    connection = sandbox_connect("tim")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if SyncRun.objects.filter(connection=connection, pages__gte=4).exists():
            break
        time.sleep(0.05)
    worker.kill()
    run = SyncRun.objects.get(connection=connection)
    assert run.status == SyncRunStatus.RUNNING
    sandbox.clear_faults()
    # The lease runs out (the clock moved on): the run and the streams whose step messages
    # died with the worker (unacknowledged, redelivered only after the broker's visibility
    # timeout) are stale, and the beat's resume takes the run over.
    past = timezone.now() - timedelta(seconds=10)
    SyncRun.objects.filter(pk=run.pk).update(lease_until=past)
    SyncStream.objects.filter(run=run).update(stepped_at=past)
    worker.start()
    run = wait_finished(connection, resume=True)
    assert run.status == SyncRunStatus.SUCCEEDED, run.errors
    assert run.attempts == 2
    assert SyncRun.objects.filter(connection=connection).count() == 1
    assert stored(connection) == download_all(connection)
    assert_no_duplicates(connection)


def test_consent_revoked_mid_sync_stops_at_the_next_page(sandbox, sandbox_connect, worker):
    sandbox.set_faults(latency_ms={"ms": 300})
    connection = sandbox_connect("tim")
    deadline = time.monotonic() + 60
    while not SyncRun.objects.filter(connection=connection, pages__gte=2).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    consent_revoke(patient=connection.patient, purpose=Purpose.EHR_SYNC)
    run = wait_finished(connection)
    sandbox.clear_faults()
    assert run.status == SyncRunStatus.PARTIAL
    assert {"code": "consent_revoked"} in run.errors
    # What was stored is exactly what the server returned (no half-written page).
    expected = download_all(connection)
    got = stored(connection)
    assert got
    assert set(got) < set(expected)
    assert all(got[k] == expected[k] for k in got)


def test_grant_revoked_mid_sync_then_reconnect(sandbox, sandbox_connect, worker):
    connection = sandbox_connect("nancy")
    wait_finished(connection)
    expected = download_all(connection)
    reset_store(connection)
    sandbox.set_switches(refresh_min_interval_seconds=0)
    Connection.objects.filter(pk=connection.pk).update(last_refresh_attempt_at=None)
    sandbox.set_faults(revoke_grant_after={"requests": 5})
    sync_request(connection_id=connection.pk)
    run = wait_finished(connection, runs=2)
    sandbox.clear_faults()
    assert run.status in {SyncRunStatus.PARTIAL, SyncRunStatus.FAILED}
    assert {"code": "connection_needs_reauth"} in run.errors
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    got = stored(connection)
    assert all(got[k] == expected[k] for k in got)
    assert_no_duplicates(connection)
    # Reconnecting starts a sync that completes the store.
    again = sandbox_connect("nancy", patient=connection.patient)
    assert again.pk == connection.pk
    final = wait_finished(connection, runs=3)
    assert final.status == SyncRunStatus.SUCCEEDED, final.errors
    assert stored(connection) == expected
    assert_no_duplicates(connection)


def test_progress_is_visible_in_the_connections_api_while_the_sync_runs(
    sandbox, sandbox_connect, worker, api_client_for
):
    """What the app shows while the first sync runs: the run, its status, an overall percent
    that only grows, and per type the streams done and the resources fetched so far; at the
    end, every type done and the counts of what was stored."""
    sandbox.set_faults(latency_ms={"ms": 150})
    connection = sandbox_connect("tim")
    api = api_client_for(connection.patient, scope="connections")
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = api.get(f"/api/v1/connections/{connection.pk}")
        assert response.status_code == 200
        progress = response.json()["sync"]
        if progress is not None:
            seen.append(progress)
            if progress["status"] in FINISHED:
                break
        time.sleep(0.05)
    sandbox.clear_faults()
    running = [p for p in seen if p["status"] == SyncRunStatus.RUNNING and p["types"]]
    assert running, [p["status"] for p in seen]
    assert any(0 < p["percent"] < 100 for p in running)
    assert any(
        t["status"] in {"running", "pending"} and t["streams_done"] < t["streams"]
        for p in running
        for t in p["types"].values()
    )
    percents = [p["percent"] for p in seen]
    fetched = [p["fetched"] for p in seen]
    assert percents == sorted(percents)  # never goes back
    assert fetched == sorted(fetched)
    assert len(set(fetched)) > 2  # moved while the app watched
    final = seen[-1]
    assert final["status"] == SyncRunStatus.SUCCEEDED, final["errors"]
    assert final["percent"] == 100
    assert final["types_done"] == final["types_total"] == len(final["types"]) > 5
    assert all(t["status"] == "done" for t in final["types"].values())
    stored_rows = SyncedResource.objects.filter(connection=connection, is_reference=False)
    by_type = dict(
        stored_rows.exclude(resource_type="Binary")
        .values_list("resource_type")
        .annotate(n=Count("id"))
        .values_list("resource_type", "n")
    )
    assert {t: c["created"] for t, c in final["types"].items() if c["created"]} == by_type
    # Nothing in the progress names a resource, a URL or a token.
    text = str(seen)
    assert "http" not in text
    assert "Bearer" not in text
