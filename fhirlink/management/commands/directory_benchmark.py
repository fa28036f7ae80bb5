"""Benchmark the health-system search; prints a table.

    python manage.py directory_benchmark --file ../shared/oracle-health-endpoints/<bundle>.json
    DATABASE_URL=postgres://... python manage.py directory_benchmark --file ...   # on PostgreSQL

It imports the real directory (`--file`, Oracle's 1,359 entries) under its own source, measures,
then adds a synthetic directory up to `--synthetic` entries (50,000 by default: the scale of all
US patient-access endpoints across vendors; names, cities and states recombined from the real
list, random ZIP codes) and measures again. Each measurement is what `GET /api/v1/health-systems`
does for a search: the ranked search (`directory_search`) and the first page's rows with their
availability (`directory_page_rows`), for a mix of queries (acronyms, towns, full names, typos,
prefixes, a state filter, a ZIP), `--rounds` times each after a warm-up; the index's cold build
is timed separately (it happens once per process after the directory changes). The database is
whatever the settings use; the benchmark's rows are deleted at the end unless `--keep`.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from fhirlink.directory.importer import directory_import
from fhirlink.directory.search import directory_index, directory_index_reset, directory_search
from fhirlink.directory.selectors import directory_page_rows
from fhirlink.directory.text import search_text
from fhirlink.models import DirectoryEntry

REAL = "benchmark-real"
SYNTHETIC = "benchmark-synthetic"
QUERIES: list[dict[str, str]] = [
    {"text": "VCU"},
    {"text": "Richmond"},
    {"text": "richmnd"},
    {"text": "university hospital"},
    {"text": "univeristy hosptal"},
    {"text": "tenet healthsystem medical"},
    {"text": "children"},
    {"text": "saint mary"},
    {"text": "mem"},
    {"text": "health", "state": "TX"},
    {"text": "clinic", "near": "23298"},
    {"text": "Montréal"},
]


class Command(BaseCommand):
    help = "Search latency p50/p99 over the real directory and a synthetic 50,000; prints a table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", required=True, help="Oracle's bundle (../shared/...)")
        parser.add_argument("--synthetic", type=int, default=50_000)
        parser.add_argument("--rounds", type=int, default=30)
        parser.add_argument("--page-size", type=int, default=20)
        parser.add_argument("--keep", action="store_true", help="keep the benchmark's rows")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.exists():
            raise CommandError(f"{path} not found")
        if DirectoryEntry.objects.exclude(source__in=[REAL, SYNTHETIC]).exists():
            self.stderr.write("note: the database holds other directory entries; they count too")
        rows: list[tuple[str, int, str, float, list[float]]] = []
        try:
            directory_import(raw=path.read_bytes(), source=REAL, origin=path.name)
            rows.append(self._measure("real (Oracle)", options))
            self._synthesise(options["synthetic"] - DirectoryEntry.objects.count())
            rows.append(self._measure("synthetic", options))
        finally:
            if not options["keep"]:
                DirectoryEntry.objects.filter(source__in=[REAL, SYNTHETIC]).delete()
                directory_index_reset()
        self._table(rows, options)

    def _synthesise(self, count: int) -> None:
        if count <= 0:
            return
        rng = random.Random(22)  # noqa: S311 (synthetic names, not secrets)
        real = list(DirectoryEntry.objects.values_list("name", "city", "state"))
        words = sorted({w for name, _, _ in real for w in name.split() if len(w) > 2})
        places = [(city, state) for _, city, state in real]
        batch: list[DirectoryEntry] = []
        for i in range(count):
            name = " ".join(rng.sample(words, rng.randint(2, 4)))
            city, state = rng.choice(places)
            batch.append(
                DirectoryEntry(
                    source=SYNTHETIC,
                    external_id=f"s{i}",
                    name=name,
                    city=city,
                    state=state,
                    postal_code=f"{rng.randint(1000, 99950):05d}",
                    fhir_base_url=f"https://fhir.example.org/r4/s{i}",
                    tenant=f"s{i}",
                    search_text=search_text(name=name, aliases=[], city=city, state=state),
                )
            )
            if len(batch) == 5000:
                DirectoryEntry.objects.bulk_create(batch)
                batch = []
        DirectoryEntry.objects.bulk_create(batch)

    def _measure(
        self, label: str, options: dict[str, Any]
    ) -> tuple[str, int, str, float, list[float]]:
        directory_index_reset()
        started = time.perf_counter()
        index = directory_index()
        build = time.perf_counter() - started
        size = options["page_size"]

        def once(query: dict[str, str]) -> None:
            items = directory_search(**query, limit=size + 1)[:size]
            directory_page_rows(items=items, sources=directory_index().sources)

        for query in QUERIES:
            once(query)
        samples: list[float] = []
        for _ in range(options["rounds"]):
            for query in QUERIES:
                started = time.perf_counter()
                once(query)
                samples.append((time.perf_counter() - started) * 1000)
        return (label, len(index.items), connection.vendor, build, samples)

    def _table(
        self, rows: list[tuple[str, int, str, float, list[float]]], options: dict[str, Any]
    ) -> None:
        self.stdout.write("")
        self.stdout.write(
            f"Health-system search: {len(QUERIES)} queries x {options['rounds']} rounds, "
            f"first page of {options['page_size']} with availability"
        )
        header = (
            f"{'directory':<16}{'entries':>9}  {'database':<11}{'index build':>12}"
            f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for label, entries, vendor, build, samples in rows:
            ordered = sorted(samples)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            self.stdout.write(
                f"{label:<16}{entries:>9,}  {vendor:<11}{build:>10.2f} s"
                f"{statistics.median(ordered):>9.2f}{p99:>9.2f}{ordered[-1]:>9.2f}"
            )
        last = rows[-1]
        ordered = sorted(last[4])
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        verdict = "met" if p99 <= 25 else "NOT met"
        self.stdout.write(f"target p99 <= 25 ms at {last[1]:,} entries: {verdict} ({p99:.2f} ms)")
