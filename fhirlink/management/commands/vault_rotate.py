"""Re-wrap every vault row under VAULT_ACTIVE_KEY_ID and re-hash the synced-record store's
index columns under FHIRLINK_INDEX_ACTIVE_KEY_ID: online, batched, resumable."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fhirlink.services.rotation import vault_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt (re-wrap) every vault row under the active key and re-hash the store's "
        "index columns under the active index key, in batches; safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--max-batches", type=int, default=None, help="Stop after this many batches per table."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = vault_rotate(batch_size=options["batch_size"], max_batches=options["max_batches"])
        self.stdout.write(f"active key: {report.active_key_id}")
        self.stdout.write(f"active index key: {report.index_key_id}")
        for label, count in report.rewrapped.items():
            self.stdout.write(f"{label}: re-wrapped {count}, remaining {report.remaining[label]}")
        if any(report.remaining.values()):
            self.stdout.write("Not finished: run again to continue.")
        else:
            self.stdout.write(self.style.SUCCESS("Every row is under the active key."))
