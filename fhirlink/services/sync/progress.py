"""Sync progress (reads): what the connections API and the admin show."""

from __future__ import annotations

from typing import Any

from fhirlink.models import Connection, SyncRun, SyncRunStatus
from fhirlink.models.sync import StreamStatus

COUNT_NAMES = ("fetched", "created", "updated", "unchanged", "tombstoned", "invalid")


def sync_run_progress(run: SyncRun) -> dict[str, Any]:
    """Per type and overall: streams done / total, counts, pages; a finished run's counts."""
    types: dict[str, dict[str, Any]] = {}
    streams = list(
        run.streams.values(
            "resource_type",
            "status",
            "pages",
            "fetched",
            "created",
            "updated",
            "unchanged",
            "invalid",
        )
    )
    for s in streams:
        t = types.setdefault(
            s["resource_type"],
            {"status": "done", "streams": 0, "streams_done": 0, "pages": 0}
            | dict.fromkeys(COUNT_NAMES, 0),
        )
        t["streams"] += 1
        t["pages"] += s["pages"]
        for name in ("fetched", "created", "updated", "unchanged", "invalid"):
            t[name] += s[name]
        if s["status"] == StreamStatus.DONE:
            t["streams_done"] += 1
        elif s["status"] == StreamStatus.FAILED:
            t["status"] = "failed"
        elif t["status"] != "failed":
            t["status"] = "running" if s["pages"] else "pending"
    for rtype, counts in (run.counts or {}).items():
        if rtype in types:
            types[rtype]["tombstoned"] = int(counts.get("tombstoned", 0))
    total = sum(t["streams"] for t in types.values())
    done = sum(t["streams_done"] for t in types.values())
    finished = run.status not in (SyncRunStatus.QUEUED, SyncRunStatus.RUNNING)
    percent = 100 if finished else (int(100 * done / total) if total else 0)
    return {
        "run": str(run.pk),
        "status": run.status,
        "trigger": run.trigger,
        "percent": percent,
        "types_total": len(types),
        "types_done": sum(1 for t in types.values() if t["streams_done"] == t["streams"]),
        "pages": run.pages,
        "bytes": run.bytes,
        "fetched": sum(t["fetched"] for t in types.values()),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_ms": run.duration_ms,
        "errors": [e.get("code") for e in (run.errors or [])][:20],
        # Not read because not granted (not an error): [{type, reason, references}].
        "skipped": list(run.skipped or []),
        "types": types,
    }


def sync_progress_get(*, connection: Connection) -> dict[str, Any] | None:
    run = SyncRun.objects.filter(connection=connection).order_by("-created_at").first()
    if run is None:
        return None
    return sync_run_progress(run)
