"""`manage.py sync_benchmark`'s production process layout: syncs run by real `celery worker`
processes (prefork, `--concurrency` processes) on the configured broker and database
(PostgreSQL + Redis in production), started and stopped around each measured sync, so their
CPU (from the kernel's accounting once they are reaped) and peak memory (each pool process's
VmHWM) are that sync's own, less an idle worker's start and stop."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = ("Condition", "MedicationRequest", "AllergyIntolerance", "Observation")


def _peak_rss_mb(pid: int) -> list[float]:
    """VmHWM of each child (pool process) of `pid`, in MB."""
    peaks: list[float] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return peaks
    for child in children:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peaks


class Worker:
    """A `celery worker` of this project, started for one measurement."""

    def __init__(self, processes: int, env: dict[str, str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix="sync-bench-worker-", suffix=".log")[1])
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "patientportal",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={processes}",
            "--pool=prefork",
            "--prefetch-multiplier=1",
            "--optimization=fair",
            "-Q",
            "celery",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"sync-bench-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 (this project's worker)
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while b" ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: see {self.log}")
            time.sleep(0.1)

    def stop(self) -> list[float]:
        """Stop it (warm shutdown); each pool process's peak RSS, read just before."""
        peaks = _peak_rss_mb(self.proc.pid)
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.unlink(missing_ok=True)
        return peaks


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker_sync(
    *, connection_id: str | None, kind: str, processes: int, env: dict[str, str]
) -> dict[str, Any]:
    """One sync of the connection (None: none, an idle worker's cost) run by a fresh worker:
    seconds from the request to the run's end, seconds until the summary's streams were
    stored, CPU of the worker's processes, peak RSS per pool process, and the run's counts."""
    from fhirlink.models import SyncedResource, SyncWatermark
    from fhirlink.models.sync import ACTIVE_RUN_STATUSES, StreamStatus
    from fhirlink.sync.runs import sync_request

    if connection_id is not None and kind == "full":
        SyncedResource.objects.filter(connection_id=connection_id).delete()
        SyncWatermark.objects.filter(connection_id=connection_id).delete()
    cpu_before = _children_cpu()
    worker = Worker(processes, env)
    result: dict[str, Any] = {"status": "idle"}
    try:
        if connection_id is not None:
            start = time.monotonic()
            run = sync_request(connection_id=connection_id, trigger="staff")
            assert run is not None
            summary_at = None
            while True:
                run.refresh_from_db()
                if summary_at is None:
                    summary = run.streams.filter(key__in=SUMMARY_KEYS)
                    if summary.exists() and not summary.exclude(status=StreamStatus.DONE).exists():
                        summary_at = time.monotonic() - start
                if run.status not in ACTIVE_RUN_STATUSES:
                    break
                time.sleep(0.02)
            seconds = time.monotonic() - start
            streams = list(run.streams.values_list("pages", flat=True))
            result = {
                "status": str(run.status),
                "seconds": seconds,
                "summary_seconds": summary_at if summary_at is not None else seconds,
                "requests": run.requests,
                "types": len(run.resource_types),
                "written": sum(c["created"] + c["updated"] for c in run.counts.values()),
                "stored": sum(c["created"] + c["updated"] for c in run.counts.values()),
                "resources": SyncedResource.objects.filter(connection_id=connection_id).count(),
                "critical_pages": max(streams, default=0) + 1,
            }
    finally:
        peaks = worker.stop()
    result["cpu"] = _children_cpu() - cpu_before
    result["peak_rss_mb"] = max(peaks, default=0.0)
    return result


def parse_validate_cpu(connection_id: str) -> tuple[int, float]:
    """(resources, CPU seconds) to parse the connection's stored resources from JSON and
    validate them with fhir.resources alone: the floor a first sync's CPU is measured against."""
    from fhirlink import fhirjson
    from fhirlink.models import SyncedResource
    from fhirlink.services.sync.prepare import canonical_json, resource_validate
    from fhirlink.services.sync.store import resource_payload

    rows = SyncedResource.objects.filter(connection_id=connection_id).exclude(
        resource_type="Binary"
    )
    bodies = [canonical_json(resource_payload(row)) for row in rows.iterator(chunk_size=500)]
    resource_validate(fhirjson.loads(bodies[0]))  # the models imported before timing
    start = time.process_time()
    for body in bodies:
        resource_validate(fhirjson.loads(body))
    return len(bodies), time.process_time() - start
