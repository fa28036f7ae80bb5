"""The sync engine in-process against the sandbox (live server): full sync stores exactly what
the server returns, re-runs write nothing, incremental picks up changes, faults lose nothing."""

from __future__ import annotations

from typing import Any

import pytest

from fhirlink import http
from fhirlink.models import Connection, SyncedResource, SyncRun, SyncWatermark
from fhirlink.services.sync import plan
from fhirlink.services.sync.store import resource_payload
from fhirlink.services.tokens import connection_access_token
from fhirlink.sync.inline import sync_connection_run
from patientportal.accesslog.models import AccessEvent

pytestmark = [pytest.mark.integration]


def download_all(connection: Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """A plain loop over every permitted type's pages (what the store must equal)."""
    token = connection_access_token(connection_id=connection.pk)
    headers = {"Authorization": f"Bearer {token}"}
    base = connection.fhir_base_url
    pid = connection.fhir_patient_id
    out: dict[tuple[str, str], dict[str, Any]] = {}
    types = plan.permitted_types(
        granted=connection.granted_resources,
        supported=(connection.health_system.discovery or {})["resources"],
    )
    for rtype in types:
        if rtype == "Patient":
            out[("Patient", pid)] = http.get_json(f"{base}/Patient/{pid}", headers=headers)
            continue
        params = plan.search_params(rtype, patient_id=pid)
        url = f"{base}/{rtype}?" + "&".join(f"{k}={v}" for k, v in params.items())
        while url:
            bundle = http.get_json(url, headers=headers)
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                if resource["resourceType"] != "OperationOutcome":
                    out[(resource["resourceType"], resource["id"])] = resource
            url = next((ln["url"] for ln in bundle.get("link", []) if ln["relation"] == "next"), "")
    return out


def stored(connection: Connection) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (row.resource_type, row.fhir_id): resource_payload(row)
        for row in SyncedResource.objects.filter(
            connection=connection, is_reference=False, deleted_at__isnull=True
        ).exclude(resource_type="Binary")
    }


def test_full_sync_then_rerun_then_incremental(sandbox, sandbox_connect):
    connection = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    expected = download_all(connection)
    got = stored(connection)
    assert set(got) == set(expected)
    assert got == expected
    run = SyncRun.objects.get(connection=connection)
    assert run.counts["Observation"]["created"] == len(
        [k for k in expected if k[0] == "Observation"]
    )
    # References and attachments.
    refs = SyncedResource.objects.filter(connection=connection, is_reference=True)
    assert refs.filter(resource_type="Practitioner").exists()
    docs = [k for k in expected if k[0] == "DocumentReference"]
    assert SyncedResource.objects.filter(
        connection=connection, resource_type="Binary"
    ).count() == len(docs)
    eie = SyncedResource.objects.filter(connection=connection, entered_in_error=True)
    assert eie.exists()
    assert (
        not SyncedResource.objects.live()
        .filter(connection=connection, entered_in_error=True)
        .exists()
    )

    # One access-log row per run: the system writing the patient's synced data.
    event = AccessEvent.objects.get(patient_id=connection.patient_id, action="sync_write")
    assert (event.actor_kind, event.actor_role, event.purpose) == (
        "system",
        "fhirlink.sync_connection",
        "ehr_sync",
    )
    assert event.query["sync_run"] == str(run.pk)
    assert event.query["written"] == sum(c["created"] + c["updated"] for c in run.counts.values())

    # Again: no duplicates, nothing written.
    total = SyncedResource.objects.filter(connection=connection).count()
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    assert SyncedResource.objects.filter(connection=connection).count() == total
    second = SyncRun.objects.filter(connection=connection).order_by("-created_at").first()
    assert second is not None
    assert sum(c["created"] + c["updated"] for c in second.counts.values()) == 0
    assert SyncWatermark.objects.filter(connection=connection).count() >= 10


