"""Attacks on data at rest and on what a patient's own views give away (issue #19, items 8, 9 and
the access-log part of 10), one test per attack.

* A database dump alone said who has which diagnosis: the synced-record store kept code system,
  code, status and category in clear beside the patient id, and the connection row kept the
  EHR login name. Now the filter columns are HMAC-SHA256 under an index key held outside the
  database and the login name is sealed by the vault.
* A purge (disconnect with erase, account deletion) left a prepared export "ready" with the
  erased data in it.
* The patient-facing access log exposed the installation-wide sequence number (a patient could
  watch everyone's access volume).

Requirements: HIPAA 45 CFR 164.312(a)(2)(iv) (encryption and decryption of ePHI at rest) and
164.312(c)(1) (integrity), OWASP ASVS 5.0 V14 Data Protection (14.2.x sensitive data is not
kept longer or in more places than needed; 14.3 data at rest) and V11 Cryptography (11.2 keys
kept out of the data store, rotatable; 11.4 keyed hashes), UK GDPR Art. 17 (erasure) and
Art. 32(1)(a) (pseudonymisation and encryption).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection as db
from django.urls import reverse
from rest_framework.test import APIClient

from fhirlink import vault
from fhirlink.models import Connection, SyncedResource
from fhirlink.records import export as records_export
from fhirlink.services.connections import connection_disconnect, connection_disconnect_all
from fhirlink.services.sync.prepare import columns_extract
from fhirlink.services.sync.store import resource_payload
from fhirlink.sync.inline import sync_connection_run
from patientportal.accesslog.models import AccessAction, AccessEvent, ActorKind
from patientportal.accesslog.services import access_log_record
from patientportal.accounts.models import Patient
from tests.factories import PatientFactory
from tests.fhirlink.conftest import sandbox_connect  # noqa: F401 (the fixture, for this module)
from tests.fhirlink.test_records_api import make_connection, observation, seed_chart, upsert

pytestmark = pytest.mark.django_db

CLINICAL = (
    "Condition",
    "Observation",
    "AllergyIntolerance",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "Encounter",
)


def _dump(table: str) -> list[dict[str, str]]:
    """`SELECT *` of a table as an attacker with a dump sees it: every value as text (bytes as
    Latin-1, so any clear text inside them shows)."""
    with db.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {db.ops.quote_name(table)}")
        names = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
    out = []
    for row in rows:
        values = {}
        for name, value in zip(names, row, strict=True):
            if isinstance(value, int | float):
                continue  # ids and sizes: a number equal to a short code says nothing
            if isinstance(value, memoryview | bytes):
                values[name] = bytes(value).decode("latin-1")
            else:
                values[name] = "" if value is None else str(value)
        out.append(values)
    return out


def _texts(resource: dict[str, Any]) -> set[str]:
    """Display texts of a resource's codes (what names a diagnosis in words)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key in ("display", "text"):
                if isinstance(value.get(key), str) and len(value[key]) >= 6:
                    found.add(value[key])
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for field in ("code", "category", "medicationCodeableConcept", "vaccineCode", "type"):
        walk(resource.get(field))
    return found


