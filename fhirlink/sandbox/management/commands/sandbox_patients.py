"""Print the sandbox's test patients and their logins (for the demo banner and developers)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fhirlink.sandbox.conf import PATIENTS, PATIENTS_BY_KEY
from fhirlink.sandbox.fhir.data import COUNTS


class Command(BaseCommand):
    help = "List the sandbox's test patients: login username, password, FHIR id, size."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        rows: list[dict[str, Any]] = [
            {
                "key": p.key,
                "username": p.username,
                "password": p.password,
                "fhir_id": p.fhir_id,
                "name": f"{p.given} {p.family}",
                "observations": COUNTS["Observation"][1 if p.large else 0],
                "large": p.large,
                "manages": [PATIENTS_BY_KEY[k].fhir_id for k in p.manages],
            }
            for p in PATIENTS
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows))
            return
        for row in rows:
            login = row["username"] or "(no login)"
            manages = (
                f"  manages Patient/{', Patient/'.join(row['manages'])} (generic profile's picker)"
                if row["manages"]
                else ""
            )
            self.stdout.write(
                f"{row['key']:<6} {login:<13} {row['password']:<20} "
                f"Patient/{row['fhir_id']}  {row['observations']} Observations{manages}"
            )
