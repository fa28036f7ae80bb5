"""The timeline: encounters, procedures, results (DiagnosticReports, lab Observations) and
documents merged newest first, keyset-paged (one query per page)."""

from __future__ import annotations

from typing import Any

from fhirlink.records import normalize, paging, selectors

KIND = "timeline"


def timeline_page(
    *, patient: Any, cursor: str | None, size: int, include_raw: bool = False
) -> tuple[list[dict[str, Any]], str | None, list[Any]]:
    """(items, next cursor, rows) — rows for ETags and the access log."""
    page = paging.page_by_date_desc(
        selectors.timeline_queryset(patient=patient),
        kind=KIND,
        patient_id=getattr(patient, "pk", patient),
        cursor=cursor,
        size=size,
        narrow=True,
    )
    reader = selectors.PayloadReader(patient)
    items = [
        {**normalize.record_normalize(row, reader.read(row), include_raw=include_raw)}
        for row in page.rows
    ]
    return items, page.next_cursor, page.rows