@pytest.mark.integration
def test_database_dump_does_not_say_who_has_which_diagnosis(
    sandbox: Any,
    sandbox_connect: Callable[..., Connection],  # noqa: F811 (the imported fixture)
) -> None:
    """HIPAA 164.312(a)(2)(iv), ASVS 5.0 V14.3 / V11.4: after a real sync, a raw SQL dump of
    the store and the connection tables holds no code, code system, display text, status or
    category of any synced resource, and no EHR login name; the API still finds the records
    by code, category and status (the filter hashes its value)."""
    connection = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    rows = list(SyncedResource.objects.filter(connection=connection, is_reference=False))
    assert len(rows) > 20
    clear: dict[str, set[str]] = {"code": set(), "system": set(), "word": set(), "text": set()}
    for row in rows:
        resource = resource_payload(row)
        if resource["resourceType"] not in CLINICAL:
            continue
        cols = columns_extract(resource)
        clear["code"] |= {cols.code} - {""}
        clear["system"] |= {cols.code_system} - {""}
        clear["word"] |= {cols.status, cols.clinical_status, cols.category} - {""}
        clear["text"] |= _texts(resource)
    assert clear["code"]
    assert clear["word"]
    assert clear["text"]
    assert {"active", "final"} <= clear["word"]

    store = _dump(SyncedResource._meta.db_table)
    values = {v for row in store for v in row.values()}
    for kind in ("code", "system", "word"):
        assert not values & clear[kind], kind  # no column holds one of them
    blob = "\n".join("|".join(row.values()) for row in store)
    types = {row["resource_type"] for row in store}  # in clear by design ("Procedure")
    for text in clear["text"] - types:
        assert text not in blob
    for system in clear["system"]:
        assert system not in blob
    if "22298006" in clear["code"]:
        assert "22298006" not in blob

    (conn_row,) = _dump(Connection._meta.db_table)
    conn_blob = "|".join(conn_row.values())
    assert "nancysandbox" not in conn_blob  # the sandbox's login name for Nancy (id_token sub)
    assert Connection.objects.get(pk=connection.pk).oidc_subject == "nancysandbox"

    # The filters still work on the hashed columns.
    condition = next(
        r for r in rows if r.resource_type == "Condition" and resource_payload(r).get("code")
    )
    code = columns_extract(resource_payload(condition)).code
    assert SyncedResource.objects.filter(
        connection=connection, resource_type="Condition", code=code
    ).exists()
    assert (
        SyncedResource.objects.filter(connection=connection, status__in=["final"]).count()
        == sum(1 for r in rows if columns_extract(resource_payload(r)).status == "final")
        > 0
    )


def test_index_hashes_need_a_key_that_is_not_in_the_database(
    patient: Patient, settings: Any
) -> None:
    """ASVS 5.0 V11.2 (keys out of the data store, rotatable), V14.3: the stored value of a code
    is an HMAC under FHIRLINK_INDEX_KEYS, not a plain hash anyone can recompute; with a new
    active key the filters find old rows during the rotation and `vault_rotate` re-hashes
    every row under the new key."""
    conn = make_connection(patient)
    glucose = observation(
        "X-1",
        loinc="2339-0",
        display="Glucose",
        value=5.1,
        unit="mmol/L",
        when="2024-01-02T08:00:00Z",
    )
    upsert(conn, [glucose])
    row = SyncedResource.objects.get(connection=conn, fhir_id="X-1")
    import hashlib

    assert row.code not in {
        hashlib.sha256(b"2339-0").hexdigest()[:32],
        hashlib.md5(b"2339-0").hexdigest(),
    }
    assert row.index_key_id == "dev-index-1"

    new = base64.b64encode(bytes(range(40, 72))).decode()
    settings.FHIRLINK_INDEX_KEYS = f"{settings.FHIRLINK_INDEX_KEYS},rotated:{new}"
    settings.FHIRLINK_INDEX_ACTIVE_KEY_ID = "rotated"
    assert vault.index_hash("code", "2339-0") != row.code
    # Mid-rotation: the old row is still found by its clear value.
    assert list(
        SyncedResource.objects.filter(connection=conn, code="2339-0").values_list(
            "fhir_id", flat=True
        )
    ) == ["X-1"]
    call_command("vault_rotate", "--batch-size", "10", stdout=open("/dev/null", "w"))  # noqa: SIM115
    row.refresh_from_db()
    assert (row.index_key_id, row.code) == ("rotated", vault.index_hash("code", "2339-0"))
    settings.FHIRLINK_INDEX_KEYS = f"rotated:{new}"  # the old key is dropped
    assert list(
        SyncedResource.objects.filter(
            connection=conn, code="2339-0", category="vital-signs"
        ).values_list("fhir_id", flat=True)
    ) == ["X-1"]


def _cursor_position(cursor: str) -> str:
    """The position a cursor carries, as a client can read it: DRF's base64 querystring, or a
    signed value wrapping it (the signature hides nothing)."""
    text = cursor
    for _ in range(4):
        if "p=" in text:
            return parse_qs(text)["p"][0]
        head = text.split(":")[0]
        text = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode().strip('"')
    raise AssertionError("no position in the cursor")


def _ready_export(client: APIClient) -> dict[str, Any]:
    response = client.post(reverse("fhirlink-records-exports"), {"format": "bundle"}, format="json")
    assert response.status_code == 202, response.content
    state: dict[str, Any] = response.json()
    built = records_export.export_build(state["id"])
    assert built is not None
    assert built["status"] == "ready"
    return state


