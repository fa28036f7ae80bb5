"""Observation trends: one time series per LOINC code, components included, units normalised.

Matching: the requested LOINC code plus its equivalents (e.g. body temperature 8310-5 also
matches axillary 8328-7 and oral 8331-1; body weight 29463-7 also matches measured 3141-9),
panels that carry it as a component (systolic 8480-6 and diastolic 8462-4 inside blood pressure
85354-9), and Cerner's proprietary codeSet codings where a mapping is configured
(`FHIRLINK_RECORDS_CERNER_CODE_MAP`, {"codeSet code": "LOINC"}; Cerner says LOINC mapping varies
by site, so there is no built-in table of millennium codes). Values are converted to the
canonical unit of the code family (`normalize.CANONICAL_UNITS`: kg, cm, Cel, mg/dL, mm[Hg], /min,
%); a value in a unit that cannot be converted is left out and counted in `skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from fhirlink.records import normalize, selectors

EQUIVALENTS: dict[str, tuple[str, ...]] = {
    "8310-5": ("8310-5", "8328-7", "8331-1", "8332-9", "8333-7", "8334-5", "8329-5", "8330-3"),
    "29463-7": ("29463-7", "3141-9", "3142-7"),
    "8302-2": ("8302-2", "8306-3", "3137-7"),
    "2339-0": ("2339-0", "2345-7", "41653-7", "14749-6", "15074-8"),
    "85354-9": ("85354-9", "55284-4"),
    "8867-4": ("8867-4",),
    "9279-1": ("9279-1",),
    "59408-5": ("59408-5", "2708-6", "2710-2"),
}
for _key, _group in list(EQUIVALENTS.items()):
    for _code in _group:
        EQUIVALENTS.setdefault(_code, _group)

BP_PANEL = "85354-9"
BP_COMPONENTS = ("8480-6", "8462-4")
# component code -> panel codes that carry it
PANELS_WITH_COMPONENT: dict[str, tuple[str, ...]] = {
    "8480-6": EQUIVALENTS[BP_PANEL],
    "8462-4": EQUIVALENTS[BP_PANEL],
}
# panel code -> the component series it is shown as
PANEL_SERIES: dict[str, tuple[str, ...]] = dict.fromkeys(EQUIVALENTS[BP_PANEL], BP_COMPONENTS)
SERIES_DISPLAY = {
    "8480-6": "Systolic blood pressure",
    "8462-4": "Diastolic blood pressure",
}


def cerner_code_map() -> dict[str, str]:
    return {str(k): str(v) for k, v in settings.FHIRLINK_RECORDS_CERNER_CODE_MAP.items()}


def max_points() -> int:
    return int(settings.FHIRLINK_RECORDS_TREND_MAX_POINTS)


@dataclass
class Series:
    code: str
    display: str
    unit: str
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trend:
    code: str
    display: str
    unit: str
    series: list[Series]
    skipped: int = 0
    truncated: bool = False


def _codes_of(resource: dict[str, Any]) -> set[str]:
    return {c["code"] for c in normalize.codings(resource.get("code"))}


def _std_codes(concept: Any) -> set[str]:
    mapping = cerner_code_map()
    out = set()
    for c in normalize.codings(concept):
        if normalize.is_proprietary(c["system"]):
            if c["code"] in mapping:
                out.add(mapping[c["code"]])
        else:
            out.add(c["code"])
    return out


def trend_build(
    *,
    patient: Any,
    code: str,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    connection: Any = None,
) -> Trend:
    """The series for `code` (ascending by date). Reads only the matching rows' payloads."""
    wanted = set(EQUIVALENTS.get(code, (code,)))
    panels = set(PANELS_WITH_COMPONENT.get(code, ()))
    series_codes: tuple[str, ...] = PANEL_SERIES.get(code, (code,))
    proprietary = [k for k, v in cerner_code_map().items() if v in wanted | panels]
    column_codes = wanted | panels | set(proprietary)
    canonical = normalize.CANONICAL_UNITS.get(series_codes[0]) or normalize.CANONICAL_UNITS.get(
        code
    )
    qs = selectors.records_live(patient=patient, resource_type="Observation").filter(
        code__in=sorted(column_codes), effective_at__isnull=False
    )
    if date_from is not None:
        qs = qs.filter(effective_at__gte=date_from)
    if date_to is not None:
        qs = qs.filter(effective_at__lt=date_to)
    if connection is not None:
        qs = qs.filter(connection_id=connection)
    limit = max_points()
    rows = list(qs.order_by("-effective_at", "-id")[: limit + 1])
    truncated = len(rows) > limit
    rows = list(reversed(rows[:limit]))
    selectors.sources_attach(rows)
    reader = selectors.PayloadReader(patient)
    series = {
        c: Series(
            code=c,
            display=SERIES_DISPLAY.get(c, ""),
            unit=canonical.unit if canonical else "",
        )
        for c in series_codes
    }
    display = ""
    skipped = 0
    for row in rows:
        resource = reader.read(row)
        if resource is None:
            continue
        own = _std_codes(resource.get("code"))
        base = {
            "date": normalize.resource_date(resource),
            "record_id": row.pk,
            "health_system": row.connection.health_system.name,
        }
        holders: list[tuple[str, dict[str, Any]]] = []
        if own & wanted and code not in PANELS_WITH_COMPONENT:
            if code in PANEL_SERIES:  # a panel: its components are the series
                for comp in resource.get("component") or []:
                    if isinstance(comp, dict):
                        for c in _std_codes(comp.get("code")) & set(series_codes):
                            holders.append((c, comp))
            else:
                holders.append((code, resource))
                display = display or normalize.concept_text(resource.get("code"))
        elif own & wanted:  # a standalone component observation (e.g. systolic alone)
            holders.append((code, resource))
        elif own & panels:
            for comp in resource.get("component") or []:
                if isinstance(comp, dict) and code in _std_codes(comp.get("code")):
                    holders.append((code, comp))
        for series_code, holder in holders:
            value, unit = normalize.quantity(holder.get("valueQuantity"))
            if value is None:
                skipped += 1
                continue
            converted = normalize.unit_convert(value, unit, canonical) if canonical else value
            if converted is None:
                skipped += 1
                continue
            if canonical is None and not series[series_code].unit:
                series[series_code].unit = unit
            elif canonical is None and unit != series[series_code].unit:
                skipped += 1  # unknown family: only one unit can be plotted
                continue
            if not series[series_code].display:
                series[series_code].display = normalize.concept_text(holder.get("code"))
            series[series_code].points.append(
                {
                    **base,
                    "value": round(converted, 2),
                    "original_value": value,
                    "original_unit": unit,
                }
            )
    if not display:
        display = (
            "Blood pressure"
            if code in PANEL_SERIES
            else next((s.display for s in series.values() if s.display), "")
        )
    return Trend(
        code=code,
        display=display,
        unit=canonical.unit if canonical else next((s.unit for s in series.values()), ""),
        series=list(series.values()),
        skipped=skipped,
        truncated=truncated,
    )


