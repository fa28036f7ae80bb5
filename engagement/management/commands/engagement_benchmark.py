"""Benchmark: expand one reminder to a cohort and dispatch it with several worker processes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engagement import benchmark


class Command(BaseCommand):
    help = (
        "Expand one reminder to a cohort of --patients in batches and dispatch it with "
        "--workers processes; print rates and peak memory, and fail on any duplicate. "
        "Use a scratch database (the cohort is all patients). --patients 100000 for the full run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=10_000)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--expand-batch", type=int, default=2000)
        parser.add_argument("--dispatch-batch", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        result = benchmark.run(
            patients=options["patients"],
            workers=options["workers"],
            expand_batch=options["expand_batch"],
            dispatch_batch=options["dispatch_batch"],
            stdout=self.stdout,
        )
        rows = [
            ("database", result["database"]),
            ("cohort (patients)", f"{result['cohort']:,}"),
            ("outbox rows", f"{result['rows']:,}"),
            ("distinct patients", f"{result['distinct_patients']:,}"),
            ("delivered", f"{result['delivered']:,}"),
            ("duplicates", f"{result['duplicates']}"),
            ("rows claimed twice", f"{result['claimed_twice']}"),
            ("expansion", f"{result['expand_seconds']:.1f} s, {result['expand_rate']:,.0f} rows/s"),
            ("expansion peak RSS", f"{result['expand_peak_mib']:.0f} MiB"),
            (
                "dispatch",
                f"{result['dispatch_seconds']:.1f} s, {result['dispatch_rate']:,.0f} deliveries/s",
            ),
            ("dispatch per worker", ", ".join(f"{n:,}" for n in result["dispatch_per_worker"])),
            ("dispatch peak RSS (max worker)", f"{result['dispatch_peak_mib']:.0f} MiB"),
        ]
        width = max(len(name) for name, _ in rows)
        self.stdout.write("")
        for name, value in rows:
            self.stdout.write(f"{name.ljust(width)}  {value}")
        ok = (
            result["duplicates"] == 0
            and result["rows"] == result["cohort"]
            and result["distinct_patients"] == result["cohort"]
            and result["delivered"] == result["cohort"]
        )
        if not ok:
            raise CommandError("benchmark check failed: duplicates or missing deliveries")
        self.stdout.write(self.style.SUCCESS("No duplicates; every patient got exactly one."))
