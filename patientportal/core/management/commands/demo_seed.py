"""Seed the demo: a demo patient, one staff user per role, the mobile app's registration, and
whatever each app adds (the sandbox health system, reminders, ...). Idempotent. Dev only."""

from __future__ import annotations

import importlib
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

# Each app that has demo data exposes `seed(stdout) -> None` in its `demo` module.
SEEDERS = [
    "patientportal.accounts.demo",
    "patientportal.consent.demo",
    "patientportal.careteams.demo",
    "fhirlink.demo",
    "engagement.demo",
]


class Command(BaseCommand):
    help = "Seed demo data (dev and demo only; refused when DEMO_ENABLED is off)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_ENABLED:
            raise CommandError("Demo seeding is disabled in these settings (DEMO_ENABLED=False).")
        for module_name in SEEDERS:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    continue  # that app has no demo data (yet)
                raise
            with transaction.atomic():
                module.seed(self.stdout)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
