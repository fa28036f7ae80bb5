"""Records API: summary, lists and details, trends, timeline, documents, changes, export,
ETags, isolation between patients and query counts. Data is written through the store's own
upsert (`resource_upsert_page`) with Cerner-shaped resources written here."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from fhirlink.models import Connection, HealthSystem, SyncedResource
from fhirlink.records import export as records_export
from fhirlink.services.sync.store import resource_upsert_page, resources_tombstone
from patientportal.accesslog.models import AccessEvent
from patientportal.accounts.models import Patient
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
BASE = f"https://fhir-myrecord.cerner.com/r4/{TENANT}"
CODESET72 = f"https://fhir.cerner.com/{TENANT}/codeSet/72"
LOINC = "http://loinc.org"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "cerner-r4-examples"


# --- Factories: Cerner-shaped resources ----------------------------------------------------------


def make_connection(
    patient: Patient, slug: str = "test-health", name: str = "Test Health"
) -> Connection:
    hs, _ = HealthSystem.objects.get_or_create(
        slug=slug,
        defaults={
            "name": name,
            "fhir_base_url": BASE,
            "client_id": f"records-client-{slug}",
            "redirect_uri": "http://127.0.0.1:8000/fhirlink/callback",
        },
    )
    conn: Connection = Connection.objects.create(
        patient=patient,
        health_system=hs,
        status="active",
        fhir_patient_id=f"{slug}-{str(patient.pk)[:8]}",
        fhir_base_url=BASE,
    )
    return conn


def upsert(conn: Connection, resources: list[dict[str, Any]], **kw: Any) -> Any:
    return resource_upsert_page(connection=conn, resources=resources, source_base_url=BASE, **kw)


def _cat(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": OBS_CAT, "code": code}], "text": code}]


def observation(
    fhir_id: str,
    *,
    loinc: str,
    display: str,
    value: float | None,
    unit: str,
    when: str,
    category: str = "vital-signs",
    cerner_code: str = "703535",
    status: str = "final",
    with_loinc: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    coding = [{"system": CODESET72, "code": cerner_code, "display": display, "userSelected": True}]
    if with_loinc:
        coding.append({"system": LOINC, "code": loinc, "display": display})
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id,
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000Z"},
        "status": status,
        "category": _cat(category),
        "code": {"coding": coding, "text": display},
        "subject": {"reference": "Patient/12724066"},
        "effectiveDateTime": when,
        "issued": when,
        **extra,
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    return resource


def blood_pressure(fhir_id: str, systolic: float, diastolic: float, when: str) -> dict[str, Any]:
    def comp(code: str, display: str, value: float) -> dict[str, Any]:
        return {
            "code": {
                "coding": [
                    {"system": CODESET72, "code": "703501", "display": display},
                    {"system": LOINC, "code": code, "display": display},
                ],
                "text": display,
            },
            "valueQuantity": {
                "value": value,
                "unit": "mmHg",
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }

    return {
        "resourceType": "Observation",
        "id": fhir_id,
        "status": "final",
        "category": _cat("vital-signs"),
        "code": {
            "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
            "text": "Blood pressure",
        },
        "subject": {"reference": "Patient/12724066"},
        "effectiveDateTime": when,
        "component": [
            comp("8480-6", "Systolic Blood Pressure", systolic),
            comp("8462-4", "Diastolic Blood Pressure", diastolic),
        ],
    }


def patient_resource(fhir_id: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": fhir_id,
        "active": True,
        "name": [
            {"use": "official", "text": f"Nancy {family}", "family": family, "given": ["Nancy"]}
        ],
        "telecom": [{"system": "phone", "value": "816-555-0100", "use": "home"}],
        "gender": "female",
        "birthDate": "1980-08-11",
        "address": [
            {"line": ["1 Main St"], "city": "Kansas City", "state": "MO", "postalCode": "64117"}
        ],
    }


def condition(fhir_id: str, text: str, clinical: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": fhir_id,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": text}],
            "text": text,
        },
        "subject": {"reference": "Patient/12724066"},
        "onsetDateTime": "2019-03-01",
        "recordedDate": "2019-03-02T10:00:00Z",
    }


def medication(fhir_id: str, text: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": fhir_id,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}],
            "text": text,
        },
        "subject": {"reference": "Patient/12724066"},
        "authoredOn": "2023-05-01T10:00:00Z",
        "dosageInstruction": [{"text": "1 tab PO daily"}],
    }


def allergy(fhir_id: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": fhir_id,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "category": ["medication"],
        "criticality": "high",
        "code": {"text": text},
        "patient": {"reference": "Patient/12724066"},
        "recordedDate": "2018-01-01T00:00:00Z",
        "reaction": [{"manifestation": [{"text": "Hives"}]}],
    }


def immunization(fhir_id: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": fhir_id,
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}],
            "text": "influenza vaccine",
        },
        "patient": {"reference": "Patient/12724066"},
        "occurrenceDateTime": when,
    }


def encounter(fhir_id: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": fhir_id,
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "type": [{"text": "Office Visit"}],
        "subject": {"reference": "Patient/12724066"},
        "period": {"start": when},
        "contained": [{"resourceType": "Location", "id": "loc1", "name": "Clinic A"}],
    }


def procedure(fhir_id: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": fhir_id,
        "status": "completed",
        "code": {"text": "Appendectomy"},
        "subject": {"reference": "Patient/12724066"},
        "performedDateTime": when,
    }


def document(
    fhir_id: str, when: str, binary_id: str | None = None, inline: bytes | None = None
) -> dict[str, Any]:
    attachment: dict[str, Any] = {"contentType": "application/pdf", "title": "Discharge summary"}
    if binary_id:
        attachment["url"] = f"{BASE}/Binary/{binary_id}"
    if inline is not None:
        attachment = {"contentType": "text/plain", "data": base64.b64encode(inline).decode()}
    return {
        "resourceType": "DocumentReference",
        "id": fhir_id,
        "status": "current",
        "docStatus": "final",
        "type": {
            "coding": [{"system": LOINC, "code": "18842-5", "display": "Discharge summary"}],
            "text": "Discharge Summary",
        },
        "subject": {"reference": "Patient/12724066"},
        "date": when,
        "content": [{"attachment": attachment}],
    }


def binary(fhir_id: str, body: bytes, content_type: str = "application/pdf") -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "id": fhir_id,
        "contentType": content_type,
        "data": base64.b64encode(body).decode(),
    }


PDF = b"%PDF-1.4 discharge summary body"


def seed_chart(patient: Patient, *, prefix: str = "A", slug: str = "test-health") -> Connection:
    conn = make_connection(patient, slug=slug, name=f"{slug.title()} Health")
    upsert(
        conn,
        [
            patient_resource(f"{prefix}-12724066", f"Smart{prefix}"),
            condition(f"{prefix}-C1", "Diabetes mellitus type 2"),
            condition(f"{prefix}-C2", "Old fracture", clinical="resolved"),
            medication(f"{prefix}-M1", "metformin 500 mg tablet"),
            medication(f"{prefix}-M2", "amoxicillin", status="completed"),
            allergy(f"{prefix}-AR1", "Penicillin"),
            immunization(f"{prefix}-I1", "2023-10-01T09:00:00Z"),
            observation(
                f"{prefix}-VS-T1",
                loinc="8328-7",
                display="Temperature Axillary",
                value=98.6,
                unit="[degF]",
                when="2024-01-01T09:00:00Z",
            ),
            observation(
                f"{prefix}-VS-T2",
                loinc="8310-5",
                display="Temperature",
                value=37.5,
                unit="Cel",
                when="2024-02-01T09:00:00Z",
            ),
            observation(
                f"{prefix}-VS-W1",
                loinc="29463-7",
                display="Weight",
                value=154.0,
                unit="[lb_av]",
                when="2024-01-01T09:05:00Z",
                cerner_code="2700653",
            ),
            observation(
                f"{prefix}-VS-W2",
                loinc="29463-7",
                display="Weight",
                value=70.0,
                unit="kg",
                when="2024-02-01T09:05:00Z",
                cerner_code="2700653",
            ),
            blood_pressure(f"{prefix}-VS-BP1", 120, 80, "2024-01-01T09:10:00Z"),
            blood_pressure(f"{prefix}-VS-BP2", 130, 85, "2024-02-01T09:10:00Z"),
            observation(
                f"{prefix}-L-G1",
                loinc="2339-0",
                display="Glucose Bld",
                value=5.5,
                unit="mmol/L",
                when="2024-01-02T08:00:00Z",
                category="laboratory",
                cerner_code="2700001",
            ),
            observation(
                f"{prefix}-L-G2",
                loinc="2345-7",
                display="Glucose Lvl",
                value=110,
                unit="mg/dL",
                when="2024-02-02T08:00:00Z",
                category="laboratory",
                cerner_code="2700002",
            ),
            # Cerner's entered-in-error shape: trailing space in the status, masked fields.
            observation(
                f"{prefix}-L-EIE",
                loinc="718-7",
                display="Hgb Bld-mCnc",
                value=None,
                unit="",
                when="2022-06-01T10:38:02Z",
                category="laboratory",
                status="entered-in-error ",
                dataAbsentReason={
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "code": "error",
                        }
                    ]
                },
            ),
            encounter(f"{prefix}-E1", "2024-01-01T08:30:00Z"),
            procedure(f"{prefix}-P1", "2021-05-05T12:00:00Z"),
            document(f"{prefix}-D1", "2024-01-03T12:00:00Z", binary_id=f"{prefix}-B1"),
            document(f"{prefix}-D2", "2024-01-04T12:00:00Z", inline=b"plain note"),
            document(f"{prefix}-D3", "2024-01-05T12:00:00Z", binary_id=f"{prefix}-MISSING"),
        ],
    )
    upsert(conn, [binary(f"{prefix}-B1", PDF)], is_reference=True)
    return conn


def row(patient: Patient, fhir_id: str) -> SyncedResource:
    return SyncedResource.objects.get(patient=patient, fhir_id=fhir_id)


@pytest.fixture
def chart(patient: Patient) -> Connection:
    return seed_chart(patient)


@pytest.fixture
def other() -> Patient:
    other: Patient = PatientFactory.create()
    seed_chart(other, prefix="B", slug="other-health")
    return other


@pytest.fixture
def client(patient: Patient, api_client_for: Callable[..., APIClient]) -> APIClient:
    return api_client_for(patient)


def get(client: APIClient, name: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return client.get(reverse(name, kwargs=kwargs or None), params or {})


def list_ids(client: APIClient, record_type: str, page_size: int) -> list[str]:
    """Every fhir_id of a records list, page by page through its cursors."""
    seen: list[str] = []
    cursor = None
    while True:
        params = {"page_size": page_size, **({"cursor": cursor} if cursor else {})}
        page = get(client, "fhirlink-records-list", params, record_type=record_type).json()
        seen += [r["fhir_id"] for r in page["results"]]
        cursor = page["next_cursor"]
        if not cursor:
            return seen


# --- Summary -------------------------------------------------------------------------------------


def test_summary_in_one_call_with_counts(client, chart, patient):
    before = AccessEvent.objects.count()
    response = get(client, "fhirlink-records-summary")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["demographics"]["name"] == "Nancy SmartA"
    assert data["demographics"]["birth_date"] == "1980-08-11"
    assert data["demographics"]["health_system"] == "Test-Health Health"
    assert [c["display"] for c in data["conditions"]] == ["Diabetes mellitus type 2"]
    assert [m["display"] for m in data["medications"]] == ["metformin 500 mg tablet"]
    assert data["medications"][0]["dosage"] == "1 tab PO daily"
    assert [a["display"] for a in data["allergies"]] == ["Penicillin"]
    assert data["allergies"][0]["reactions"] == ["Hives"]
    vitals = {v["fhir_id"] for v in data["vital_signs"]}
    assert vitals == {"A-VS-T2", "A-VS-T1", "A-VS-W2", "A-VS-BP2"}  # latest per code column
    assert [lab["fhir_id"] for lab in data["lab_results"]] == ["A-L-G2", "A-L-G1"]
    assert [i["display"] for i in data["immunizations"]] == ["influenza vaccine"]
    assert data["counts"] == {
        "active_conditions": 1,
        "active_medications": 1,
        "allergies": 1,
        "vital_signs": 6,
        "lab_results": 2,
        "immunizations": 1,
        "encounters": 1,
        "documents": 3,
    }
    assert AccessEvent.objects.count() == before + 1


def test_summary_empty_for_a_patient_without_data(client, patient):
    response = get(client, "fhirlink-records-summary")
    assert response.status_code == 200
    assert response.json()["demographics"] is None
    assert response.json()["counts"]["vital_signs"] == 0


def test_scope_records_read_is_required(api_client_for, patient, chart):
    client = api_client_for(patient, scope="account")
    response = get(client, "fhirlink-records-summary")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


# --- Lists and details ---------------------------------------------------------------------------


# The chart fixture's live Observations, newest clinical date first (the list's order).
OBSERVATIONS_NEWEST_FIRST = [
    "A-L-G2",
    "A-VS-BP2",
    "A-VS-W2",
    "A-VS-T2",
    "A-L-G1",
    "A-VS-BP1",
    "A-VS-W1",
    "A-VS-T1",
]


def test_list_friendly_view_ordering_and_entered_in_error_hidden(client, chart):
    response = get(client, "fhirlink-records-list", record_type="observations")
    assert response.status_code == 200
    results = response.json()["results"]
    ids = [r["fhir_id"] for r in results]
    assert "A-L-EIE" not in ids
    assert ids == OBSERVATIONS_NEWEST_FIRST
    temp = next(r for r in results if r["fhir_id"] == "A-VS-T1")
    assert temp["display"] == "Temperature Axillary"
    assert temp["code"] == {"system": LOINC, "code": "8328-7", "display": "Temperature Axillary"}
    assert temp["codings"][0]["system"] == CODESET72
    assert (temp["value"], temp["unit"], temp["category"], temp["status"]) == (
        98.6,
        "[degF]",
        "vital-signs",
        "final",
    )
    assert temp["source"]["health_system"] == "Test-Health Health"
    assert temp["flags"] == {"valid": True, "validation_error": "", "unreadable": False}
    assert "resource" not in temp
    bp = next(r for r in results if r["fhir_id"] == "A-VS-BP2")
    assert [(c["code"]["code"], c["value"]) for c in bp["components"]] == [
        ("8480-6", 130.0),
        ("8462-4", 85.0),
    ]


def test_list_filters(client, chart, patient):
    def ids(**params: Any) -> list[str]:
        response = get(client, "fhirlink-records-list", params, record_type="observations")
        assert response.status_code == 200, response.content
        return [r["fhir_id"] for r in response.json()["results"]]

    assert ids(category="laboratory") == ["A-L-G2", "A-L-G1"]
    assert ids(code="29463-7") == ["A-VS-W2", "A-VS-W1"]
    assert ids(code="29463-7,2339-0") == ["A-VS-W2", "A-L-G1", "A-VS-W1"]
    assert ids(date_from="2024-02-01", date_to="2024-02-02") == ["A-VS-BP2", "A-VS-W2", "A-VS-T2"]
    assert ids(status="final", category="laboratory") == ["A-L-G2", "A-L-G1"]
    assert ids(health_system="test-health", category="laboratory") == ["A-L-G2", "A-L-G1"]
    assert ids(health_system="nowhere") == []
    assert ids(connection=str(chart.pk), code="2345-7") == ["A-L-G2"]
    response = get(client, "fhirlink-records-list", {"status": "active"}, record_type="conditions")
    assert [r["fhir_id"] for r in response.json()["results"]] == ["A-C1"]
    bad = get(
        client, "fhirlink-records-list", {"date_from": "yesterday"}, record_type="observations"
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "validation_failed"
    unknown = get(client, "fhirlink-records-list", record_type="bananas")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_record_type"


def test_cursor_pagination_is_stable_under_inserts(client, chart, patient):
    seen: list[str] = []
    response = get(client, "fhirlink-records-list", {"page_size": 3}, record_type="observations")
    page = response.json()
    seen += [r["fhir_id"] for r in page["results"]]
    # A new, older observation and a newer one arrive between pages.
    upsert(
        chart,
        [
            observation(
                "A-NEW-OLD",
                loinc="8867-4",
                display="Pulse",
                value=60,
                unit="/min",
                when="2000-01-01T00:00:00Z",
            ),
            observation(
                "A-NEW-NEW",
                loinc="8867-4",
                display="Pulse",
                value=61,
                unit="/min",
                when="2030-01-01T00:00:00Z",
            ),
        ],
    )
    while page["next_cursor"]:
        assert page["next"].startswith("http://testserver/api/v1/records/observations?")
        response = get(
            client,
            "fhirlink-records-list",
            {"page_size": 3, "cursor": page["next_cursor"]},
            record_type="observations",
        )
        assert response.status_code == 200
        page = response.json()
        seen += [r["fhir_id"] for r in page["results"]]
    assert seen == [*OBSERVATIONS_NEWEST_FIRST, "A-NEW-OLD"]


def test_undated_records_come_last_and_page_through(client, patient):
    conn = make_connection(patient)
    meds = [medication(f"M{i}", f"drug {i}") for i in range(5)]
    for m in meds[:3]:
        del m["authoredOn"]
    upsert(conn, meds)
    assert list_ids(client, "medications", 2) == ["M4", "M3", "M2", "M1", "M0"]


def test_detail_friendly_fhir_and_raw(client, chart, patient):
    obs = row(patient, "A-VS-T2")
    url = reverse(
        "fhirlink-records-detail", kwargs={"record_type": "observations", "record_id": obs.pk}
    )
    friendly = client.get(url).json()
    assert (friendly["id"], friendly["value"], friendly["unit"]) == (obs.pk, 37.5, "Cel")
    raw = client.get(url, {"view": "fhir"}).json()
    assert raw["resourceType"] == "Observation"
    assert raw["id"] == "A-VS-T2"
    assert raw["valueQuantity"]["value"] == 37.5
    both = client.get(url, {"include": "raw"}).json()
    assert both["resource"] == raw
    # The right id under the wrong type is not found.
    wrong = reverse(
        "fhirlink-records-detail", kwargs={"record_type": "conditions", "record_id": obs.pk}
    )
    assert client.get(wrong).status_code == 404


def test_list_items_are_the_detail_view(client, chart, patient):
    """A list page reads plain rows (`RecordRow`: values, the health system joined, date-times
    parsed from text); the detail reads a model instance. Both give the same item, fractional
    seconds and two health systems included."""
    second = make_connection(patient, slug="second-health", name="Second Health")
    undated = medication("S-M-UNDATED", "undated drug")
    del undated["authoredOn"]
    upsert(
        second,
        [
            observation(
                "S-VS-FRACTION",
                loinc="8867-4",
                display="Pulse",
                value=61,
                unit="/min",
                when="2024-03-01T09:30:00.25Z",
                meta={"versionId": "2", "lastUpdated": "2024-03-01T09:31:02.123456Z"},
            ),
            undated,
        ],
    )
    fraction = row(patient, "S-VS-FRACTION")
    assert fraction.effective_at is not None
    assert fraction.effective_at.microsecond == 250000
    # meta.lastUpdated is not a column (nothing filters on it): the API reads the payload's.
    compared = []
    for record_type in ("observations", "medications", "conditions", "documents", "patients"):
        listed = get(client, "fhirlink-records-list", {"page_size": 200}, record_type=record_type)
        assert listed.status_code == 200
        for item in listed.json()["results"]:
            detail = get(
                client, "fhirlink-records-detail", record_type=record_type, record_id=item["id"]
            )
            assert detail.json() == item
            compared.append(item["fhir_id"])
    assert compared == [
        "S-VS-FRACTION",
        *OBSERVATIONS_NEWEST_FIRST,
        "A-M2",
        "A-M1",
        "S-M-UNDATED",
        "A-C2",
        "A-C1",
        "A-D3",
        "A-D2",
        "A-D1",
        "A-12724066",
    ]
    by_id = {
        r["fhir_id"]: r
        for r in get(
            client, "fhirlink-records-list", {"page_size": 200}, record_type="observations"
        ).json()["results"]
    }
    assert by_id["S-VS-FRACTION"]["last_updated"] == "2024-03-01T09:31:02.123456+00:00"
    assert by_id["S-VS-FRACTION"]["source"] == {
        "connection": str(second.pk),
        "health_system": "Second Health",
        "health_system_slug": "second-health",
    }
    assert by_id["A-VS-T1"]["source"]["health_system_slug"] == "test-health"
    # Keyset paging through a fractional-second position neither skips nor repeats a row.
    assert list_ids(client, "observations", 1) == list(by_id)


def test_entered_in_error_detail_is_not_found(client, chart, patient):
    eie = row(patient, "A-L-EIE")
    url = reverse(
        "fhirlink-records-detail", kwargs={"record_type": "observations", "record_id": eie.pk}
    )
    response = client.get(url)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_invalid_but_stored_is_flagged(client, patient):
    conn = make_connection(patient)
    bad = observation(
        "BAD-1", loinc="8867-4", display="Pulse", value=60, unit="/min", when="2024-01-01T00:00:00Z"
    )
    bad["status"] = 42  # not a code
    upsert(conn, [bad])
    results = get(client, "fhirlink-records-list", record_type="observations").json()["results"]
    assert results[0]["fhir_id"] == "BAD-1"
    assert results[0]["flags"]["valid"] is False
    assert results[0]["flags"]["validation_error"].startswith("invalid")


def test_etag_and_conditional_get(client, chart, patient):
    url = reverse("fhirlink-records-list", kwargs={"record_type": "observations"})
    first = client.get(url)
    etag = first["ETag"]
    assert etag.startswith('W/"')
    again = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    upsert(
        chart,
        [
            observation(
                "A-VS-T2",
                loinc="8310-5",
                display="Temperature",
                value=38.0,
                unit="Cel",
                when="2024-02-01T09:00:00Z",
            )
        ],
    )
    changed = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    detail = reverse(
        "fhirlink-records-detail",
        kwargs={"record_type": "observations", "record_id": row(patient, "A-VS-T2").pk},
    )
    d1 = client.get(detail)
    assert client.get(detail, HTTP_IF_NONE_MATCH=d1["ETag"]).status_code == 304
    assert client.get(detail, {"view": "fhir"}, HTTP_IF_NONE_MATCH=d1["ETag"]).status_code == 200
    summary = reverse("fhirlink-records-summary")
    s1 = client.get(summary)
    assert client.get(summary, HTTP_IF_NONE_MATCH=s1["ETag"]).status_code == 304


# --- Trends --------------------------------------------------------------------------------------


def _trend(client: APIClient, code: str, **params: Any) -> dict[str, Any]:
    response = get(client, "fhirlink-records-trends", {"code": code, **params})
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


def test_trend_temperature_converted_to_celsius(client, chart):
    data = _trend(client, "8310-5")
    assert data["unit"] == "Cel"
    (series,) = data["series"]
    assert [(p["value"], p["original_value"], p["original_unit"]) for p in series["points"]] == [
        (37.0, 98.6, "[degF]"),
        (37.5, 37.5, "Cel"),
    ]


def test_trend_weight_and_glucose_canonical_units(client, chart):
    weight = _trend(client, "29463-7")
    assert weight["unit"] == "kg"
    assert [p["value"] for p in weight["series"][0]["points"]] == [69.85, 70.0]
    glucose = _trend(client, "2339-0")
    assert glucose["unit"] == "mg/dL"
    assert [p["value"] for p in glucose["series"][0]["points"]] == [99.09, 110.0]


def test_trend_blood_pressure_components(client, chart):
    data = _trend(client, "85354-9")
    assert data["unit"] == "mm[Hg]"
    assert [(s["code"], [p["value"] for p in s["points"]]) for s in data["series"]] == [
        ("8480-6", [120.0, 130.0]),
        ("8462-4", [80.0, 85.0]),
    ]
    systolic = _trend(client, "8480-6")
    assert [(s["code"], [p["value"] for p in s["points"]]) for s in systolic["series"]] == [
        ("8480-6", [120.0, 130.0]),
    ]


def test_trend_matches_cerner_codeset_codes_where_mapped(client, patient, settings):
    conn = make_connection(patient)
    upsert(
        conn,
        [
            observation(
                "PROP-1",
                loinc="",
                display="Pulse Rate",
                value=72,
                unit="/min",
                when="2024-01-01T00:00:00Z",
                cerner_code="703511",
                with_loinc=False,
            )
        ],
    )
    assert _trend(client, "8867-4")["series"][0]["points"] == []
    settings.FHIRLINK_RECORDS_CERNER_CODE_MAP = {"703511": "8867-4"}
    points = _trend(client, "8867-4")["series"][0]["points"]
    assert [(p["value"], p["original_unit"]) for p in points] == [(72.0, "/min")]


def test_trend_unknown_unit_is_skipped_and_code_validated(client, patient):
    conn = make_connection(patient)
    upsert(
        conn,
        [
            observation(
                "W-ODD",
                loinc="29463-7",
                display="Weight",
                value=10,
                unit="stone",
                when="2024-01-01T00:00:00Z",
            )
        ],
    )
    data = _trend(client, "29463-7")
    assert data["skipped"] == 1
    assert data["series"][0]["points"] == []
    assert get(client, "fhirlink-records-trends", {"code": "x' OR 1=1"}).status_code == 400


def test_trend_without_code_lists_available_codes(client, chart):
    data = _trend(client, "")
    assert data["series"] == []
    assert data["available"] == [
        {"code": "29463-7", "category": "vital-signs", "count": 2, "unit": "kg"},
        {"code": "85354-9", "category": "vital-signs", "count": 2, "unit": "mm[Hg]"},
        {"code": "2339-0", "category": "laboratory", "count": 1, "unit": "mg/dL"},
        {"code": "2345-7", "category": "laboratory", "count": 1, "unit": "mg/dL"},
        {"code": "8310-5", "category": "vital-signs", "count": 1, "unit": "Cel"},
        {"code": "8328-7", "category": "vital-signs", "count": 1, "unit": "Cel"},
    ]


# --- Timeline ------------------------------------------------------------------------------------


def test_timeline_merges_events_newest_first(client, chart):
    response = get(client, "fhirlink-records-timeline", {"page_size": 4})
    assert response.status_code == 200
    first = response.json()
    got = [(r["resource_type"], r["fhir_id"]) for r in first["results"]]
    rest = get(
        client, "fhirlink-records-timeline", {"page_size": 50, "cursor": first["next_cursor"]}
    ).json()
    got += [(r["resource_type"], r["fhir_id"]) for r in rest["results"]]
    assert got == [
        ("Observation", "A-L-G2"),
        ("DocumentReference", "A-D3"),
        ("DocumentReference", "A-D2"),
        ("DocumentReference", "A-D1"),
        ("Observation", "A-L-G1"),
        ("Encounter", "A-E1"),
        ("Procedure", "A-P1"),
    ]
    assert rest["next_cursor"] is None
    # A list cursor is not a timeline cursor.
    list_page = get(client, "fhirlink-records-list", {"page_size": 1}, record_type="observations")
    bad = get(client, "fhirlink-records-timeline", {"cursor": list_page.json()["next_cursor"]})
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


# --- Documents -----------------------------------------------------------------------------------


def test_document_download_from_synced_binary(client, chart, patient):
    doc = row(patient, "A-D1")
    response = client.get(
        reverse("fhirlink-records-document-content", kwargs={"record_id": doc.pk})
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content == PDF
    assert response["Cache-Control"] == "private, no-store"
    listed = get(
        client, "fhirlink-records-detail", record_type="documents", record_id=doc.pk
    ).json()
    assert listed["attachments"] == [
        {"index": 0, "content_type": "application/pdf", "title": "Discharge summary", "size": None}
    ]


def test_document_inline_and_missing_attachment(client, chart, patient):
    inline = row(patient, "A-D2")
    response = client.get(
        reverse("fhirlink-records-document-content", kwargs={"record_id": inline.pk})
    )
    assert (response.status_code, response["Content-Type"], response.content) == (
        200,
        "text/plain",
        b"plain note",
    )
    missing = row(patient, "A-D3")
    response = client.get(
        reverse("fhirlink-records-document-content", kwargs={"record_id": missing.pk})
    )
    assert response.status_code == 404
    assert response.json()["code"] == "attachment_not_synced"
    response = client.get(
        reverse("fhirlink-records-document-content", kwargs={"record_id": inline.pk}),
        {"attachment": 3},
    )
    assert response.json()["code"] == "attachment_not_found"


# --- Changes -------------------------------------------------------------------------------------


def test_changes_feed_with_tombstones(client, chart, patient, settings):
    settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = 0
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"page_size": 7, **({"cursor": cursor} if cursor else {})}
        data = get(client, "fhirlink-records-changes", params).json()
        items += data["results"]
        cursor = data["next_cursor"]
        if not data["has_more"]:
            break
    total = SyncedResource.objects.filter(patient=patient, is_reference=False).count()
    assert len(items) == total == 21
    eie = next(i for i in items if i["fhir_id"] == "A-L-EIE")
    assert (eie["deleted"], eie["reason"], eie["record"]) == (True, "entered-in-error", None)
    # Nothing new: the same cursor answers nothing.
    assert get(client, "fhirlink-records-changes", {"cursor": cursor}).json()["results"] == []
    # A deletion at the source and an update arrive.
    # As the store's reconcile does it: a queryset update that leaves updated_at alone.
    resources_tombstone(connection=chart, resource_type="Procedure", sync_run_id=uuid.uuid4())
    upsert(chart, [medication("A-M1", "metformin 1000 mg tablet")])
    data = get(client, "fhirlink-records-changes", {"cursor": cursor}).json()
    assert [(i["fhir_id"], i["deleted"], i["reason"]) for i in data["results"]] == [
        ("A-P1", True, "deleted"),
        ("A-M1", False, ""),
    ]
    assert data["results"][1]["record"]["display"] == "metformin 1000 mg tablet"


def test_changes_wait_for_the_settle_window(client, chart, settings):
    settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = 3600
    data = get(client, "fhirlink-records-changes").json()
    assert data["results"] == []
    assert data["has_more"] is False
    settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = 0
    assert (
        len(
            get(client, "fhirlink-records-changes", {"cursor": data["next_cursor"]}).json()[
                "results"
            ]
        )
        == 21
    )


def test_bad_cursor_is_400(client, chart):
    response = get(client, "fhirlink-records-changes", {"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


# --- Export --------------------------------------------------------------------------------------


def _export(client: APIClient, fmt: str, django_capture_on_commit_callbacks: Any) -> dict[str, Any]:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("fhirlink-records-exports"), {"format": fmt}, format="json")
    assert response.status_code == 202, response.content
    assert len(callbacks) == 1
    state: dict[str, Any] = response.json()
    assert state["status"] == "pending"
    assert state["download_url"] is None
    built = records_export.export_build(state["id"])
    assert built is not None
    assert built["status"] == "ready"
    return state


def test_export_bundle_downloadable_once(
    client, chart, patient, django_capture_on_commit_callbacks
):
    state = _export(client, "bundle", django_capture_on_commit_callbacks)
    detail = get(client, "fhirlink-records-export-detail", export_id=state["id"]).json()
    assert detail["status"] == "ready"
    assert detail["resources"] == 21  # 20 live clinical + the Binary; not the entered-in-error
    assert detail["download_url"] == (
        f"http://testserver/api/v1/records/exports/{state['id']}/download"
    )
    assert "patient" not in detail
    # At rest: encrypted, no PHI readable.
    blob = cache.get(f"fhirlink:records-export-blob:{state['id']}")
    assert b"SmartA" not in blob
    assert b"Observation" not in blob
    response = client.get(detail["download_url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    bundle = json.loads(response.content)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert "A-VS-T1" in ids
    assert "A-B1" in ids
    assert "A-L-EIE" not in ids
    again = client.get(detail["download_url"])
    assert again.status_code == 410
    assert again.json()["code"] == "export_gone"


def test_export_ndjson(client, chart, django_capture_on_commit_callbacks):
    state = _export(client, "ndjson", django_capture_on_commit_callbacks)
    response = get(client, "fhirlink-records-export-download", export_id=state["id"])
    assert response["Content-Type"] == "application/fhir+ndjson"
    lines = response.content.decode().splitlines()
    assert len(lines) == 21
    assert all(json.loads(line)["resourceType"] for line in lines)


def test_export_needs_export_scope_and_expires(api_client_for, patient, chart, settings):
    reader = api_client_for(patient, scope="records:read")
    assert reader.post(reverse("fhirlink-records-exports"), {}, format="json").status_code == 403
    client = api_client_for(patient)
    pending = client.post(reverse("fhirlink-records-exports"), {}, format="json").json()
    response = get(client, "fhirlink-records-export-download", export_id=pending["id"])
    assert response.status_code == 409
    assert response.json()["code"] == "export_not_ready"
    cache.delete(f"fhirlink:records-export:{pending['id']}")  # what expiry does
    response = get(client, "fhirlink-records-export-detail", export_id=pending["id"])
    assert response.status_code == 404
    assert response.json()["code"] == "export_not_found"


# --- Isolation -----------------------------------------------------------------------------------


def test_patient_a_gets_nothing_of_patient_b(
    client, chart, patient, other, api_client_for, settings, django_capture_on_commit_callbacks
):
    settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = 0
    b_client = api_client_for(other)
    b_rows = SyncedResource.objects.filter(patient=other)
    b_ids = {r.fhir_id for r in b_rows}
    b_conn = Connection.objects.get(patient=other)
    responses = []
    for r in b_rows:
        for record_type in ("observations", "documents", "conditions", "patients", "medications"):
            responses.append(
                client.get(
                    reverse(
                        "fhirlink-records-detail",
                        kwargs={"record_type": record_type, "record_id": r.pk},
                    )
                )
            )
        responses.append(
            client.get(reverse("fhirlink-records-document-content", kwargs={"record_id": r.pk}))
        )
    for resp in responses:
        assert resp.status_code == 404
        assert set(resp.json()) >= {"code", "message", "status", "request_id"}
    # B's cursors.
    for name, params in [
        ("fhirlink-records-changes", {"page_size": 1}),
        ("fhirlink-records-timeline", {"page_size": 1}),
    ]:
        b_cursor = b_client.get(reverse(name), params).json()["next_cursor"]
        resp = client.get(reverse(name), {"cursor": b_cursor})
        assert resp.status_code == 400
        assert resp.json()["code"] == "invalid_cursor"
        responses.append(resp)
    b_list = b_client.get(
        reverse("fhirlink-records-list", kwargs={"record_type": "observations"}), {"page_size": 1}
    ).json()
    resp = client.get(
        reverse("fhirlink-records-list", kwargs={"record_type": "observations"}),
        {"cursor": b_list["next_cursor"]},
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_cursor"
    responses.append(resp)
    # B's connection and health system as filters: empty.
    filters: list[dict[str, str]] = [
        {"connection": str(b_conn.pk)},
        {"health_system": "other-health"},
    ]
    for query in filters:
        resp = client.get(
            reverse("fhirlink-records-list", kwargs={"record_type": "observations"}), query
        )
        assert resp.status_code == 200
        assert resp.json()["results"] == []
        responses.append(resp)
    resp = client.get(
        reverse("fhirlink-records-trends"), {"code": "8310-5", "connection": str(b_conn.pk)}
    )
    assert resp.json()["series"][0]["points"] == []
    responses.append(resp)
    # B's export.
    b_export = _export(b_client, "bundle", django_capture_on_commit_callbacks)
    for name in ("fhirlink-records-export-detail", "fhirlink-records-export-download"):
        resp = client.get(reverse(name, kwargs={"export_id": b_export["id"]}))
        assert resp.status_code == 404
        assert resp.json()["code"] == "export_not_found"
        responses.append(resp)
    assert (
        b_client.get(
            reverse("fhirlink-records-export-download", kwargs={"export_id": b_export["id"]})
        ).status_code
        == 200
    )
    # A's own listings never contain B's data.
    for name, kwargs in [
        ("fhirlink-records-summary", {}),
        ("fhirlink-records-timeline", {}),
        ("fhirlink-records-changes", {}),
        ("fhirlink-records-list", {"record_type": "observations"}),
        ("fhirlink-records-list", {"record_type": "documents"}),
    ]:
        responses.append(client.get(reverse(name, kwargs=kwargs or None), {"page_size": 200}))
    for resp in responses:
        body = resp.content.decode()
        assert not any(f'"{i}"' in body for i in b_ids), body[:300]
        assert "SmartB" not in body


# --- Access log and query counts -----------------------------------------------------------------


def test_one_access_log_row_per_list_request(client, chart, patient):
    before = AccessEvent.objects.count()
    get(
        client,
        "fhirlink-records-list",
        {"page_size": 5, "category": "vital-signs"},
        record_type="observations",
    )
    rows = list(AccessEvent.objects.order_by("-seq")[: AccessEvent.objects.count() - before])
    assert len(rows) == 1
    assert rows[0].action == "list"
    assert rows[0].resource_type == "Observation"
    assert rows[0].patient_id == patient.pk
    assert len(rows[0].resource_ids) == 5


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fhirlink-records-list", {"record_type": "observations"}),
        ("fhirlink-records-timeline", {}),
        ("fhirlink-records-changes", {}),
    ],
)
def test_queries_do_not_grow_with_page_size(client, patient, name, kwargs, settings):
    settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = 0
    conn = make_connection(patient)
    upsert(
        conn,
        [
            observation(
                f"L-{i}",
                loinc="2339-0",
                display="Glucose",
                value=float(i),
                unit="mg/dL",
                when=f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                category="laboratory",
            )
            for i in range(250)
        ],
    )
    counts = {}
    client.get(reverse(name, kwargs=kwargs or None), {"page_size": 1})  # warm per-process caches
    for size in (10, 200):
        with CaptureQueriesContext(db_connection) as ctx:
            response = client.get(reverse(name, kwargs=kwargs or None), {"page_size": size})
        assert response.status_code == 200
        assert len(response.json()["results"]) == size
        counts[size] = len(ctx.captured_queries)
    assert counts[10] == counts[200]


def test_list_reads_its_page_in_one_query(client, chart, patient):
    """A page's rows and their health systems come from one query (no lookup of connections),
    and its payloads are opened with one data-key fetch. (A page that the dated rows do not
    fill takes a second query for the undated ones.)"""
    second = make_connection(patient, slug="second-health", name="Second Health")
    upsert(
        second,
        [
            observation(
                "S-1", loinc="8867-4", display="Pulse", value=61, unit="/min", when="2024-03-01"
            )
        ],
    )
    url = reverse("fhirlink-records-list", kwargs={"record_type": "observations"})
    client.get(url)  # warm per-process caches
    with CaptureQueriesContext(db_connection) as ctx:
        response = client.get(url, {"page_size": 2})
    assert response.status_code == 200
    assert [(r["fhir_id"], r["source"]["health_system"]) for r in response.json()["results"]] == [
        ("S-1", "Second Health"),
        ("A-L-G2", "Test-Health Health"),
    ]
    sql = [q["sql"] for q in ctx.captured_queries]
    assert len([q for q in sql if 'FROM "fhirlink_syncedresource"' in q]) == 1
    assert not [q for q in sql if 'FROM "fhirlink_connection"' in q]
    assert len([q for q in sql if 'FROM "fhirlink_patientdatakey"' in q]) == 1


def test_list_query_budget(client, patient, django_assert_max_num_queries):
    conn = make_connection(patient)
    upsert(
        conn,
        [
            observation(
                f"L-{i}",
                loinc="2339-0",
                display="Glucose",
                value=float(i),
                unit="mg/dL",
                when="2024-01-01T00:00:00Z",
                category="laboratory",
            )
            for i in range(200)
        ],
    )
    for size in (10, 200):
        with django_assert_max_num_queries(12):
            response = get(
                client, "fhirlink-records-list", {"page_size": size}, record_type="observations"
            )
        assert len(response.json()["results"]) == size


# --- Cerner's published examples (read at test time) --------------------------------------------


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/cerner-r4-examples is not present")
def test_cerner_published_observations(client, patient):
    conn = make_connection(patient)
    resources = []
    for path in sorted((SHARED / "Observation").glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("resourceType") == "Bundle":
            resources += [e["resource"] for e in doc.get("entry", []) if "resource" in e]
        else:
            resources.append(doc)
    resources = [r for r in resources if r.get("resourceType") == "Observation"]
    upsert(conn, resources)
    listed = get(client, "fhirlink-records-list", {"page_size": 200}, record_type="observations")
    ids = {r["fhir_id"] for r in listed.json()["results"]}
    assert "L-197412603" not in ids  # the entered-in-error example ("entered-in-error ")
    assert "VS-197292857" in ids
    temp = _trend(client, "8310-5")
    point = next(p for p in temp["series"][0]["points"] if p["original_value"] == 27)
    assert (point["value"], point["original_unit"]) == (27.0, "Cel")
