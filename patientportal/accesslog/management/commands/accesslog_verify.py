"""Verify the access log's hash chain; exit 1 and list the breaks if it was tampered with."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from patientportal.accesslog.services import access_log_verify


class Command(BaseCommand):
    help = (
        "Recompute the access log's hash chain; exits non-zero on a changed, deleted or "
        "inserted row."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-problems", type=int, default=100)
        parser.add_argument(
            "--expect",
            action="append",
            default=[],
            metavar="SEQ:HASH",
            help="A head printed by an earlier run (kept outside the database); catches rows "
            "cut from the end of the chain. Repeatable.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        expect: dict[int, str] = {}
        for item in options["expect"]:
            seq, _, digest = item.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                raise CommandError(f"--expect takes SEQ:HASH, got {item!r}")
            expect[int(seq)] = digest
        report = access_log_verify(max_problems=options["max_problems"], expect=expect)
        start = f"anchor #{report.anchor_seq}" if report.anchor_seq else "the first row"
        if report.ok:
            self.stdout.write(
                self.style.SUCCESS(
                    f"OK: {report.checked} rows verified (seq {report.first_seq}..{report.last_seq}"
                    f", from {start})."
                )
            )
            if report.last_seq is not None:
                # Keep this line outside the database; pass it back with --expect later.
                self.stdout.write(f"Head: {report.last_seq}:{report.last_hash}")
            return
        for problem in report.problems:
            self.stderr.write(f"TAMPERED: {problem}")
        self.stderr.write(
            self.style.ERROR(f"FAILED: {len(report.problems)} problem(s) in {report.checked} rows.")
        )
        raise SystemExit(1)
