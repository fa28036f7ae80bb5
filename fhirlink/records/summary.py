"""The summary screen in one call: demographics, active conditions and medications, allergies,
latest vital signs (one per code), recent lab results, immunizations, with counts, and what the
patient shared (`sharing`: per record type and Observation category, see `records.sharing`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from fhirlink.models import SyncedResource
from fhirlink.records import normalize, paging, selectors, sharing


def _limit() -> int:
    return int(settings.FHIRLINK_RECORDS_SUMMARY_LIMIT)


def _newest(qs: Any, n: int) -> list[SyncedResource]:
    return paging.rows_by_date_desc(qs, n)


def summary_build(*, patient: Any) -> tuple[dict[str, Any], list[SyncedResource]]:
    """(summary, every row shown) — rows for the ETag and the access log."""
    n = _limit()
    live = selectors.records_live(patient=patient)
    patients = _newest(live.filter(resource_type="Patient"), 1)
    conditions = _newest(
        live.filter(resource_type="Condition", clinical_status__in=selectors.ACTIVE_CLINICAL), n
    )
    medications = _newest(
        live.filter(resource_type="MedicationRequest", status__in=selectors.ACTIVE_MEDICATION), n
    )
    allergies = _newest(
        live.filter(resource_type="AllergyIntolerance").exclude(
            clinical_status__in=("inactive", "resolved")
        ),
        n,
    )
    # Latest vital per code: newest first over a bounded window, first row of each code wins.
    vitals: list[SyncedResource] = []
    seen: set[str] = set()
    for row in _newest(live.filter(resource_type="Observation", category="vital-signs"), 200):
        key = row.code or row.fhir_id
        if key not in seen:
            seen.add(key)
            vitals.append(row)
    labs = _newest(live.filter(resource_type="Observation", category="laboratory"), n)
    immunizations = _newest(live.filter(resource_type="Immunization"), n)
    counts = selectors.summary_counts(patient=patient)
    reader = selectors.PayloadReader(patient)

    def norm(rows: list[SyncedResource]) -> list[dict[str, Any]]:
        return [normalize.record_normalize(r, reader.read(r)) for r in rows]

    demographics = None
    if patients:
        resource = reader.read(patients[0])
        if resource is not None:
            demographics = {
                **normalize.demographics(resource),
                "record_id": patients[0].pk,
                "health_system": patients[0].connection.health_system.name,
            }
    summary = {
        "demographics": demographics,
        "conditions": norm(conditions),
        "medications": norm(medications),
        "allergies": norm(allergies),
        "vital_signs": norm(vitals),
        "lab_results": norm(labs),
        "immunizations": norm(immunizations),
        "counts": counts,
        "sharing": sharing.sharing_build(patient=patient),
    }
    rows = patients + conditions + medications + allergies + vitals + labs + immunizations
    return summary, rows
