"""Changes since a cursor, for the app's offline cache.

Order: (change time, id) ascending; the change time is `updated_at` (set by every write of the
store) or `deleted_at` when later (the reconcile tombstones with a queryset update). A write
whose transaction commits late could carry an `updated_at` older than a cursor already handed
out, so the feed only serves rows older than a settle window
(`FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS`, default 30 s, longer than a sync page's
transaction): a row is served once and never skipped. Rows that stopped being live come back as
tombstones (`deleted: true` with a reason, no data): deleted at the source, entered-in-error or
masked. A purge (disconnect with purge, account deletion) deletes rows outright; the app learns
of it from the connection's status and must drop that connection's cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from fhirlink import vault
from fhirlink.models import SyncedResource
from fhirlink.records import normalize, paging, selectors

KIND = "changes"


def settle_seconds() -> int:
    return int(settings.FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS)


def tombstone_reason(row: SyncedResource) -> str:
    if row.deleted_at is not None:
        return "deleted"
    if row.entered_in_error or vault.index_equals("status", row.status, "entered-in-error"):
        return "entered-in-error"
    if row.masked:
        return "masked"
    return ""


@dataclass
class Changes:
    items: list[dict[str, Any]]
    next_cursor: str
    has_more: bool


def changes_since(
    *, patient: Any, cursor: str | None, size: int, include_raw: bool = False
) -> Changes:
    qs = (
        selectors.records_all(patient=patient)
        .filter(is_reference=False)
        .exclude(resource_type="Binary")
    )
    until = timezone.now() - timedelta(seconds=settle_seconds())
    page, resume = paging.page_by_updated_asc(
        qs,
        kind=KIND,
        patient_id=getattr(patient, "pk", patient),
        cursor=cursor,
        size=size,
        until=until,
    )
    reader = selectors.PayloadReader(patient)
    items: list[dict[str, Any]] = []
    for row in page.rows:
        reason = tombstone_reason(row)
        if reason:
            items.append(
                {
                    "id": row.pk,
                    "resource_type": row.resource_type,
                    "fhir_id": row.fhir_id,
                    "deleted": True,
                    "reason": reason,
                    "changed_at": getattr(row, "changed_at", row.updated_at).isoformat(),
                    "record": None,
                }
            )
            continue
        items.append(
            {
                "id": row.pk,
                "resource_type": row.resource_type,
                "fhir_id": row.fhir_id,
                "deleted": False,
                "reason": "",
                "changed_at": getattr(row, "changed_at", row.updated_at).isoformat(),
                "record": normalize.record_normalize(
                    row, reader.read(row), include_raw=include_raw
                ),
            }
        )
    return Changes(items=items, next_cursor=resume, has_more=page.next_cursor is not None)
