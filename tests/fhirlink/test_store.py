"""The synced-record store: idempotent upserts, filter columns, validation flags, encryption,
erasure, and Cerner's published R4 examples in and out unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirlink import hooks, vault
from fhirlink.models import Connection, ConnectionStatus, HealthSystem, SyncedResource
from fhirlink.services.sync.prepare import canonical_json, references_in
from fhirlink.services.sync.store import (
    columns_extract,
    payload_loads,
    referenced_ids,
    resource_payload,
    resource_upsert_page,
    resources_tombstone,
)
from tests.factories import PatientFactory

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "cerner-r4-examples"


@pytest.fixture
def connection(db: None) -> Connection:
    hs = HealthSystem.objects.create(
        slug="store-test",
        name="Store test",
        fhir_base_url="https://fhir.example.test/r4/t1",
        client_id="c",
        redirect_uri="https://portal.example.test/fhirlink/callback",
    )
    return Connection.objects.create(
        patient=PatientFactory.create(),
        health_system=hs,
        status=ConnectionStatus.ACTIVE,
        fhir_base_url=hs.fhir_base_url,
        fhir_patient_id="12724066",
    )


def obs(fhir_id: str, value: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": fhir_id,
        "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05.000Z"},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": "https://fhir.cerner.com/t1/codeSet/72", "code": "2700590"},
                {"system": "http://loinc.org", "code": "2345-7"},
            ]
        },
        "subject": {"reference": "Patient/12724066"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "issued": "2024-01-01T11:00:00.000Z",
        "valueQuantity": {"value": value, "unit": "mg/dL"},
        "performer": [{"reference": "Practitioner/77"}],
        **extra,
    }


def upsert(connection: Connection, resources: list[dict[str, Any]], **kw: Any) -> Any:
    return resource_upsert_page(
        connection=connection,
        resources=resources,
        source_base_url=connection.fhir_base_url,
        **kw,
    )


def test_upsert_is_idempotent_and_counts(connection):
    first = upsert(connection, [obs("1"), obs("2")])
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    again = upsert(connection, [obs("1"), obs("2")])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    changed = upsert(connection, [obs("1", value=9.0), obs("3")])
    assert (changed.created, changed.updated, changed.unchanged) == (1, 1, 0)
    assert SyncedResource.objects.filter(connection=connection).count() == 3
    row = SyncedResource.objects.get(connection=connection, fhir_id="1")
    assert resource_payload(row) == obs("1", value=9.0)


def test_filter_columns_keyed_hashes_payload_encrypted(connection):
    """The filter columns are HMACs under the index key (issue #19 item 9); the ORM's filters
    take the clear value and find the row."""
    upsert(connection, [obs("1")])
    row = SyncedResource.objects.get(connection=connection, fhir_id="1")
    active = vault.index_active_key_id()
    assert (row.resource_type, row.category, row.code_system, row.code, row.index_key_id) == (
        "Observation",
        vault.index_hash("category", "laboratory"),
        vault.index_hash("code_system", "http://loinc.org"),
        vault.index_hash("code", "2345-7"),
        active,
    )
    assert len(row.code) == 32
    assert "2345" not in row.code
    assert row.effective_at is not None
    assert row.effective_at.isoformat() == "2024-01-01T10:00:00+00:00"
    assert (row.status, row.version_id, row.valid, row.entered_in_error) == (
        vault.index_hash("status", "final"),
        "1",
        True,
        False,
    )
    found = SyncedResource.objects.filter(
        connection=connection, code="2345-7", category="laboratory", status__in=["final"]
    )
    assert list(found.values_list("fhir_id", flat=True)) == ["1"]
    assert not SyncedResource.objects.filter(connection=connection, code="2345-8").exists()
    assert row.source_base_url == "https://fhir.example.test/r4/t1"
    assert b"2345-7" not in bytes(row.payload)
    assert b"mg/dL" not in bytes(row.payload)
    # Bound to its row: the ciphertext does not open as another resource.
    cipher = vault.patient_cipher(patient_id=connection.patient_id)
    with pytest.raises(vault.DecryptionFailed):
        cipher.decrypt(row.payload, aad="fhirlink.synced:x:Observation/2")


def test_invalid_resource_is_stored_flagged_never_dropped(connection):
    broken = obs("bad", status="not-a-status", valueQuantity={"value": "NaN-ish"})
    result = upsert(connection, [broken])
    assert (result.created, result.invalid) == (1, 1)
    row = SyncedResource.objects.get(connection=connection, fhir_id="bad")
    assert row.valid is False
    assert row.validation_error.startswith("invalid: ")
    assert "NaN-ish" not in row.validation_error
    assert resource_payload(row) == broken


def test_entered_in_error_and_masked(connection):
    masked = obs(
        "eie",
        status="entered-in-error",
        code={
            "coding": [
                {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                            "valueCode": "masked",
                        }
                    ]
                }
            ]
        },
    )
    upsert(connection, [masked, obs("ok")])
    row = SyncedResource.objects.get(connection=connection, fhir_id="eie")
    assert (row.entered_in_error, row.masked, row.status) == (
        True,
        True,
        vault.index_hash("status", "entered-in-error"),
    )
    assert list(SyncedResource.objects.live().values_list("fhir_id", flat=True)) == ["ok"]
    cols = columns_extract(
        {
            "resourceType": "Condition",
            "id": "c",
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
            "clinicalStatus": {"coding": [{"code": "active"}]},
        }
    )
    assert (cols.entered_in_error, cols.status, cols.clinical_status) == (
        True,
        "entered-in-error",
        "active",
    )


def test_reconcile_tombstones_what_the_server_no_longer_returns(connection):
    upsert(connection, [obs("1"), obs("2"), obs("3")])
    run_id = "6c1b1f4e-2c49-4a4c-9d0a-1f6a8a1f0a01"
    from fhirlink.models import SyncRun

    SyncRun.objects.create(pk=run_id, connection=connection, trigger="schedule", status="running")
    upsert(connection, [obs("1"), obs("3", value=2.0)], sync_run_id=run_id, mark_seen=True)
    assert (
        resources_tombstone(connection=connection, resource_type="Observation", sync_run_id=run_id)
        == 1
    )
    gone = SyncedResource.objects.get(connection=connection, fhir_id="2")
    assert gone.deleted_at is not None
    # Back on the server: un-tombstoned.
    result = upsert(connection, [obs("2")])
    assert result.updated == 1
    gone.refresh_from_db()
    assert gone.deleted_at is None


def test_a_date_windowed_reconcile_keeps_undated_resources(connection):
    undated = obs("u1")
    del undated["effectiveDateTime"]
    upsert(connection, [obs("1"), obs("2"), undated])
    run_id = "6c1b1f4e-2c49-4a4c-9d0a-1f6a8a1f0a02"
    from fhirlink.models import SyncRun

    SyncRun.objects.create(pk=run_id, connection=connection, trigger="schedule", status="running")
    upsert(connection, [obs("1")], sync_run_id=run_id, mark_seen=True)
    assert (
        resources_tombstone(
            connection=connection,
            resource_type="Observation",
            sync_run_id=run_id,
            keep_undated=True,
        )
        == 1
    )
    live = set(
        SyncedResource.objects.live()
        .filter(connection=connection)
        .values_list("fhir_id", flat=True)
    )
    assert live == {"1", "u1"}


def test_erase_returns_counts_per_type(connection):
    upsert(connection, [obs("1"), obs("2"), {"resourceType": "Practitioner", "id": "77"}])
    assert hooks.synced_data_erase(
        connection_id=str(connection.pk), patient_id=str(connection.patient_id)
    ) == {"Observation": 2, "Practitioner": 1}
    assert not SyncedResource.objects.filter(connection=connection).exists()


def test_references_found_outside_contained():
    found = referenced_ids(
        [
            obs("1"),
            {
                "resourceType": "MedicationAdministration",
                "id": "m",
                "contained": [
                    {
                        "resourceType": "Medication",
                        "id": "x",
                        "manufacturer": {"reference": "Organization/9"},
                    }
                ],
                "medicationReference": {"reference": "#x"},
                "performer": [
                    {"actor": {"reference": "https://fhir.example.test/r4/t1/Practitioner/5"}}
                ],
                "request": {"reference": "MedicationRequest/3"},
            },
        ],
        {"Practitioner", "Organization", "Location", "Medication"},
    )
    assert found == {("Practitioner", "77"), ("Practitioner", "5")}


def test_references_read_from_canonical_json_are_the_walks():
    """The pool's fast path (a regular expression over the canonical JSON) finds what the walk
    finds: escaped characters, absolute URLs, trailing slashes, query strings, references in
    strings, and contained resources (walked) included."""
    wanted = {"Practitioner", "Organization", "Location", "Medication"}
    resources = [
        obs("1", performer=[{"reference": "Practitioner/77"}, {"reference": "Practitioner/5/"}]),
        obs("2", performer=[{"reference": 'Organization/a\\"b'}, {"reference": "Location/?x=1"}]),
        obs("3", note=[{"text": '{"reference":"Practitioner/9"}'}], performer=[{"display": "x"}]),
        obs("4", performer=[{"reference": "https://h.example/r4/t/Location/12"}]),
        obs(
            "5",
            performer=[{"reference": "#c"}],
            contained=[
                {
                    "resourceType": "Practitioner",
                    "id": "c",
                    "managingOrganization": {"reference": "Organization/8"},
                }
            ],
        ),
        obs("6", performer=[{"reference": "Practitioner/\u00e9t\u00e9"}]),
    ]
    for resource in resources:
        found = references_in(resource, canonical_json(resource), wanted)
        assert found == referenced_ids([resource], wanted), resource["id"]
    assert referenced_ids(resources, wanted) == {
        ("Practitioner", "77"),
        ("Practitioner", "5"),
        ("Organization", 'a\\"b'),
        ("Location", "12"),
        ("Practitioner", "\u00e9t\u00e9"),
    }


# --- Cerner's published examples ---------------------------------------------------------------


def _resources(document: Any) -> list[dict[str, Any]]:
    """Every resource with an id in an example file (a resource, or a Bundle's entries, including
    the published defects: bare entries and doubly wrapped entries)."""
    if not isinstance(document, dict):
        return []
    if document.get("resourceType") == "Bundle":
        found: list[dict[str, Any]] = []
        for entry in document.get("entry") or []:
            item = entry.get("resource", entry) if isinstance(entry, dict) else None
            if isinstance(item, dict) and "resource" in item and "resourceType" not in item:
                item = item["resource"]
            found.extend(_resources(item))
        return found
    if isinstance(document.get("resourceType"), str) and document.get("id"):
        return [document]
    return []


def test_cerner_examples_ingest_and_come_back_out_equal(connection):
    if not EXAMPLES.is_dir():
        pytest.skip(f"Cerner's examples are not available at {EXAMPLES}")
    files = sorted(EXAMPLES.rglob("*.json"))
    assert len(files) > 100
    ingested = 0
    cipher = vault.patient_cipher(patient_id=connection.patient_id)
    for path in files:
        resources = _resources(json.loads(path.read_text()))
        if not resources:
            continue  # auth documents, fragments, OperationOutcomes and other id-less documents
        # One file at a time: the same id appears in several files with different contents.
        by_key = {(r["resourceType"], r["id"]): r for r in resources}
        upsert(connection, list(by_key.values()), cipher=cipher)
        for (rtype, fhir_id), resource in by_key.items():
            row = SyncedResource.objects.get(
                connection=connection, resource_type=rtype, fhir_id=fhir_id
            )
            assert resource_payload(row, cipher=cipher) == resource, path.name
            canonical = canonical_json(resource)
            for_refs = {"Practitioner", "Organization", "Location", "Medication", "Patient"}
            assert references_in(resource, canonical, for_refs) == referenced_ids(
                [resource], for_refs
            ), path.name
            ingested += 1
    assert ingested >= 200
    # A published defect (timestamps with spaces) is stored as received and flagged.
    broken = SyncedResource.objects.filter(connection=connection, valid=False)
    assert broken.exists()


def test_an_update_overwrites_the_row_in_place_and_keeps_its_creation_time(connection):
    upsert(connection, [obs("1")])
    before = SyncedResource.objects.get(connection=connection, fhir_id="1")
    result = upsert(
        connection,
        [obs("1", value=2.0, status="amended", effectiveDateTime="2023-05-06T07:08:09Z")],
    )
    assert (result.created, result.updated) == (0, 1)
    after = SyncedResource.objects.get(connection=connection, fhir_id="1")
    assert after.pk == before.pk
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at
    assert after.status == vault.index_hash("status", "amended")
    assert after.effective_at is not None
    assert after.effective_at.isoformat() == "2023-05-06T07:08:09+00:00"
    assert resource_payload(after)["valueQuantity"]["value"] == 2.0


MASKED = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "masked"}
    ]
}


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Observation", "id": "1", "valueQuantity": {"value": 36.6}},
        {"resourceType": "Observation", "id": "nan", "valueQuantity": {"value": float("inf")}},
        {"resourceType": "Observation", "id": "big", "valueInteger": 2**80},
        {"resourceType": "Observation", "id": "u", "note": [{"text": "Température 🩺 \u2028"}]},
    ],
    ids=["plain", "infinity", "big-int", "unicode"],
)
def test_payload_loads_reads_what_canonical_json_writes(resource):
    """orjson first, `json` for what orjson refuses: the same dict as `json.loads` either way."""
    canonical = canonical_json(resource)
    assert payload_loads(canonical) == json.loads(canonical) == resource


def test_the_stores_date_adaptation_is_the_backends(db):
    from datetime import UTC, datetime, timedelta, timezone

    from django.db import connection as db_connection

    from fhirlink.services.sync.store import _date_adapter

    adapt = _date_adapter()
    for value in [
        None,
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
    ]:
        assert adapt(value) == db_connection.ops.adapt_datetimefield_value(value)
