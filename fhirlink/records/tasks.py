"""Celery tasks of the records read side (registered through `fhirlink.tasks`)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="fhirlink.records_export", acks_late=True, soft_time_limit=600, time_limit=660)
def records_export(export_id: str) -> str:
    from fhirlink.records.export import export_build

    state = export_build(export_id)
    return str(state.get("status")) if state else "missing"
