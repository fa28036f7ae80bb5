"""The fhir-core validator speed fix gives exactly the library's own verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fhirlink.test_store import EXAMPLES, _resources, obs

ROOT = Path(__file__).resolve().parents[2]

_VALIDATE = """
import json, sys
from pydantic import ValidationError
from fhirlink.services.sync import fhir_core_speedup, prepare

def errors(resource):
    model = prepare._model_class(str(resource.get("resourceType", "")))
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [[e["type"], list(e["loc"]), e["msg"]] for e in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [[type(exc).__name__, [], str(exc)]]
    return []

resources = json.load(sys.stdin)
print(json.dumps({"applied": fhir_core_speedup.applied_to(prepare._model_class("Observation")),
                  "verdicts": [prepare.resource_validate(r) for r in resources],
                  "errors": [errors(r) for r in resources]}))
"""


def _verdicts(resources: list[dict[str, Any]], speedup: str) -> dict[str, Any]:
    env = dict(os.environ, FHIRLINK_FHIR_CORE_SPEEDUP=speedup)
    out = subprocess.run(
        [sys.executable, "-c", _VALIDATE],
        input=json.dumps(resources).encode(),
        capture_output=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _crafted() -> list[dict[str, Any]]:
    """Valid resources and every kind of null the validator looks for, at several depths."""
    coding = {"system": "http://loinc.org", "code": "8480-6"}
    return [
        obs("ok"),
        obs("null-category", category=[None]),
        obs("null-in-coding", code={"coding": [coding, None]}),
        obs("null-component", component=[{"code": {"coding": [coding]}}, None]),
        obs("null-deep", component=[{"code": {"coding": [None]}, "valueString": "x"}]),
        obs("null-primitive-list", note=[{"text": "a"}], category=[{"text": "c"}]),
        obs("two-nulls", category=[None], performer=[None]),
        {**obs("primitive-extension"), "_status": {"extension": [None]}},
        obs("choice-twice", valueString="a", valueBoolean=True),
        obs("bad-date", effectiveDateTime="2024-13-45"),
        {"resourceType": "Patient", "id": "p", "name": [None], "telecom": [{"value": "1"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"given": ["A", None]}]},
        # What the "after" validator checks: required primitives (or an extension standing in
        # for one) and choice elements, on the resource and nested.
        {k: v for k, v in obs("no-status").items() if k != "status"},
        {
            **{k: v for k, v in obs("status-by-extension").items() if k != "status"},
            "_status": {"extension": [{"url": "http://example.test/why", "valueCode": "unknown"}]},
        },
        {**{k: v for k, v in obs("status-empty-ext").items() if k != "status"}, "_status": {}},
        obs(
            "narrative-without-status",
            text={"div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        ),
        obs(
            "nested-choice-twice",
            component=[{"code": {"text": "c"}, "valueString": "a", "valueInteger": 1}],
        ),
        {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/1"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "m2",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/1"},
            "medicationCodeableConcept": {"text": "a"},
            "medicationReference": {"reference": "Medication/1"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "m3",
            "intent": "order",
            "subject": {"reference": "Patient/1"},
            "medicationCodeableConcept": {"text": "a"},
        },
        # Nested elements, which the third fix builds without the model's own __init__ when
        # they carry no resource type: with one (right, wrong, or by field name), unknown
        # keys, a non-object, contained resources and a nested primitive extension.
        obs("nested-resource-type", code={"resourceType": "CodeableConcept", "text": "c"}),
        obs("nested-wrong-resource-type", code={"resourceType": "Coding", "text": "c"}),
        obs("nested-resource-type-by-name", code={"resource_type": "Coding", "text": "c"}),
        obs("nested-unknown-key", code={"text": "c", "bogus": 1}),
        obs("nested-not-object", code="c"),
        obs(
            "contained",
            contained=[{"resourceType": "Practitioner", "id": "p1", "name": [{"text": "A"}]}],
        ),
        obs("contained-null", contained=[{"resourceType": "Practitioner", "name": [None]}]),
        obs("nested-extension-null", code={"text": "c", "_text": {"extension": [None]}}),
    ]


def _sandbox() -> list[dict[str, Any]]:
    """The first resources of every type the sandbox renders for its large patient, including
    its entered-in-error (masked) ones."""
    from fhirlink.sandbox.conf import LARGE_PATIENT
    from fhirlink.sandbox.fhir import data

    ctx = data.Ctx("speedup", "http://127.0.0.1/r4/speedup")
    return [
        data.render(ctx, LARGE_PATIENT, rtype, row)
        for rtype in data.RENDERERS
        for row in data.base_index(LARGE_PATIENT.ordinal, rtype)[:60]
    ]


def test_the_speedup_is_in_place_where_validation_runs():
    assert _verdicts([obs("1")], "1")["applied"] is True
    assert _verdicts([obs("1")], "0")["applied"] is False


def test_the_speedup_gives_the_librarys_verdicts():
    corpus = _crafted() + _sandbox()
    if EXAMPLES.is_dir():
        for path in sorted(EXAMPLES.rglob("*.json")):
            corpus += _resources(json.loads(path.read_text()))
    elif os.environ.get("CI"):
        pytest.fail(f"Cerner's examples are missing at {EXAMPLES}")
    fast, library = _verdicts(corpus, "1"), _verdicts(corpus, "0")
    assert fast["errors"] == library["errors"]
    assert fast["verdicts"] == library["verdicts"]
    verdicts = library["verdicts"]
    # The crafted cases: every null in a list of complex elements is caught, at any depth.
    assert [bool(v) for v in verdicts[: len(_crafted())]] == [
        *(False, True, True, True, True, False),
        *(True, True, True, True, True, False),
        *(True, False, True, True, True, True, True, True),
        *(False, True, True, True, True, False, True, True),
    ]
