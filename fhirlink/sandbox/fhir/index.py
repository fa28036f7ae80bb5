"""A tenant's view of a patient's index: base rows plus changes made by advancing the clock."""

from __future__ import annotations

import bisect
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from ..conf import TestPatient
from ..models import SandboxChange
from ..state import clock_now
from .data import PATIENT_TYPES, Row, attributes, base_index, count_for

_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], tuple[list[Row], list[tuple[int, int]]]] = OrderedDict()
_CACHE_SIZE = 64


def changes_version(tenant: str, patient: TestPatient, rtype: str) -> int:
    return (
        SandboxChange.objects.filter(
            tenant=tenant, patient_key=patient.key, resource_type=rtype
        ).aggregate(m=Max("id"))["m"]
        or 0
    )


def merged_rows(
    tenant: str, patient: TestPatient, rtype: str, version: int
) -> tuple[Row, ...] | list[Row]:
    base = base_index(patient.ordinal, rtype)
    if not version:
        return base
    key = ("merged", tenant, patient.key, rtype, version)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit[0]
    rows = list(base)
    by_i = {r.i: pos for pos, r in enumerate(rows)}
    for change in SandboxChange.objects.filter(
        tenant=tenant, patient_key=patient.key, resource_type=rtype
    ).order_by("id"):
        ts = int(change.changed_at.timestamp())
        if change.kind == SandboxChange.Kind.NEW:
            row = attributes(patient, rtype, change.index, ts=ts)._replace(
                lu=ts, version=change.version
            )
            by_i[change.index] = len(rows)
            rows.append(row)
            continue
        pos = by_i.get(change.index)
        if pos is None:
            continue
        row = rows[pos]._replace(lu=ts, version=change.version)
        if change.kind == SandboxChange.Kind.ENTERED_IN_ERROR:
            row = row._replace(status="entered-in-error")
        rows[pos] = row
    rows.sort(key=lambda r: (r.ts, r.i))
    _remember(key, rows)
    return rows


def _remember(key: tuple[Any, ...], rows: list[Row]) -> None:
    with _lock:
        _cache[key] = (rows, [(r.ts, r.i) for r in rows])
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def rows_for(
    tenant: str,
    patient: TestPatient,
    rtype: str,
    filter_key: tuple[Any, ...],
    predicate: Callable[[Row], bool] | None,
    version: int | None = None,
    ts_range: tuple[int, int] | None = None,
) -> tuple[list[Row] | tuple[Row, ...], list[tuple[int, int]]]:
    """The matching rows ascending by (ts, i), and their keys for bisecting; cached per query.
    `ts_range` (inclusive, from the query's date filters) narrows the scan to a slice of the
    index, which is sorted by ts: a date-window search costs its window, not the record."""
    if version is None:
        version = changes_version(tenant, patient, rtype)
    key = ("rows", tenant, patient.key, rtype, version, filter_key)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    rows = merged_rows(tenant, patient, rtype, version)
    if ts_range is not None:
        lo = bisect.bisect_left(rows, ts_range[0], key=_ts)
        rows = rows[lo : bisect.bisect_right(rows, ts_range[1], lo=lo, key=_ts)]
    selected = [r for r in rows if predicate(r)] if predicate is not None else list(rows)
    _remember(key, selected)
    with _lock:
        return _cache[key]


def _ts(row: Row) -> int:
    return row.ts


_lookups: OrderedDict[tuple[Any, ...], dict[int, Row]] = OrderedDict()


def row_get(tenant: str, patient: TestPatient, rtype: str, i: int) -> Row | None:
    """One resource's index row (with the tenant's changes), or None if it does not exist."""
    version = changes_version(tenant, patient, rtype)
    key = (tenant, patient.key, rtype, version)
    with _lock:
        lookup = _lookups.get(key)
    if lookup is None:
        lookup = {r.i: r for r in merged_rows(tenant, patient, rtype, version)}
        with _lock:
            _lookups[key] = lookup
            while len(_lookups) > 16:
                _lookups.popitem(last=False)
    return lookup.get(i)


def page_desc(
    keys: list[tuple[int, int]], after: tuple[int, int] | None, count: int
) -> tuple[int, int]:
    """Positions [lo, hi) of the next page, newest first, strictly older than ``after``."""
    hi = len(keys) if after is None else bisect.bisect_left(keys, after)
    return max(0, hi - count), hi


def page_asc(
    keys: list[tuple[int, int]], after: tuple[int, int] | None, count: int
) -> tuple[int, int]:
    lo = 0 if after is None else bisect.bisect_right(keys, after)
    return lo, min(len(keys), lo + count)


def changes_make(
    *,
    tenant: str,
    patient: TestPatient,
    now: datetime | None = None,
    new: int = 0,
    updated: int = 0,
    entered_in_error: int = 0,
    types: tuple[str, ...] = ("Observation",),
    seed: int = 0,
) -> list[SandboxChange]:
    """New, updated and entered-in-error resources, stamped with the sandbox clock's now."""
    now = now or clock_now(tenant)
    made: list[SandboxChange] = []
    with transaction.atomic():
        for rtype in types:
            if rtype not in PATIENT_TYPES:
                raise ValueError(f"unknown resource type {rtype!r}")
            existing = SandboxChange.objects.filter(
                tenant=tenant, patient_key=patient.key, resource_type=rtype
            )
            new_count = existing.filter(kind=SandboxChange.Kind.NEW).count()
            touched = set(
                existing.exclude(kind=SandboxChange.Kind.NEW).values_list("index", flat=True)
            )
            base_n = count_for(patient, rtype)
            for k in range(new):
                made.append(
                    SandboxChange(
                        tenant=tenant,
                        patient_key=patient.key,
                        resource_type=rtype,
                        index=base_n + new_count + k,
                        kind=SandboxChange.Kind.NEW,
                        version=1,
                        changed_at=now,
                    )
                )
            # Deterministic test data, not security.
            rng = random.Random(f"{tenant}:{patient.key}:{rtype}:{seed}:{len(touched)}")  # noqa: S311
            eie_positions = {41 + 97 * m for m in range(base_n // 97 + 1)}
            candidates = [
                i for i in range(base_n) if i not in touched and i not in eie_positions and i >= 3
            ]
            picks = rng.sample(candidates, min(len(candidates), updated + entered_in_error))
            for pos, index in enumerate(picks):
                kind = (
                    SandboxChange.Kind.UPDATED
                    if pos < updated
                    else SandboxChange.Kind.ENTERED_IN_ERROR
                )
                made.append(
                    SandboxChange(
                        tenant=tenant,
                        patient_key=patient.key,
                        resource_type=rtype,
                        index=index,
                        kind=kind,
                        version=2,
                        changed_at=now,
                    )
                )
        SandboxChange.objects.bulk_create(made)
    return made
