"""Benchmark the access log's cost on a patient-data list endpoint, with and without the log.

Both variants run in the same process against the same database, paired and interleaved
request by request so drift (other processes, caches, autovacuum) hits both alike.
"Without" replaces the row write of the logging mixins by a no-op; everything else (OAuth,
permissions, query, serialisation) is the same. Prints throughput, latency percentiles, the
ratio and the writes per request, and exits 1 if the overhead exceeds --max-overhead (15 %).

Point it at the records list later with, e.g.::

    manage.py accesslog_benchmark --url /api/v1/records/Observation --scope records:read \
        --seed fhirlink.benchmarks.seed_observations

`--seed` names a function `seed(*, patient, rows) -> None` that gives the benchmark patient
its data; the default seeds consent history for /api/v1/consents/history.

It writes real rows (a benchmark patient, its data and the log rows the logged variant
produces, which cannot be deleted), so it refuses to run unless DEMO_ENABLED or --force.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from django.utils.module_loading import import_string

DEFAULT_URL = "/api/v1/consents/history?page_size=50"
WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE")


def seed_consent_history(*, patient: Any, rows: int) -> None:
    """Default seed: `rows` consent-history rows for the benchmark patient."""
    from patientportal.consent.models import ConsentAction, ConsentRecord, Purpose

    now = timezone.now()
    ConsentRecord.objects.bulk_create(
        ConsentRecord(
            patient=patient,
            purpose=Purpose.EHR_SYNC,
            action=ConsentAction.GRANT if i % 2 == 0 else ConsentAction.REVOKE,
            version=1,
            created_at=now - timedelta(seconds=i),
            user_agent="benchmark",
        )
        for i in range(rows)
    )


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class Command(BaseCommand):
    help = "Measure the access log's overhead on a patient-data list endpoint (same run, A/B)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=DEFAULT_URL)
        parser.add_argument("--scope", default="consent", help="OAuth scope(s) the URL needs.")
        parser.add_argument("--seed", default=f"{__name__}.seed_consent_history")
        parser.add_argument("--rows", type=int, default=200, help="Rows of data to seed.")
        parser.add_argument("--requests", type=int, default=400, help="Per variant.")
        parser.add_argument("--warmup", type=int, default=30)
        parser.add_argument("--max-overhead", type=float, default=15.0, help="Percent.")
        parser.add_argument("--force", action="store_true", help="Run without DEMO_ENABLED.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_ENABLED and not options["force"]:
            raise CommandError("Writes benchmark rows; run it on a dev/demo database or --force.")
        client = self._client(options)
        url = options["url"]

        def call() -> float:
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise CommandError(f"GET {url} answered {response.status_code}")
            return elapsed

        def no_log(**kwargs: Any) -> None:
            return None

        unlogged = mock.patch("patientportal.accesslog.logged.access_log_record", no_log)
        # Per-user throttling would stop the run; it is the same in both variants.
        unthrottled = mock.patch("rest_framework.views.APIView.get_throttles", return_value=[])
        # As in production: DEBUG off (with it on, Django keeps every query in memory).
        with unthrottled, override_settings(DEBUG=False):
            self._run(options, call, unlogged)

    def _run(self, options: dict[str, Any], call: Callable[[], float], unlogged: Any) -> None:
        for _ in range(options["warmup"]):
            call()
            with unlogged:
                call()

        writes = {}
        for name, ctx in (("logged", None), ("unlogged", unlogged)):
            with CaptureQueriesContext(connection) as queries:
                if ctx is None:
                    call()
                else:
                    with ctx:
                        call()
            writes[name] = sum(
                1
                for q in queries.captured_queries
                if q["sql"].lstrip().upper().startswith(WRITE_PREFIXES)
            )

        # Paired and interleaved request by request (which goes first alternates), so load
        # from other processes on the machine falls on both variants alike.
        samples: dict[str, list[float]] = {"logged": [], "unlogged": []}
        wall = {"logged": 0.0, "unlogged": 0.0}
        for index in range(options["requests"]):
            order = ("logged", "unlogged") if index % 2 == 0 else ("unlogged", "logged")
            for name in order:
                if name == "unlogged":
                    unlogged.start()
                try:
                    elapsed = call()
                finally:
                    if name == "unlogged":
                        unlogged.stop()
                samples[name].append(elapsed)
                wall[name] += elapsed
        self._report(options["url"], samples, wall, writes, options["max_overhead"])

    def _client(self, options: dict[str, Any]) -> Client:
        from oauth2_provider.models import AccessToken, Application, set_token_value

        from patientportal.accounts.models import Patient, User
        from patientportal.consent.models import ConsentStatus, PatientConsent, Purpose

        user = User.objects.create_user(
            email=f"bench-{secrets.token_hex(6)}@benchmark.invalid", password=None
        )
        patient = Patient.objects.create(user=user)
        for purpose in Purpose.values:
            PatientConsent.objects.create(
                patient=patient,
                purpose=purpose,
                status=ConsentStatus.GRANTED,
                version=1,
                updated_at=timezone.now(),
            )
        import_string(options["seed"])(patient=patient, rows=options["rows"])
        application, _ = Application.objects.get_or_create(
            client_id="accesslog-benchmark",
            defaults={
                "name": "Access-log benchmark",
                "client_type": Application.CLIENT_PUBLIC,
                "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
                "redirect_uris": "https://benchmark.invalid/cb",
                "algorithm": "",
            },
        )
        raw = secrets.token_urlsafe(32)
        token = AccessToken(
            user=user,
            application=application,
            expires=timezone.now() + timedelta(hours=1),
            scope=options["scope"],
        )
        set_token_value(token, raw)
        token.save()
        host = (settings.ALLOWED_HOSTS or ["localhost"])[0].lstrip(".")
        if host == "*":
            host = "localhost"
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_HOST=host)

    def _report(
        self,
        url: str,
        samples: dict[str, list[float]],
        wall: dict[str, float],
        writes: dict[str, int],
        max_overhead: float,
    ) -> None:
        db = connection.vendor
        self.stdout.write(f"Endpoint: GET {url}   database: {db}")
        header = (
            f"{'variant':<10}{'requests':>9}{'req/s':>9}{'mean ms':>9}{'p50 ms':>8}"
            f"{'p95 ms':>8}{'p99 ms':>8}{'writes/req':>11}"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        means = {}
        for name in ("unlogged", "logged"):
            data = samples[name]
            means[name] = statistics.fmean(data)
            self.stdout.write(
                f"{name:<10}{len(data):>9}{len(data) / wall[name]:>9.1f}"
                f"{means[name] * 1000:>9.2f}{_percentile(data, 50) * 1000:>8.2f}"
                f"{_percentile(data, 95) * 1000:>8.2f}{_percentile(data, 99) * 1000:>8.2f}"
                f"{writes[name]:>11}"
            )
        ratio = means["logged"] / means["unlogged"]
        overhead = (ratio - 1) * 100
        p50_ratio = _percentile(samples["logged"], 50) / _percentile(samples["unlogged"], 50)
        self.stdout.write("-" * len(header))
        self.stdout.write(
            f"ratio logged/unlogged: mean {ratio:.3f}, p50 {p50_ratio:.3f}; overhead "
            f"{overhead:+.1f} % (limit {max_overhead:.0f} %); extra writes per request: "
            f"{writes['logged'] - writes['unlogged']}"
        )
        if overhead > max_overhead:
            self.stderr.write(self.style.ERROR("FAIL: the access log costs more than the limit."))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS("PASS"))
