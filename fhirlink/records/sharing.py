"""What the patient shared, per record type and per Observation category (issue #20).

A patient may untick resource types at the health system, or (SMART v2 granular scopes, which
ONC HTI-1 makes EHRs offer) share only some Observation categories. The records API says so as
data, never as an error: each record type is

- `shared`: every connection in scope that has it was granted it whole;
- `partly_shared`: some categories only (Observation), or shared at one health system and not
  at another;
- `not_shared`: the patient declined it everywhere it was offered;
- `not_available`: no connection in scope has it (not requested, or the server lacks it).

Observation's categories carry the same values. Read from the connections' grants (one query),
never from the synced rows: an empty list of a shared type is "shared, nothing there yet".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhirlink.models import Connection, ConnectionStatus
from fhirlink.records.selectors import RECORD_TYPES
from fhirlink.scopes import category_code, granted_categories

SHARED = "shared"
PARTLY_SHARED = "partly_shared"
NOT_SHARED = "not_shared"
NOT_AVAILABLE = "not_available"
STATES = (SHARED, PARTLY_SHARED, NOT_SHARED, NOT_AVAILABLE)

# FHIR's observation-category codes (http://terminology.hl7.org/CodeSystem/observation-category).
OBSERVATION_CATEGORIES = (
    "laboratory",
    "vital-signs",
    "social-history",
    "imaging",
    "survey",
    "exam",
    "procedure",
    "therapy",
    "activity",
)
# Connections whose grant still stands (a reconnect replaces it; a disconnect ends it).
_GRANTED = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING, ConnectionStatus.NEEDS_REAUTH)


def _combine(states: Iterable[str]) -> str:
    """One state from each connection's."""
    present = [s for s in states if s != NOT_AVAILABLE]
    if not present:
        return NOT_AVAILABLE
    if all(s == SHARED for s in present):
        return SHARED
    if all(s == NOT_SHARED for s in present):
        return NOT_SHARED
    return PARTLY_SHARED


def _connection_state(
    resource_type: str, granted: set[str], declined: set[str], limited: dict[str, list[str]]
) -> tuple[str, dict[str, str]]:
    """(the type's state at one connection, {category: state} for Observation)."""
    if resource_type in granted:
        codes = {category_code(t) for t in limited.get(resource_type, [])}
        if not codes:
            state, categories = SHARED, dict.fromkeys(OBSERVATION_CATEGORIES, SHARED)
        else:
            state = PARTLY_SHARED
            categories = {c: SHARED if c in codes else NOT_SHARED for c in OBSERVATION_CATEGORIES}
    elif resource_type in declined:
        state, categories = NOT_SHARED, dict.fromkeys(OBSERVATION_CATEGORIES, NOT_SHARED)
    else:
        state, categories = NOT_AVAILABLE, dict.fromkeys(OBSERVATION_CATEGORIES, NOT_AVAILABLE)
    return state, categories


def sharing_build(*, patient: Any) -> list[dict[str, Any]]:
    """Per record type (the API's names, in `RECORD_TYPES` order): `record_type`,
    `resource_type`, `sharing`, and `categories` (Observation: one `{category, sharing}` per
    observation-category code; other types: empty). `patient` is an account's patient, or a
    records scope narrowed to some of its connections (`connection_ids`)."""
    owner = getattr(patient, "patient", patient)
    connections = Connection.objects.filter(patient=owner, status__in=_GRANTED)
    connection_ids = getattr(patient, "connection_ids", None)
    if connection_ids is not None:
        connections = connections.filter(pk__in=connection_ids)
    grants = [
        (set(granted or []), set(declined or []), granted_categories(scopes or ""))
        for granted, declined, scopes in connections.values_list(
            "granted_resources", "declined_resources", "granted_scopes"
        )
    ]
    out: list[dict[str, Any]] = []
    for record_type, resource_type in RECORD_TYPES.items():
        per_connection = [_connection_state(resource_type, *grant) for grant in grants]
        entry: dict[str, Any] = {
            "record_type": record_type,
            "resource_type": resource_type,
            "sharing": _combine(state for state, _ in per_connection),
            "categories": [],
        }
        if resource_type == "Observation":
            entry["categories"] = [
                {"category": code, "sharing": _combine(c[code] for _, c in per_connection)}
                for code in OBSERVATION_CATEGORIES
            ]
        out.append(entry)
    return out
