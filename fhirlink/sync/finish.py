"""The end of a run (`fhirlink.sync_run_finish`, or a step that found the run must stop):
per-type counts, the reconcile's tombstones, watermarks, the run's status and the access-log
entry. Idempotent: only a running run is finished, under its row lock."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from fhirlink.conf import sync_settings
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncWatermark,
)
from fhirlink.models.sync import StreamMode, StreamStatus
from fhirlink.services.sync import plan
from fhirlink.services.sync.store import resources_tombstone
from fhirlink.sync.grants import references_not_granted
from patientportal.consent.models import Purpose

logger = logging.getLogger(__name__)

COUNTS = ("fetched", "created", "updated", "unchanged", "invalid")


def run_finish(*, run_id: Any, fatal: str = "") -> str:
    """Finish the run (with `fatal`: stopped early with that code); its final status."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return "gone"
        if run.status not in (SyncRunStatus.RUNNING, SyncRunStatus.QUEUED):
            return str(run.status)
        connection = Connection.objects.select_related("health_system").get(pk=run.connection_id)
        status, counts = _finish(run, connection, fatal)
    _access_log(run, connection, counts)
    logger.info("connection %s: sync run %s %s", connection.pk, run.pk, status)
    return status


def _finish(
    run: SyncRun, connection: Connection, fatal: str
) -> tuple[str, dict[str, dict[str, int]]]:
    now = timezone.now()
    streams = list(run.streams.all())
    counts: dict[str, dict[str, int]] = {}
    by_type: dict[str, list[SyncStream]] = {}
    for s in streams:
        by_type.setdefault(s.resource_type, []).append(s)
        c = counts.setdefault(s.resource_type, dict.fromkeys((*COUNTS, "tombstoned"), 0))
        for name in COUNTS:
            c[name] += getattr(s, name)
    completed: list[str] = []
    if not fatal:
        for rtype, group in by_type.items():
            if all(s.status == StreamStatus.DONE for s in group):
                completed.append(rtype)
                full = all(s.mode == StreamMode.FULL for s in group)
                if full and rtype not in plan.READ_TYPES:
                    # A pass split into date windows cannot see undated resources: it must not
                    # tombstone them (they stay until the server is asked without a date).
                    counts[rtype]["tombstoned"] = resources_tombstone(
                        connection=connection,
                        resource_type=rtype,
                        sync_run_id=run.pk,
                        keep_undated=any("date" in (s.params or {}) for s in group),
                    )
                _watermark(connection, rtype, group, full=full, now=now)
    failed = fatal or any(s.status != StreamStatus.DONE for s in streams)
    if fatal:
        run.errors = [*run.errors, {"code": fatal}][-100:]
    if not failed:
        # Quarantined pages that a retry replaced lost nothing; any other error is partial.
        lasting = [e for e in run.errors if not e.get("quarantined")]
        status = SyncRunStatus.PARTIAL if lasting else SyncRunStatus.SUCCEEDED
    elif any(c["fetched"] for c in counts.values()) or completed:
        status = SyncRunStatus.PARTIAL
    else:
        status = SyncRunStatus.FAILED
    run.status = status
    run.counts = counts
    # Not read because not granted (not an error): [{type, reason, references}].
    run.connection = connection
    run.skipped = references_not_granted(run)
    run.finished_at = now
    run.lease_until = None
    started = run.started_at or run.created_at
    run.duration_ms = int((now - started).total_seconds() * 1000)
    run.save(
        update_fields=[
            "status",
            "counts",
            "skipped",
            "finished_at",
            "lease_until",
            "errors",
            "duration_ms",
        ]
    )
    updates: dict[str, Any] = {}
    if status != SyncRunStatus.FAILED:
        updates["last_synced_at"] = now
    # A `syncing` status left by an older version goes back to `active`.
    Connection.objects.filter(pk=connection.pk, status=ConnectionStatus.SYNCING).update(
        status=ConnectionStatus.ACTIVE, **updates
    )
    if updates:
        Connection.objects.filter(pk=connection.pk).update(**updates)
    return str(status), counts


def _watermark(
    connection: Connection, rtype: str, group: list[SyncStream], *, full: bool, now: datetime
) -> None:
    candidates = [s.watermark_candidate for s in group if s.watermark_candidate]
    overlap = timedelta(seconds=sync_settings().watermark_overlap_seconds)
    defaults: dict[str, Any] = {}
    if candidates:
        defaults["since"] = min(candidates) - overlap
    if full:
        defaults["last_full_at"] = now
    if defaults:
        SyncWatermark.objects.update_or_create(
            connection=connection, resource_type=rtype, defaults=defaults
        )


def _access_log(run: SyncRun, connection: Connection, counts: dict[str, dict[str, int]]) -> None:
    from patientportal.accesslog.models import AccessAction, ActorKind, Outcome
    from patientportal.accesslog.services import access_log_record

    try:
        access_log_record(
            actor_kind=ActorKind.SYSTEM,
            actor_label="fhirlink.sync_connection",
            action=AccessAction.SYNC_WRITE,
            patient=connection.patient_id,
            purpose=Purpose.EHR_SYNC,
            outcome=Outcome.SUCCESS if run.status != SyncRunStatus.FAILED else Outcome.ERROR,
            query={
                "sync_run": str(run.pk),
                "status": str(run.status),
                "resource_types": sorted(counts),
                "written": sum(c["created"] + c["updated"] for c in counts.values()),
                "tombstoned": sum(c["tombstoned"] for c in counts.values()),
            },
        )
    except Exception:
        logger.exception("sync run %s: access log entry failed", run.pk)