def trend_codes_available(*, patient: Any) -> list[dict[str, Any]]:
    """The Observation codes of the patient with numeric-series potential (vital signs and
    laboratory), with counts, most frequent first. One aggregate query over the store's hashed
    columns, then one payload per distinct code (the code's clear value is only in the payload:
    the one the store indexed, `columns_extract`'s standard-first coding)."""
    from django.db.models import Count, Min

    from fhirlink import vault
    from fhirlink.services.sync.prepare import columns_extract

    categories = ("vital-signs", "laboratory")
    groups = list(
        selectors.records_live(patient=patient, resource_type="Observation")
        .filter(category__in=categories)
        .exclude(code="")
        .order_by()
        .values_list("code", "category")
        .annotate(n=Count("id"), first=Min("id"))
    )
    rows = selectors.records_live(patient=patient, resource_type="Observation").filter(
        pk__in=[first for *_, first in groups]
    )
    reader = selectors.PayloadReader(patient)
    clear: dict[int, str] = {}
    for row in rows:
        resource = reader.read(row)
        if resource is not None:
            # b"": the canonical JSON is not needed for the code (only for the masked check).
            clear[row.pk] = columns_extract(resource, b"").code
    counts: dict[tuple[str, str], int] = {}  # a rotation in progress splits a code in two
    for hashed_category, n, first in ((g[1], g[2], g[3]) for g in groups):
        code = clear.get(first)
        if not code:
            continue  # unreadable (purged meanwhile): nothing to name it by
        category = next(
            (c for c in categories if vault.index_equals("category", hashed_category, c)), ""
        )
        counts[(code, category)] = counts.get((code, category), 0) + int(n)
    out: list[dict[str, Any]] = []
    for (code, category), n in counts.items():
        canonical = normalize.CANONICAL_UNITS.get(code)
        out.append(
            {
                "code": code,
                "category": category,
                "count": n,
                "unit": canonical.unit if canonical else "",
            }
        )
    out.sort(key=lambda c: (-c["count"], c["code"]))
    return out
