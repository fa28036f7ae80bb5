"""`records.sharing`: what the patient shared, combined over the connections in scope (issue
#20): a type or Observation category the patient did not share is data, never an error."""

from __future__ import annotations

from typing import Any

from fhirlink.models import Connection, HealthSystem
from fhirlink.records.sharing import sharing_build
from fhirlink.services.registry import health_system_register
from tests.factories import PatientFactory

LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = LAB.replace("laboratory", "vital-signs")


def _other_health_system() -> HealthSystem:
    hs, _ = health_system_register(
        slug="other-hs",
        name="Other",
        fhir_base_url="https://other.example.org/r4",
        client_id="c",
        client_auth="public",
        scope_syntax="v2",
        resources=["Patient", "Observation", "Condition"],
    )
    return hs


def _connect(patient: Any, hs: HealthSystem, **grant: Any) -> Connection:
    return Connection.objects.create(
        patient=patient, health_system=hs, status="active", fhir_patient_id="1", **grant
    )


def _states(patient: Any) -> dict[str, Any]:
    return {
        e["resource_type"]: (e["sharing"], {c["category"]: c["sharing"] for c in e["categories"]})
        for e in sharing_build(patient=patient)
    }


def test_no_connection_nothing_is_available(db):
    states = _states(PatientFactory.create())
    assert {s for s, _ in states.values()} == {"not_available"}
    assert set(states["Observation"][1].values()) == {"not_available"}
    assert states["Condition"][1] == {}


def test_one_connection_granted_declined_and_category_limited(db, health_system):
    patient = PatientFactory.create()
    _connect(
        patient,
        health_system,
        granted_resources=["Patient", "Observation", "Practitioner"],
        declined_resources=["Condition"],
        granted_scopes=f"launch/patient openid patient/Patient.rs {LAB} {VITALS}",
    )
    states = _states(patient)
    assert states["Patient"] == ("shared", {})
    assert states["Condition"] == ("not_shared", {})
    assert states["AllergyIntolerance"] == ("not_available", {})
    assert states["Observation"][0] == "partly_shared"
    assert states["Observation"][1] == {
        "laboratory": "shared",
        "vital-signs": "shared",
        "social-history": "not_shared",
        "imaging": "not_shared",
        "survey": "not_shared",
        "exam": "not_shared",
        "procedure": "not_shared",
        "therapy": "not_shared",
        "activity": "not_shared",
    }


def test_combined_over_health_systems_and_narrowed_to_a_scope(db, health_system):
    patient = PatientFactory.create()
    whole = _connect(
        patient,
        health_system,
        granted_resources=["Observation", "Condition"],
        granted_scopes="patient/Observation.rs patient/Condition.rs",
    )
    limited = _connect(
        patient,
        _other_health_system(),
        granted_resources=["Observation"],
        declined_resources=["Condition"],
        granted_scopes=LAB,
    )
    states = _states(patient)
    assert states["Condition"][0] == "partly_shared"  # shared at one, declined at the other
    assert states["Observation"][0] == "partly_shared"
    assert states["Observation"][1]["laboratory"] == "shared"
    assert states["Observation"][1]["vital-signs"] == "partly_shared"

    # A records scope narrowed to one connection (a managed person's record) reads only it.
    class Scope:
        def __init__(self, connection: Connection) -> None:
            self.patient = patient
            self.connection_ids = (connection.pk,)

    only_limited = {e["resource_type"]: e["sharing"] for e in sharing_build(patient=Scope(limited))}
    assert only_limited["Condition"] == "not_shared"
    assert only_limited["Observation"] == "partly_shared"
    only_whole = {e["resource_type"]: e["sharing"] for e in sharing_build(patient=Scope(whole))}
    assert (only_whole["Condition"], only_whole["Observation"]) == ("shared", "shared")

    # A disconnected connection's grant no longer counts.
    limited.status = "disconnected"
    limited.save(update_fields=["status"])
    assert _states(patient)["Condition"][0] == "shared"
