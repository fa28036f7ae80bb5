"""Advance a tenant's sandbox clock and make changes (incremental-sync tests and demos)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.sandbox.conf import DEMO_TENANT, PATIENTS_BY_KEY
from fhirlink.sandbox.services import sandbox_advance, sandbox_make_changes


class Command(BaseCommand):
    help = (
        "Move the sandbox clock forward and create new, updated and entered-in-error resources: "
        "--days N [--seconds N] [--patient hugo] [--new N] [--updated N] [--entered-in-error N] "
        "[--types Observation,Condition] [--tenant ID]"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", default=DEMO_TENANT)
        parser.add_argument("--days", type=float, default=0)
        parser.add_argument("--seconds", type=int, default=0)
        parser.add_argument("--patient", default="hugo", choices=sorted(PATIENTS_BY_KEY))
        parser.add_argument("--new", type=int, default=0)
        parser.add_argument("--updated", type=int, default=0)
        parser.add_argument("--entered-in-error", type=int, default=0)
        parser.add_argument("--types", default="Observation")

    def handle(self, *args: Any, **o: Any) -> None:
        now = sandbox_advance(tenant=o["tenant"], days=o["days"], seconds=o["seconds"])
        self.stdout.write(f"sandbox clock for {o['tenant']}: {now.isoformat(timespec='seconds')}")
        if o["new"] or o["updated"] or o["entered_in_error"]:
            try:
                changes = sandbox_make_changes(
                    tenant=o["tenant"],
                    patient=o["patient"],
                    new=o["new"],
                    updated=o["updated"],
                    entered_in_error=o["entered_in_error"],
                    types=tuple(t.strip() for t in o["types"].split(",") if t.strip()),
                )
            except ValueError as error:
                raise CommandError(str(error)) from error
            for change in changes:
                self.stdout.write(f"{change.kind:<17} {change.resource_type}/{change.id}")
