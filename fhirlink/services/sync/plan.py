"""What to sync and how: permitted types, Cerner's search parameters, streams per type.

Permitted = granted (Connection.granted_resources) ∩ supported by the server (the discovery
CapabilityStatement) ∩ consented (the `ehr_sync` consent, checked by the engine: all or none).

Per type (CERNER.md §4): the required parameters, whether `_count` is accepted and its maximum,
and whether `_lastUpdated=ge…` is accepted (incremental) or every sync is a full pass.
Observation's full pass is split into date windows after a first probe page, so that the
largest type is not the whole critical path (category is not used to split: point-of-care
results can carry a data-absent category and would be missed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fhirlink.conf import sync_settings


@dataclass(frozen=True)
class TypeSpec:
    params: dict[str, str] = field(default_factory=dict)  # besides patient
    count_max: int | None = None  # None: `_count` not accepted
    last_updated: bool = False
    patient_param: str = "patient"


TYPE_SPECS: dict[str, TypeSpec] = {
    "Observation": TypeSpec(count_max=200, last_updated=True),
    "Condition": TypeSpec(last_updated=True),
    "AllergyIntolerance": TypeSpec(last_updated=True),
    "MedicationRequest": TypeSpec(count_max=100, last_updated=True),
    "Immunization": TypeSpec(last_updated=True),
    "Procedure": TypeSpec(last_updated=True),
    "Encounter": TypeSpec(count_max=100, last_updated=True),
    "DiagnosticReport": TypeSpec(count_max=100, last_updated=True),
    "DocumentReference": TypeSpec(count_max=100, last_updated=True),
    "CarePlan": TypeSpec(params={"category": "assess-plan"}, count_max=100),
    "Goal": TypeSpec(),
    "CareTeam": TypeSpec(),
    "Device": TypeSpec(),
    "ServiceRequest": TypeSpec(last_updated=True),
    "NutritionOrder": TypeSpec(),
    "Consent": TypeSpec(),
}
# Read, not searched: the patient resource itself.
READ_TYPES = ("Patient",)
# Fetched when referenced, cached per connection.
REFERENCE_TYPES = ("Practitioner", "Organization", "Location", "Medication")


def permitted_types(*, granted: list[str], supported: list[str] | None) -> list[str]:
    """granted ∩ supported ∩ what the engine knows how to sync (consent is all-or-nothing and
    checked separately). `supported` None: the server did not say (no filter)."""
    known = set(TYPE_SPECS) | set(READ_TYPES)
    allowed = set(granted) & known
    if supported is not None:
        allowed &= set(supported)
    return sorted(allowed)


def search_params(
    resource_type: str,
    *,
    patient_id: str,
    since: datetime | None = None,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    """The first page's parameters. `categories`: the category tokens the patient granted
    (SMART v2 granular scopes, `fhirlink.scopes.granted_categories`): only those are asked
    for (`category=a,b`), as a server that enforces them requires."""
    spec = TYPE_SPECS[resource_type]
    params: dict[str, Any] = {spec.patient_param: patient_id, **spec.params}
    if categories and "category" not in spec.params:
        params["category"] = ",".join(categories)
    if spec.count_max:
        params["_count"] = str(min(spec.count_max, sync_settings().page_size))
    if since is not None and spec.last_updated:
        params["_lastUpdated"] = "ge" + fhir_instant(since)
    return params


def fhir_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".000Z" if moment.tzinfo else moment.isoformat()


@dataclass(frozen=True)
class Window:
    key: str
    dates: list[str]


def observation_windows(
    *, newest_on_first_page: datetime, oldest_on_first_page: datetime, page_size: int
) -> list[Window]:
    """Date windows covering everything at or before the first page's oldest date.

    The window span aims at `FHIRLINK_SYNC_WINDOW_PAGES` pages, estimated from the first page's
    density; at most `FHIRLINK_SYNC_MAX_WINDOWS` windows reach `FHIRLINK_SYNC_WINDOW_YEARS`
    back, and a last open-ended window takes everything older. Boundaries overlap by nothing
    (ge/lt) except the first window's `le`, which re-reads the first page's oldest instant (its
    siblings at the same instant may be on page 2); upserts make the re-read harmless.
    """
    cfg = sync_settings()
    pages, max_windows, years = cfg.window_pages, cfg.max_windows, cfg.window_years
    first_span = max(newest_on_first_page - oldest_on_first_page, timedelta(hours=1))
    span = max(first_span * pages, timedelta(days=1))
    horizon = oldest_on_first_page - timedelta(days=365 * years)
    count = max(1, min(max_windows, int((oldest_on_first_page - horizon) / span) + 1))
    windows: list[Window] = []
    upper = oldest_on_first_page
    upper_op = "le"
    for n in range(count):
        lower = upper - span
        windows.append(
            Window(
                key=f"w{n:02d}",
                dates=[f"{upper_op}{fhir_instant(upper)}", f"ge{fhir_instant(lower)}"],
            )
        )
        upper, upper_op = lower, "lt"
    windows.append(Window(key=f"w{count:02d}", dates=[f"lt{fhir_instant(upper)}"]))
    return windows
