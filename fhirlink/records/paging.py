"""Opaque, signed keyset cursors bound to the patient.

A cursor is `django.core.signing` over (kind, patient hash, position): the client cannot forge
or edit it, one patient's cursor is refused for another (400 `invalid_cursor`), and a cursor
of one listing (e.g. the changes feed) is refused by another. Keyset conditions keep pages
stable under concurrent inserts (no offsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.core import signing
from django.db.models import Q, QuerySet
from django.utils.crypto import salted_hmac

from fhirlink.models import SyncedResource
from fhirlink.records.selectors import RecordRow, record_rows, sources_attach
from patientportal.core.errors import ValidationFailed

SALT = "fhirlink.records.cursor"
EPOCH = "1970-01-01T00:00:00+00:00"


class InvalidCursor(ValidationFailed):
    default_code = "invalid_cursor"
    default_message = "The cursor is not valid for this listing."


def _owner(patient_id: Any) -> str:
    return salted_hmac(SALT, str(patient_id)).hexdigest()[:16]


def cursor_encode(*, kind: str, patient_id: Any, position: Sequence[Any]) -> str:
    return signing.dumps([kind, _owner(patient_id), list(position)], salt=SALT, compress=True)


def cursor_decode(value: str, *, kind: str, patient_id: Any) -> list[Any]:
    try:
        data = signing.loads(value, salt=SALT)
    except signing.BadSignature:
        raise InvalidCursor() from None
    if (
        not isinstance(data, list)
        or len(data) != 3
        or data[0] != kind
        or data[1] != _owner(patient_id)
        or not isinstance(data[2], list)
    ):
        raise InvalidCursor()
    return data[2]


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidCursor() from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCursor()
    return value


RowT = TypeVar("RowT")


@dataclass
class Page(Generic[RowT]):
    rows: list[RowT]
    next_cursor: str | None


def _ordered(
    qs: QuerySet[SyncedResource], order: tuple[str, ...], n: int, narrow: bool
) -> list[RecordRow]:
    if not narrow:
        return record_rows(qs.order_by(*order)[:n])
    ids = list(qs.order_by(*order).values_list("id", flat=True)[:n])
    by_id = {row.pk: row for row in record_rows(qs.filter(pk__in=ids))} if ids else {}
    return [by_id[i] for i in ids if i in by_id]


def page_by_date_desc(
    qs: QuerySet[SyncedResource],
    *,
    kind: str,
    patient_id: Any,
    cursor: str | None,
    size: int,
    narrow: bool = False,
) -> Page[RecordRow]:
    """Newest clinical date first, undated last, then id (effective_at DESC NULLS LAST, id DESC).

    Two index-friendly steps instead of one NULLS LAST sort (which cannot use the
    (patient, resource_type, effective_at) index and sorts every row with its payload): dated
    rows newest first, then, only when the page is not full, undated rows by id. `narrow`: sort
    (id, date) pairs, then load the page by id, for queries no index orders (the timeline's
    several types), so the database never sorts payloads. Rows are `RecordRow`s (the served
    columns and the health system, one query per step; no model instances)."""
    eff: datetime | None = None
    last_id: int | None = None
    if cursor:
        raw = cursor_decode(cursor, kind=kind, patient_id=patient_id)
        if len(raw) != 2:
            raise InvalidCursor()
        eff, last_id = _dt(raw[0]), _int(raw[1])
    rows: list[RecordRow] = []
    if cursor is None or eff is not None:
        dated = qs.filter(effective_at__isnull=False)
        if eff is not None:
            # `<=` plus an exclusion keeps an index range condition (an OR would not).
            dated = dated.filter(effective_at__lte=eff).exclude(effective_at=eff, id__gte=last_id)
        rows = _ordered(dated, ("-effective_at", "-id"), size + 1, narrow)
    if len(rows) <= size:
        undated = qs.filter(effective_at__isnull=True)
        if cursor is not None and eff is None:
            undated = undated.filter(id__lt=last_id)
        rows += _ordered(undated, ("-id",), size + 1 - len(rows), narrow)
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = cursor_encode(
            kind=kind,
            patient_id=patient_id,
            position=[last.effective_at.isoformat() if last.effective_at else None, last.pk],
        )
    return Page(rows=rows, next_cursor=next_cursor)


def rows_by_date_desc(qs: QuerySet[SyncedResource], n: int) -> list[SyncedResource]:
    """The `n` newest rows (same order as `page_by_date_desc`, no cursor)."""
    rows = list(qs.filter(effective_at__isnull=False).order_by("-effective_at", "-id")[:n])
    if len(rows) < n:
        rows += list(qs.filter(effective_at__isnull=True).order_by("-id")[: n - len(rows)])
    sources_attach(rows)
    return rows


def change_time() -> Any:
    """When a row last changed for the feed: `updated_at`, or `deleted_at` when later (the
    store's reconcile tombstones rows with a queryset update, which leaves `updated_at`)."""
    from django.db.models import F
    from django.db.models.functions import Coalesce, Greatest

    return Greatest(F("updated_at"), Coalesce(F("deleted_at"), F("updated_at")))


def page_by_updated_asc(
    qs: QuerySet[SyncedResource],
    *,
    kind: str,
    patient_id: Any,
    cursor: str | None,
    size: int,
    until: datetime,
) -> tuple[Page[SyncedResource], str]:
    """Oldest change first: (change time, id) ascending, up to `until`. Always returns a cursor
    to resume from (the position after the last row, or the unchanged position). Sorts narrow
    (id, time) pairs first, then loads the page's rows by id: two queries per page."""
    position: list[Any] = []
    keyed = qs.annotate(changed_at=change_time()).filter(changed_at__lte=until)
    if cursor:
        raw = cursor_decode(cursor, kind=kind, patient_id=patient_id)
        if len(raw) != 2:
            raise InvalidCursor()
        after, last_id = _dt(raw[0]), _int(raw[1])
        position = raw
        keyed = keyed.filter(Q(changed_at__gt=after) | Q(changed_at=after, id__gt=last_id))
    keys = list(keyed.order_by("changed_at", "id").values_list("id", "changed_at")[: size + 1])
    more = len(keys) > size
    keys = keys[:size]
    by_id = qs.in_bulk([k[0] for k in keys]) if keys else {}
    rows = [by_id[k[0]] for k in keys if k[0] in by_id]
    for row, (_, changed) in zip(rows, keys, strict=False):
        row.changed_at = changed  # type: ignore[attr-defined]
    sources_attach(rows)
    if keys:
        position = [keys[-1][1].isoformat(), keys[-1][0]]
    resume = cursor_encode(kind=kind, patient_id=patient_id, position=position or [EPOCH, 0])
    return Page(rows=rows, next_cursor=resume if more else None), resume
