"""Print what a health system's endpoint supports and what the project would request."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.models import HealthSystem
from fhirlink.services.discovery import check_report
from fhirlink.services.launch import health_system_redirect_uri
from patientportal.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Discover a health system: SMART configuration, FHIR version, resources, scopes, PKCE, "
        "revocation, and what would be requested."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("health_system", help="id (UUID) or slug")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        ident = options["health_system"]
        query = HealthSystem.objects.filter(slug=ident)
        if not query.exists():
            try:
                query = HealthSystem.objects.filter(pk=ident)
                found = query.exists()
            except Exception:
                found = False
            if not found:
                raise CommandError(f"no health system {ident!r}")
        health_system = query.get()
        try:
            report = check_report(health_system)
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        # The redirect URI to register at the EHR: this health system's own (mix-up defence).
        register = health_system_redirect_uri(health_system)
        report["redirect_uri"] = health_system.redirect_uri
        report["redirect_uri_to_register"] = register
        if health_system.redirect_uri != register:
            report.setdefault("warnings", []).append(
                f"the registration uses the redirect URI {health_system.redirect_uri}; register "
                f"{register} at the EHR and set it here (a shared redirect URI needs `iss` in "
                "every authorization response)"
            )
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        types = report.pop("types")
        warnings = report.pop("warnings")
        for key, value in report.items():
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value) if value else "-"
            self.stdout.write(f"{key:26} {value}")
        self.stdout.write("")
        self.stdout.write("per type (what is requested, and why):")
        for row in types:
            cs = {True: "in CapabilityStatement", False: "not in CapabilityStatement"}.get(
                row["in_capability_statement"], "CapabilityStatement lists no resources"
            )
            scope = row["scope"] or "not requested"
            self.stdout.write(
                f"  {row['resource']:22} {scope:34} {row['why']}; {cs}; {row['origin']}"
            )
        for warning in warnings:
            self.stderr.write(self.style.WARNING(f"WARNING: {warning}"))