def test_incremental_picks_up_new_updated_and_entered_in_error(sandbox, sandbox_connect):
    connection = sandbox_connect("joe")
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    before = SyncedResource.objects.filter(connection=connection).count()
    sandbox.advance_clock(days=1)
    changes = sandbox.make_changes(
        "joe", new=3, updated=2, entered_in_error=1, types=("Observation", "Condition")
    )
    assert len(changes) == 12
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.filter(connection=connection).order_by("-created_at").first()
    assert run is not None
    # Incremental: one _lastUpdated search per type, only the changes written.
    assert run.counts["Observation"]["created"] == 3
    assert run.counts["Observation"]["updated"] == 3
    assert run.counts["Condition"]["created"] == 3
    assert run.counts["Condition"]["updated"] == 3
    assert SyncedResource.objects.filter(connection=connection).count() == before + 6
    assert stored(connection) == download_all(connection)
    for change in changes:
        row = SyncedResource.objects.get(
            connection=connection, resource_type=change.resource_type, fhir_id=change.id
        )
        assert row.entered_in_error == (change.kind == "entered-in-error")


def test_attachments_are_fetched_while_the_other_streams_run(sandbox, sandbox_connect, monkeypatch):
    """Once the DocumentReferences are stored, their Binaries are listed (once) and fetched
    beside the remaining streams, not in a tail after them; a rerun lists none."""
    from fhirlink.sync import extras

    connection = sandbox_connect("nancy")
    listed: list[tuple[int, list[str]]] = []
    original = extras.binary_jobs

    def listing(run: Any, **kwargs: Any) -> list[Any]:
        jobs = original(run, **kwargs)
        pending = run.streams.filter(status="pending").values_list("resource_type", flat=True)
        listed.append((len(jobs), sorted(pending)))
        return jobs

    monkeypatch.setattr(extras, "binary_jobs", listing)
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    binaries = SyncedResource.objects.filter(connection=connection, resource_type="Binary").count()
    run = SyncRun.objects.filter(connection=connection).latest("created_at")
    assert len(listed) == 1  # listed once, as the DocumentReferences ended
    assert binaries == run.counts["DocumentReference"]["fetched"] == listed[0][0] > 0
    assert listed[0][1]  # other streams still to fetch then
    assert "DocumentReference" not in listed[0][1]

    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    assert [n for n, _ in listed[1:]] == [0]  # nothing left to download


def test_references_are_fetched_once_each_and_a_failed_one_again_later(
    sandbox, sandbox_connect, monkeypatch
):
    """A referenced resource is fetched as soon as a stored page names it (its step enqueued
    with the page), once. One that fails is reported once, with its id; a full pass again
    fetches only it, and so does the next incremental sync, until it is stored."""
    from fhirlink.ehr.fhir import FhirClient

    connection = sandbox_connect("nancy")
    fetched: list[tuple[str, str]] = []
    failing: list[tuple[str, str]] = []
    original = FhirClient.read

    def read(self: FhirClient, resource_type: str, fhir_id: str) -> Any:
        if resource_type in plan.REFERENCE_TYPES:
            fetched.append((resource_type, fhir_id))
            if not failing:
                failing.append((resource_type, fhir_id))
            if (resource_type, fhir_id) == failing[0]:
                raise http.EhrTerminal("not found", status=404)
        return original(self, resource_type, fhir_id)

    monkeypatch.setattr(FhirClient, "read", read)
    assert sync_connection_run(connection_id=connection.pk) == "partial"
    run = SyncRun.objects.filter(connection=connection).latest("created_at")
    assert len(fetched) == len(set(fetched)) > 1  # each once
    recorded = {tuple(r.split("/", 1)) for r in run.references}
    assert set(fetched) == recorded
    refs = set(
        SyncedResource.objects.filter(connection=connection, is_reference=True).values_list(
            "resource_type", "fhir_id"
        )
    )
    assert refs == recorded - {failing[0]}
    assert [e for e in run.errors if e["code"] == "http_404"] == [
        {"type": failing[0][0], "code": "http_404", "id": failing[0][1]}
    ]

    # A full pass again (the pages naming the references are read again): only the reference
    # that failed is asked for; the stored ones are kept for the connection.
    SyncWatermark.objects.filter(connection=connection).delete()
    fetched.clear()
    assert sync_connection_run(connection_id=connection.pk) == "partial"
    assert fetched == [failing[0]]

    # An incremental sync (no page names it again) asks for it again; once stored, the next
    # run asks for no reference at all.
    failed = failing.pop(0)
    failing.append(("none", "none"))  # the first stops failing
    fetched.clear()
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    assert fetched == [failed]
    assert (
        set(
            SyncedResource.objects.filter(connection=connection, is_reference=True).values_list(
                "resource_type", "fhir_id"
            )
        )
        == recorded
    )
    fetched.clear()
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    assert fetched == []
