"""The pure parts of the records read side: codings, display, units, values (no database)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fhirlink.records import normalize

CERNER = "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/72"


@pytest.mark.parametrize(
    ("value", "unit", "canonical", "expected"),
    [
        (98.6, "[degF]", normalize.TEMPERATURE, 37.0),
        (212, "degF", normalize.TEMPERATURE, 100.0),
        (37.5, "Cel", normalize.TEMPERATURE, 37.5),
        (154, "[lb_av]", normalize.WEIGHT, 69.853),
        (70, "kg", normalize.WEIGHT, 70.0),
        (5.5, "mmol/L", normalize.GLUCOSE, 99.088),
        (110, "mg/dL", normalize.GLUCOSE, 110.0),
        (70, "[in_i]", normalize.LENGTH, 177.8),
        (16, "kPa", normalize.PRESSURE, 120.01),
    ],
)
def test_unit_convert(value, unit, canonical, expected):
    assert normalize.unit_convert(value, unit, canonical) == pytest.approx(expected, abs=0.01)


def test_unknown_unit_is_none():
    assert normalize.unit_convert(10, "stone", normalize.WEIGHT) is None


def test_preferred_coding_is_loinc_before_proprietary():
    concept = {
        "coding": [
            {"system": CERNER, "code": "703535", "display": "Temperature Axillary"},
            {"system": "http://loinc.org", "code": "8328-7", "display": "Axillary temperature"},
        ],
        "text": "Temperature Axillary",
    }
    assert normalize.preferred_coding(concept) == {
        "system": "http://loinc.org",
        "code": "8328-7",
        "display": "Axillary temperature",
    }
    only_cerner = {"coding": [{"system": CERNER, "code": "703535"}]}
    assert normalize.preferred_coding(only_cerner) == {
        "system": CERNER,
        "code": "703535",
        "display": "",
    }
    assert normalize.concept_text(concept) == "Temperature Axillary"


def test_contained_medication_display():
    resource = {
        "resourceType": "MedicationAdministration",
        "contained": [
            {"resourceType": "Medication", "id": "m1", "code": {"text": "acetaminophen 325 mg"}}
        ],
        "medicationReference": {"reference": "#m1"},
    }
    assert normalize.resource_display(resource) == "acetaminophen 325 mg"


def test_encounter_display_falls_back_to_class():
    resource = {"resourceType": "Encounter", "class": {"code": "AMB", "display": "ambulatory"}}
    assert normalize.resource_display(resource) == "ambulatory"


def _row(**kw: Any) -> Any:
    hs = SimpleNamespace(name="Test Health", slug="test")
    base = {
        "pk": 1,
        "resource_type": "Observation",
        "fhir_id": "L-1",
        "category": "laboratory",
        "status": "final",
        "effective_at": None,
        "last_updated": None,
        "connection_id": "c1",
        "connection": SimpleNamespace(health_system=hs),
        "valid": True,
        "validation_error": "",
    }
    return SimpleNamespace(**{**base, **kw})


def test_masked_value_reads_as_data_absent_text():
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Hgb"},
        "dataAbsentReason": {"text": "Masked"},
    }
    item = normalize.record_normalize(_row(), resource)
    assert (item["value"], item["value_text"]) == (None, "(Masked)")


def test_unreadable_payload_is_flagged():
    item = normalize.record_normalize(_row(), None)
    assert item["flags"] == {"valid": True, "validation_error": "", "unreadable": True}
    assert item["display"] == ""


def test_status_whitespace_is_trimmed():
    # The store's status column is a keyed hash: the status shown is the payload's, trimmed.
    item = normalize.record_normalize(_row(status="final "), {"resourceType": "Observation"})
    assert item["status"] == ""
    item = normalize.record_normalize(
        _row(), {"resourceType": "Observation", "status": "preliminary "}
    )
    assert item["status"] == "preliminary"
