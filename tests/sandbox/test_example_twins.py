"""Each patient-authorization read/search example Cerner published has a twin the sandbox produces.

The examples are read from ``../shared/cerner-r4-examples/`` at run time (never copied into the
repository). A twin is a sandbox resource of the same type whose top-level elements include every
element of the example, masked/entered-in-error when the example is; for a search example, the
sandbox's searchset Bundle also has every Bundle-level element of the example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import FULL_SCOPES

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "cerner-r4-examples"
# Scheduling resources are not in the patient compartment and not served by the sandbox.
NOT_SERVED = {"Schedule", "Slot"}


def _example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(
        p
        for p in EXAMPLES.glob("*/*patient-auth*.json")
        if not p.name.startswith("op-") and not p.parent.name.startswith("_")
    )


def _resources(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("resourceType") != "Bundle":
        return [doc]
    out = []
    for entry in doc.get("entry", []):
        resource = entry.get("resource", entry)
        if (
            isinstance(resource, dict)
            and "resourceType" not in resource
            and isinstance(resource.get("resource"), dict)
        ):
            resource = resource["resource"]
        if isinstance(resource, dict) and "resourceType" in resource:
            out.append(resource)
    return out


def _flagged(resource: dict[str, Any]) -> bool:
    text = json.dumps({k: v for k, v in resource.items() if k != "text"})
    return "entered-in-error" in text or '"masked"' in text


FILES = _example_files()


@pytest.fixture
def produced(sandbox, smart) -> dict[str, Any]:
    """Everything the sandbox serves to the everyday and the large patient (large: first pages)."""
    resources: dict[str, list[dict[str, Any]]] = {}
    bundles: dict[str, dict[str, Any]] = {}
    for patient in ("nancy", "hugo"):
        launch = smart.launch(patient=patient, scopes=FULL_SCOPES)
        pid = launch.token["patient"]
        resources.setdefault("Patient", []).append(
            launch.get(f"{sandbox.fhir_base}/Patient/{pid}").json()
        )
        for rtype in (
            "Observation",
            "Condition",
            "AllergyIntolerance",
            "MedicationRequest",
            "Immunization",
            "Procedure",
            "Encounter",
            "DiagnosticReport",
            "DocumentReference",
            "CarePlan",
            "Goal",
            "CareTeam",
            "Device",
            "ServiceRequest",
            "NutritionOrder",
            "Consent",
        ):
            first = f"{sandbox.fhir_base}/{rtype}?patient={pid}"
            if rtype not in {"Procedure", "Goal", "ServiceRequest", "NutritionOrder", "Consent"}:
                first += "&_revinclude=Provenance:target"
            if rtype == "CarePlan":
                first += "&category=assess-plan"
            if rtype == "Observation":
                first += "&_count=200"
            url: str | None = first
            for _ in range(3 if rtype == "Observation" else 20):
                bundle = launch.get(str(url)).json()
                bundles.setdefault(rtype, bundle)
                for entry in bundle["entry"]:
                    resources.setdefault(entry["resource"]["resourceType"], []).append(
                        entry["resource"]
                    )
                url = next(
                    (link["url"] for link in bundle["link"] if link["relation"] == "next"), None
                )
                if not url:
                    break
        document = next(
            r
            for r in resources["DocumentReference"]
            if r["content"][0]["attachment"]["contentType"] == "application/pdf"
        )
        resources.setdefault("Binary", []).append(
            launch.get(document["content"][0]["attachment"]["url"]).json()
        )
    return {"resources": resources, "bundles": bundles}


def _check(path: Path, produced: dict[str, Any]) -> str:
    """'' when the example has a twin; else why not (or 'skip: ...')."""
    doc = json.loads(path.read_text())
    examples = _resources(doc)
    rtype = examples[0]["resourceType"] if examples else path.parent.name
    if path.parent.name in NOT_SERVED or rtype in NOT_SERVED:
        return f"skip: {rtype} is not served (scheduling is outside the patient compartment)"
    if not examples:
        return "holds no resource"
    for example in examples:
        candidates = [
            c
            for c in produced["resources"].get(example["resourceType"], [])
            if _flagged(c) == _flagged(example)
        ]
        wanted = set(example) - {"text"}
        if not any(wanted <= set(c) for c in candidates):
            missing = min((wanted - set(c) for c in candidates), key=len, default=wanted)
            name = f"{example['resourceType']}/{example.get('id')}"
            return f"no twin for {name}; closest lacks {sorted(missing)}"
    if doc.get("resourceType") == "Bundle":
        bundle = produced["bundles"]["Condition" if rtype == "Provenance" else rtype]
        if not set(doc) - {"id"} <= set(bundle):
            return f"Bundle-level elements missing: {sorted(set(doc) - set(bundle))}"
        if bundle["type"] != doc["type"]:
            return f"Bundle type {bundle['type']} != {doc['type']}"
    return ""


@pytest.mark.skipif(
    not FILES, reason=f"Cerner examples not found at {EXAMPLES} (../shared is absent)"
)
def test_every_patient_auth_example_has_a_twin(produced):
    """One test over every example (the produced data is fetched once over HTTP)."""
    results = {f"{p.parent.name}/{p.name}": _check(p, produced) for p in FILES}

    failures = {name: why for name, why in results.items() if why and not why.startswith("skip:")}
    checked = [name for name, why in results.items() if not why]
    assert failures == {}
    assert len(checked) >= 40
