"""Assign patients to a care team in bulk: ids as arguments or from a CSV/text file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from patientportal.careteams.models import CareTeam
from patientportal.careteams.services import care_team_assign, parse_patient_ids


class Command(BaseCommand):
    help = "Assign patients (ids, or a CSV/text file of ids) to a care team."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("team", help="The care team's name.")
        parser.add_argument("patient_ids", nargs="*", help="Patient ids.")
        parser.add_argument("--file", help="A CSV or text file of patient ids.")
        parser.add_argument("--create", action="store_true", help="Create the team if missing.")

    def handle(self, *args: Any, **options: Any) -> None:
        text = " ".join(options["patient_ids"])
        if options.get("file"):
            text += "\n" + Path(options["file"]).read_text(encoding="utf-8")
        ids, invalid = parse_patient_ids(text)
        if invalid:
            raise CommandError(f"not patient ids: {', '.join(invalid[:5])}")
        if options["create"]:
            team, _ = CareTeam.objects.get_or_create(name=options["team"])
        else:
            try:
                team = CareTeam.objects.get(name=options["team"])
            except CareTeam.DoesNotExist as exc:
                raise CommandError(f"no care team named {options['team']!r}") from exc
        added, unknown = care_team_assign(team=team, patient_ids=ids)
        self.stdout.write(
            f"{added} assigned, {len(ids) - added - len(unknown)} already, {len(unknown)} unknown"
        )
        if unknown:
            raise CommandError(f"unknown patient ids: {', '.join(unknown[:5])}")
