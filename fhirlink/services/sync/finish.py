"""The end of a run: per-type counts, the reconcile's tombstones, watermarks, the run's status
and the access-log entry."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

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
from fhirlink.services.sync.store import (
    resources_tombstone,
)
from patientportal.consent.models import Purpose

logger = logging.getLogger(__name__)

S = plan.setting


class FinishMixin:
    run: SyncRun
    connection: Connection
    started: float

    if TYPE_CHECKING:

        def _references_not_granted(self, references: list[str]) -> list[dict[str, Any]]: ...

    def _finish(self, fatal: str = "") -> str:
        now = timezone.now()
        run = SyncRun.objects.get(pk=self.run.pk)
        streams = list(run.streams.all())
        counts: dict[str, dict[str, int]] = {}
        by_type: dict[str, list[SyncStream]] = {}
        for s in streams:
            by_type.setdefault(s.resource_type, []).append(s)
            c = counts.setdefault(
                s.resource_type,
                dict.fromkeys(
                    ("fetched", "created", "updated", "unchanged", "tombstoned", "invalid"), 0
                ),
            )
            for name in ("fetched", "created", "updated", "unchanged", "invalid"):
                c[name] += getattr(s, name)
        completed_types: list[str] = []
        if not fatal:
            for rtype, group in by_type.items():
                if all(s.status == StreamStatus.DONE for s in group):
                    completed_types.append(rtype)
                    full = all(s.mode == StreamMode.FULL for s in group)
                    if full and rtype not in plan.READ_TYPES:
                        # A pass split into date windows cannot see undated resources: it
                        # must not tombstone them (they stay until the server is asked without
                        # a date filter).
                        windowed = any("date" in (s.params or {}) for s in group)
                        counts[rtype]["tombstoned"] = resources_tombstone(
                            connection=self.connection,
                            resource_type=rtype,
                            sync_run_id=run.pk,
                            keep_undated=windowed,
                        )
                    self._watermark(rtype, group, full=full, now=now)
        failed = fatal or any(s.status != StreamStatus.DONE for s in streams)
        if fatal:
            run.errors = [*run.errors, {"code": fatal}][-100:]
        stored_anything = any(c["fetched"] for c in counts.values())
        if not failed:
            # Quarantined pages that a retry replaced lost nothing; any other error is partial.
            lasting = [e for e in run.errors if not e.get("quarantined")]
            status = SyncRunStatus.PARTIAL if lasting else SyncRunStatus.SUCCEEDED
        else:
            status = (
                SyncRunStatus.PARTIAL
                if stored_anything or completed_types
                else SyncRunStatus.FAILED
            )
        run.status = status
        run.counts = counts
        run.skipped = self._references_not_granted(list(run.references or []))
        run.finished_at = now
        run.lease_until = None
        run.requests = getattr(getattr(self, "client", None), "requests_made", run.requests)
        run.duration_ms = int((time.monotonic() - self.started) * 1000)
        run.save(
            update_fields=[
                "status",
                "counts",
                "skipped",
                "finished_at",
                "lease_until",
                "errors",
                "requests",
                "duration_ms",
            ]
        )
        updates: dict[str, Any] = {}
        if status != SyncRunStatus.FAILED:
            updates["last_synced_at"] = now
        Connection.objects.filter(pk=self.connection.pk, status=ConnectionStatus.SYNCING).update(
            status=ConnectionStatus.ACTIVE, **updates
        )
        if updates:
            Connection.objects.filter(pk=self.connection.pk).update(**updates)
        self._access_log(run, counts)
        logger.info("connection %s: sync run %s %s", self.connection.pk, run.pk, status)
        return str(status)

    def _watermark(self, rtype: str, group: list[SyncStream], *, full: bool, now: datetime) -> None:
        candidates = [s.watermark_candidate for s in group if s.watermark_candidate]
        overlap = timedelta(seconds=int(S("FHIRLINK_SYNC_WATERMARK_OVERLAP_SECONDS", 600)))
        since = (min(candidates) - overlap) if candidates else None
        defaults: dict[str, Any] = {}
        if since is not None:
            defaults["since"] = since
        if full:
            defaults["last_full_at"] = now
        if defaults:
            SyncWatermark.objects.update_or_create(
                connection=self.connection, resource_type=rtype, defaults=defaults
            )

    def _access_log(self, run: SyncRun, counts: dict[str, dict[str, int]]) -> None:
        from patientportal.accesslog.models import AccessAction, ActorKind, Outcome
        from patientportal.accesslog.services import access_log_record

        try:
            access_log_record(
                actor_kind=ActorKind.SYSTEM,
                actor_label="fhirlink.sync_connection",
                action=AccessAction.SYNC_WRITE,
                patient=self.connection.patient_id,
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
