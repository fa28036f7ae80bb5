"""The friendly normalised view of a synced FHIR resource, and unit normalisation for trends.

`record_normalize(row, resource)` turns a stored row and its decrypted payload into a flat,
app-ready dict: display text, the preferred code (a standard terminology before Cerner's
proprietary ``https://fhir.cerner.com/{tenant}/codeSet/{n}`` coding) and every coding, value and
unit, components (blood pressure), date, status, category, source health system and flags.
Pure functions over dicts (no queries), so the staff chart can reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirlink.models import SyncedResource
from fhirlink.records.selectors import RecordRow
from fhirlink.services.sync.prepare import fhir_datetime, resource_category

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

CODE_FIELDS = {
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
    "Immunization": "vaccineCode",
    "DocumentReference": "type",
    "Goal": "description",
}
DATE_FIELDS: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "Encounter": ("period.start",),
    "DocumentReference": ("date", "context.period.start"),
    "CarePlan": ("period.start",),
    "Goal": ("startDate",),
    "ServiceRequest": ("authoredOn",),
    "FamilyMemberHistory": ("date",),
}


def _path(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def is_proprietary(system: str) -> bool:
    return "cerner.com" in system


def codings(concept: Any) -> list[dict[str, str]]:
    """Every coding of a CodeableConcept (or the first of a list of them), as plain dicts."""
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if not isinstance(concept, dict):
        return []
    out = []
    for c in concept.get("coding") or []:
        if isinstance(c, dict) and c.get("code"):
            out.append(
                {
                    "system": str(c.get("system", "")),
                    "code": str(c.get("code", "")),
                    "display": str(c.get("display", "")),
                }
            )
    return out


def preferred_coding(concept: Any) -> dict[str, str] | None:
    """LOINC, then any standard terminology, then the proprietary one."""
    return _preferred(codings(concept))


def _preferred(found: list[dict[str, str]]) -> dict[str, str] | None:
    for c in found:
        if c["system"] == LOINC:
            return c
    for c in found:
        if not is_proprietary(c["system"]):
            return c
    return found[0] if found else None


def concept_text(concept: Any, found: list[dict[str, str]] | None = None) -> str:
    """The concept's text, else its first coding display. `found`: its `codings`, when the
    caller has them already."""
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in codings(concept) if found is None else found:
        if c["display"]:
            return c["display"]
    return ""


def _contained(resource: dict[str, Any], reference: Any) -> dict[str, Any] | None:
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    for item in resource.get("contained") or []:
        if isinstance(item, dict) and item.get("id") == reference[1:]:
            return item
    return None


def _medication_concept(resource: dict[str, Any]) -> Any:
    concept = resource.get("medicationCodeableConcept")
    if concept:
        return concept
    ref = resource.get("medicationReference")
    if isinstance(ref, dict):
        med = _contained(resource, ref.get("reference"))
        if med is not None:
            return med.get("code")
        if ref.get("display"):
            return {"text": ref["display"]}
    return None


def resource_concept(resource: dict[str, Any]) -> Any:
    rtype = resource.get("resourceType")
    if rtype in ("MedicationRequest", "MedicationAdministration"):
        return _medication_concept(resource)
    if rtype == "Encounter":
        types = resource.get("type")
        if types:
            return types
        klass = resource.get("class")
        if isinstance(klass, dict):
            return {"coding": [klass]}
        return None
    return resource.get(CODE_FIELDS.get(str(rtype), "code"))


def _human_name(resource: dict[str, Any]) -> str:
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if not official:
        return ""
    if official.get("text"):
        return str(official["text"])
    given = " ".join(str(g) for g in official.get("given") or [])
    return f"{given} {official.get('family', '')}".strip()


def resource_display(resource: dict[str, Any]) -> str:
    concept = resource_concept(resource)
    return _display(resource, concept, codings(concept))


def _display(resource: dict[str, Any], concept: Any, found: list[dict[str, str]]) -> str:
    rtype = resource.get("resourceType")
    if rtype in ("Patient", "Practitioner", "RelatedPerson"):
        return _human_name(resource)
    text = concept_text(concept, found)
    if text:
        return text
    if rtype == "DocumentReference":
        return str(resource.get("description", "")) or "Document"
    if rtype == "CarePlan":
        return str(resource.get("title", "")) or "Care plan"
    return str(rtype or "")


def resource_date(resource: dict[str, Any]) -> str | None:
    for path in DATE_FIELDS.get(str(resource.get("resourceType")), ()):
        value = _path(resource, path)
        if isinstance(value, str) and value:
            return value
    return None


# --- Values and units ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Canonical:
    unit: str
    factors: dict[str, float]  # source unit -> multiply by
    offset: dict[str, tuple[float, float]]  # source unit -> (scale, add), for temperatures


# Canonical units per LOINC code family (say which in the API: `unit` of the trend).
WEIGHT = Canonical(
    "kg",
    {
        "kg": 1.0,
        "g": 0.001,
        "[lb_av]": 0.45359237,
        "lb": 0.45359237,
        "lbs": 0.45359237,
        "[oz_av]": 0.028349523125,
        "oz": 0.028349523125,
    },
    {},
)
LENGTH = Canonical(
    "cm", {"cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54, "in": 2.54, "[ft_i]": 30.48}, {}
)
TEMPERATURE = Canonical(
    "Cel",
    {"Cel": 1.0, "degC": 1.0, "C": 1.0, "°C": 1.0},
    {
        "[degF]": (5 / 9, -32 * 5 / 9),
        "degF": (5 / 9, -32 * 5 / 9),
        "F": (5 / 9, -32 * 5 / 9),
        "°F": (5 / 9, -32 * 5 / 9),
    },
)
GLUCOSE = Canonical("mg/dL", {"mg/dL": 1.0, "mmol/L": 18.016, "mg/dl": 1.0}, {})
PRESSURE = Canonical("mm[Hg]", {"mm[Hg]": 1.0, "mmHg": 1.0, "kPa": 7.50062}, {})
RATE = Canonical(
    "/min",
    {
        "/min": 1.0,
        "{beats}/min": 1.0,
        "beats/min": 1.0,
        "bpm": 1.0,
        "{breaths}/min": 1.0,
        "br/min": 1.0,
    },
    {},
)
PERCENT = Canonical("%", {"%": 1.0}, {})

CANONICAL_UNITS: dict[str, Canonical] = {
    **dict.fromkeys(("29463-7", "3141-9", "3142-7", "8335-2"), WEIGHT),
    **dict.fromkeys(("8302-2", "8306-3", "3137-7", "8287-5", "9843-4"), LENGTH),
    **dict.fromkeys(
        ("8310-5", "8328-7", "8331-1", "8332-9", "8333-7", "8334-5", "8329-5", "8330-3"),
        TEMPERATURE,
    ),
    **dict.fromkeys(("2339-0", "2345-7", "41653-7", "14749-6", "15074-8", "2341-6"), GLUCOSE),
    **dict.fromkeys(("85354-9", "55284-4", "8480-6", "8462-4", "8478-0"), PRESSURE),
    **dict.fromkeys(("8867-4", "9279-1", "8889-8"), RATE),
    **dict.fromkeys(("59408-5", "2708-6", "2710-2"), PERCENT),
}


def unit_convert(value: float, unit: str, canonical: Canonical) -> float | None:
    """`value` in `unit` converted to the canonical unit, or None if the unit is unknown."""
    if unit == canonical.unit:
        return value
    if unit in canonical.factors:
        return value * canonical.factors[unit]
    if unit in canonical.offset:
        scale, add = canonical.offset[unit]
        return value * scale + add
    return None


def quantity(q: Any) -> tuple[float | None, str]:
    """(value, unit code) of a Quantity; the UCUM code when present, else the unit text."""
    if not isinstance(q, dict):
        return None, ""
    value = q.get("value")
    unit = str(q.get("code") or q.get("unit") or "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, unit
    return float(value), unit


def _value(holder: dict[str, Any]) -> dict[str, Any]:
    """value / unit / value_text of an Observation (or component) value[x]."""
    if "valueQuantity" in holder:
        value, unit = quantity(holder["valueQuantity"])
        unit_text = str((holder["valueQuantity"] or {}).get("unit") or unit)
        return {"value": value, "unit": unit_text, "unit_code": unit, "value_text": None}
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime", "valueTime"):
        if key in holder:
            raw = holder[key]
            return {
                "value": float(raw) if key == "valueInteger" else None,
                "unit": "",
                "unit_code": "",
                "value_text": str(raw),
            }
    if "valueCodeableConcept" in holder:
        return {
            "value": None,
            "unit": "",
            "unit_code": "",
            "value_text": concept_text(holder["valueCodeableConcept"]),
        }
    if "valueRange" in holder or "valueRatio" in holder:
        return {"value": None, "unit": "", "unit_code": "", "value_text": "(range)"}
    absent = holder.get("dataAbsentReason")
    return {
        "value": None,
        "unit": "",
        "unit_code": "",
        "value_text": f"({concept_text(absent)})" if absent else None,
    }


def _components(resource: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for comp in resource.get("component") or []:
        if not isinstance(comp, dict):
            continue
        coding = preferred_coding(comp.get("code"))
        out.append(
            {
                "display": concept_text(comp.get("code")),
                "code": coding,
                **_value(comp),
            }
        )
    return out


def _status(resource: dict[str, Any]) -> str:
    for key in ("clinicalStatus",):
        coding = preferred_coding(resource.get(key))
        if coding:
            return coding["code"]
    status = resource.get("status")
    return status.strip() if isinstance(status, str) else ""


def record_normalize(
    row: SyncedResource | RecordRow,
    resource: dict[str, Any] | None,
    *,
    include_raw: bool = False,
) -> dict[str, Any]:
    """The friendly view of one row (`resource` is its decrypted payload; None when it cannot be
    read, e.g. after a purge: the item is then flagged `unreadable`). `row` is a model row
    (with `sources_attach`) or a `RecordRow` (a page's row, health system included)."""
    if isinstance(row, RecordRow):
        name, slug = row.health_system_name, row.health_system_slug
    else:
        health_system = row.connection.health_system if row.connection_id else None
        name = health_system.name if health_system else ""
        slug = health_system.slug if health_system else ""
    item: dict[str, Any] = {
        "id": row.pk,
        "resource_type": row.resource_type,
        "fhir_id": row.fhir_id,
        "display": "",
        "code": None,
        "codings": [],
        # Category, status and lastUpdated come from the payload: the store keeps the first two
        # as keyed hashes only, and the third not at all.
        "category": "",
        "status": "",
        "date": row.effective_at.isoformat() if row.effective_at else None,
        "value": None,
        "unit": "",
        "value_text": None,
        "components": [],
        "source": {
            "connection": str(row.connection_id),
            "health_system": name,
            "health_system_slug": slug,
        },
        "last_updated": None,
        "flags": {
            "valid": row.valid,
            "validation_error": row.validation_error,
            "unreadable": resource is None,
        },
    }
    if resource is None:
        return item
    concept = resource_concept(resource)
    found = codings(concept)  # once: the display, the preferred code and the list share them
    item["display"] = _display(resource, concept, found)
    preferred = _preferred(found)
    item["code"] = dict(preferred) if preferred else None  # its own dict, as `preferred_coding`
    item["codings"] = found
    item["status"] = _status(resource)
    item["category"] = resource_category(resource)
    meta = resource.get("meta")
    updated = fhir_datetime(meta.get("lastUpdated")) if isinstance(meta, dict) else None
    item["last_updated"] = updated.isoformat() if updated else None
    item["date"] = resource_date(resource) or item["date"]
    if row.resource_type == "Observation":
        value = _value(resource)
        item["value"], item["unit"], item["value_text"] = (
            value["value"],
            value["unit"],
            value["value_text"],
        )
        item["components"] = _components(resource)
        interp = resource.get("interpretation")
        if interp:
            item["interpretation"] = concept_text(interp)
    elif row.resource_type == "Patient":
        item["demographics"] = demographics(resource)
    elif row.resource_type == "DocumentReference":
        item["attachments"] = [
            {
                "index": i,
                "content_type": str(a.get("contentType", "")),
                "title": str(a.get("title", "")),
                "size": a.get("size") if isinstance(a.get("size"), int) else None,
            }
            for i, a in enumerate(attachments(resource))
        ]
    elif row.resource_type == "AllergyIntolerance":
        item["criticality"] = str(resource.get("criticality", ""))
        item["reactions"] = [
            concept_text(m)
            for r in resource.get("reaction") or []
            if isinstance(r, dict)
            for m in r.get("manifestation") or []
        ]
    elif row.resource_type in ("MedicationRequest", "MedicationAdministration"):
        dosage = resource.get("dosageInstruction") or []
        item["dosage"] = next(
            (str(d.get("text")) for d in dosage if isinstance(d, dict) and d.get("text")), ""
        )
    if include_raw:
        item["resource"] = resource
    return item


def attachments(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c["attachment"]
        for c in resource.get("content") or []
        if isinstance(c, dict) and isinstance(c.get("attachment"), dict)
    ]


def demographics(resource: dict[str, Any]) -> dict[str, Any]:
    telecom = [t for t in resource.get("telecom") or [] if isinstance(t, dict)]
    address = next((a for a in resource.get("address") or [] if isinstance(a, dict)), None)
    return {
        "name": _human_name(resource),
        "birth_date": resource.get("birthDate"),
        "gender": resource.get("gender"),
        "deceased": bool(resource.get("deceasedBoolean") or resource.get("deceasedDateTime")),
        "phone": next((str(t.get("value")) for t in telecom if t.get("system") == "phone"), None),
        "email": next((str(t.get("value")) for t in telecom if t.get("system") == "email"), None),
        "address": (
            {
                "line": [str(x) for x in address.get("line") or []],
                "city": address.get("city"),
                "state": address.get("state"),
                "postal_code": address.get("postalCode"),
                "country": address.get("country"),
            }
            if address
            else None
        ),
        "active": resource.get("active", True),
    }