def _assert_export_gone(client: APIClient, export_id: str) -> None:
    detail = client.get(reverse("fhirlink-records-export-detail", kwargs={"export_id": export_id}))
    assert detail.status_code == 200
    assert (detail.json()["status"], detail.json()["download_url"]) == ("voided", None)
    response = client.get(
        reverse("fhirlink-records-export-download", kwargs={"export_id": export_id})
    )
    assert response.status_code == 410
    body = response.json()
    assert (body["code"], body["status"]) == ("export_gone", 410)
    assert set(body) >= {"code", "message", "status", "request_id"}
    assert cache.get(f"fhirlink:records-export-blob:{export_id}") is None


def test_purge_voids_a_prepared_export(
    patient: Patient, api_client_for: Callable[..., APIClient]
) -> None:
    """UK GDPR Art. 17, ASVS 5.0 V14.2 (no copy outlives the erasure): an export prepared
    before a disconnect with purge is voided with the data, even while another connection
    keeps the patient's data key (so the blob would still decrypt)."""
    purged = seed_chart(patient)
    seed_chart(patient, prefix="K", slug="kept-health")
    client = api_client_for(patient)
    state = _ready_export(client)
    receipt = connection_disconnect(patient=patient, connection_id=purged.pk, purge=True)
    assert (receipt["purged"], receipt["data_key_destroyed"]) == (True, False)
    _assert_export_gone(client, state["id"])
    # A new export after the purge is fine, and holds only what is left.
    after = _ready_export(client)
    download = client.get(
        reverse("fhirlink-records-export-download", kwargs={"export_id": after["id"]})
    )
    assert download.status_code == 200
    ids = {e["resource"]["id"] for e in json.loads(download.content)["entry"]}
    assert ids
    assert all(i.startswith("K-") for i in ids)


def test_account_deletion_voids_a_prepared_export(
    patient: Patient, api_client_for: Callable[..., APIClient]
) -> None:
    """UK GDPR Art. 17, HIPAA 164.312(a)(2)(iv): account deletion (every connection purged, the
    data key destroyed) leaves no export ready; the download answers 410 in the error shape,
    not a server error."""
    seed_chart(patient)
    client = api_client_for(patient)
    state = _ready_export(client)
    connection_disconnect_all(patient=patient, purge=True)
    _assert_export_gone(client, state["id"])


def test_patient_access_log_hides_the_installation_sequence(
    patient: Patient, api_client_for: Callable[..., APIClient]
) -> None:
    """ASVS 5.0 V14.2 / V8.2 (no data beyond the user's own), HIPAA 164.312(b): the patient's
    access log gives opaque per-entry ids, and neither an id, a cursor nor any field carries
    the installation-wide `seq` or the chain hash; the auditor's rows keep the seq."""
    other = PatientFactory.create()
    for n in range(3):
        access_log_record(
            actor_kind=ActorKind.SYSTEM,
            actor_label="fhirlink.sync_connection",
            action=AccessAction.SYNC_WRITE,
            patient=patient,
            resource_type="Observation",
            resource_ids=[f"r{n}"],
        )
        access_log_record(actor_kind=ActorKind.SYSTEM, action=AccessAction.READ, patient=other)
    client = api_client_for(patient, scope="audit:read")
    # Reading the log is logged too: filter on the sync entries so every read sees the same.
    query = {"page_size": "2", "action": "sync_write"}
    first = client.get("/api/v1/access-log", query)
    assert first.status_code == 200
    page = first.json()
    mine = list(AccessEvent.objects.filter(patient_id=patient.pk))
    seqs = {str(e.seq) for e in AccessEvent.objects.all()}
    hashes = {e.hash for e in mine} | {e.prev_hash for e in mine}
    ids = [r["id"] for r in page["results"]]
    assert len(ids) == 2
    assert all(isinstance(i, str) and len(i) == 36 for i in ids)
    assert not set(ids) & seqs
    text = json.dumps(page["results"])
    assert not any(h in text for h in hashes)
    position = _cursor_position(parse_qs(urlsplit(page["next"]).query)["cursor"][0])
    assert position not in seqs  # the cursor carries a time, not the sequence number
    assert position.startswith(str(mine[0].occurred_at.year))
    second = client.get(page["next"]).json()
    assert len(second["results"]) == 1
    assert not {r["id"] for r in second["results"]} & set(ids)
    # Stable: the same entry has the same id on every read.
    again = client.get("/api/v1/access-log", query).json()
    assert [r["id"] for r in again["results"]] == ids
