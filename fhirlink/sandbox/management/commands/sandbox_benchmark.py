"""Pages per second for 200-entry Observation pages of the large patient, from one process."""

from __future__ import annotations

import resource
import statistics
import time
import tracemalloc
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from fhirlink.sandbox.conf import DEMO_TENANT, LARGE_PATIENT
from fhirlink.sandbox.fhir import data
from fhirlink.sandbox.liveserver import SandboxServer
from fhirlink.sandbox.models import SandboxGrant
from fhirlink.sandbox.oauth import _issue
from fhirlink.sandbox.state import clock_now, tenant_row


class Command(BaseCommand):
    help = (
        "Benchmark the sandbox: 200-entry Observation pages per second (HTTP, one process) "
        "and peak memory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pages", type=int, default=100, help="pages to fetch (default 100)")
        parser.add_argument("--count", type=int, default=200, help="_count per page (default 200)")
        parser.add_argument("--tenant", default=DEMO_TENANT)
        parser.add_argument(
            "--origin",
            default="",
            help="benchmark a running sandbox on the same database (e.g. make demo's "
            "http://127.0.0.1:8001) instead of an in-process thread server",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = options["tenant"]
        tenant_row(tenant)
        now = clock_now(tenant)
        grant = SandboxGrant.objects.create(
            tenant=tenant,
            client_id="sandbox-benchmark",
            patient_key=LARGE_PATIENT.key,
            scope="launch/patient patient/Observation.s",
            access="none",
            created_at=now,
            last_used_at=now,
        )
        token = _issue(grant, now=now, scope=grant.scope)
        server = None if options["origin"] else SandboxServer()
        origin = options["origin"].rstrip("/") if server is None else server.origin
        try:
            rows = self._run(origin, tenant, token, options["pages"], options["count"])
        finally:
            if server is not None:
                server.stop()
            grant.delete()
        rows.insert(1, ("server", "in-process thread (wsgiref)" if server else origin))
        width = max(len(k) for k, _ in rows)
        self.stdout.write(f"{'metric'.ljust(width)}  value")
        self.stdout.write(f"{'-' * width}  -----")
        for key, value in rows:
            self.stdout.write(f"{key.ljust(width)}  {value}")

    def _run(
        self, origin: str, tenant: str, token: str, pages: int, count: int
    ) -> list[tuple[str, str]]:
        http = requests.Session()
        http.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
        base = f"{origin}/r4/{tenant}"
        started = time.perf_counter()
        data.base_index(LARGE_PATIENT.ordinal, "Observation")
        index_seconds = time.perf_counter() - started
        url: str | None = f"{base}/Observation?patient={LARGE_PATIENT.fhir_id}&_count={count}"
        latencies: list[float] = []
        entries = 0
        nbytes = 0
        started = time.perf_counter()
        while url and len(latencies) < pages:
            t0 = time.perf_counter()
            response = http.get(url, timeout=60)
            response.raise_for_status()
            bundle = response.json()
            latencies.append(time.perf_counter() - t0)
            nbytes += len(response.content)
            entries += len(bundle.get("entry", []))
            url = next(
                (lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None
            )
        elapsed = time.perf_counter() - started
        # Memory on a separate, untimed pass (tracemalloc slows everything down).
        tracemalloc.start()
        url = f"{base}/Observation?patient={LARGE_PATIENT.fhir_id}&_count={count}"
        for _ in range(10):
            if not url:
                break
            bundle = http.get(url, timeout=60).json()
            url = next(
                (lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None
            )
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        latencies.sort()
        return [
            ("date", timezone.now().isoformat(timespec="seconds")),
            (
                "patient resources (Observation)",
                str(len(data.base_index(LARGE_PATIENT.ordinal, "Observation"))),
            ),
            ("index build (s, once per process)", f"{index_seconds:.2f}"),
            ("pages fetched", str(len(latencies))),
            ("entries per page", f"{entries / max(len(latencies), 1):.0f}"),
            ("pages/s (client+server, one process)", f"{len(latencies) / elapsed:.1f}"),
            ("entries/s", f"{entries / elapsed:.0f}"),
            ("latency p50 (ms)", f"{statistics.median(latencies) * 1000:.1f}"),
            ("latency p95 (ms)", f"{latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f}"),
            ("bytes per page (KiB)", f"{nbytes / max(len(latencies), 1) / 1024:.0f}"),
            ("peak traced allocations while paging (MiB)", f"{traced_peak / 2**20:.1f}"),
            ("peak RSS of the process (MiB)", f"{maxrss_kb / 1024:.0f}"),
        ]
