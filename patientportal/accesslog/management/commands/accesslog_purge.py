"""Purge access-log rows past the retention period, leaving an anchor so the rest verifies."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from patientportal.accesslog.services import access_log_purge


class Command(BaseCommand):
    help = "Delete access-log rows older than ACCESS_LOG_RETENTION_DAYS (or --days) and anchor."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Override the retention.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = access_log_purge(retention_days=options["days"])
        if result.through_seq is None:
            self.stdout.write(f"Nothing older than {result.cutoff.isoformat()} to purge.")
        else:
            self.stdout.write(
                f"Purged {result.rows_purged} rows (through seq {result.through_seq}, "
                f"before {result.cutoff.isoformat()}); anchor recorded."
            )
