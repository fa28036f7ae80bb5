"""manage.py security_review_pack --out DIR [--health-system ID|SLUG] [--junit PATH] ..."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.models import HealthSystem
from patientportal.accounts.models import Patient
from patientportal.reviewpack.services.pack import (
    review_pack_build,
    review_pack_store,
    review_pack_write,
    sample_patient_default,
)


class Command(BaseCommand):
    help = (
        "Write the security-review pack (HTML, PDF, JSON, CSV, the data-flow diagram, a CycloneDX "
        "SBOM) for one health system, and keep it with the health system's review state."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="Directory to write the pack into.")
        parser.add_argument(
            "--health-system",
            help="Health system id or slug (default: the only one, or the demo's sandbox one).",
        )
        parser.add_argument(
            "--junit",
            default=None,
            help="JUnit XML of the last test run (default: var/junit.xml, which CI writes).",
        )
        parser.add_argument(
            "--no-vuln-scan",
            action="store_true",
            help="Do not run the known-vulnerability scan (it needs the network).",
        )
        parser.add_argument(
            "--vuln-timeout", type=float, default=180.0, help="Seconds the scan may take."
        )
        parser.add_argument(
            "--sample-patient",
            help="Patient id or e-mail of a synthetic patient for the access-log sample "
            "(default: the demo patient, when seeded).",
        )
        parser.add_argument(
            "--no-store", action="store_true", help="Write the files only; keep no copy."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        health_system = self._health_system(options.get("health_system"))
        patient = self._patient(options.get("sample_patient"))
        junit = options.get("junit")
        if junit is None:
            default = Path(settings.BASE_DIR) / "var" / "junit.xml"
            junit = str(default) if default.is_file() else None
        pack = review_pack_build(
            health_system=health_system,
            junit_path=junit,
            vuln_scan=not options["no_vuln_scan"],
            vuln_timeout=options["vuln_timeout"],
            sample_patient=patient,
        )
        written = review_pack_write(pack=pack, out_dir=Path(options["out"]))
        if not options["no_store"]:
            stored = review_pack_store(
                health_system=health_system, pack=pack, generated_by="manage.py"
            )
            self.stdout.write(f"Stored as review pack {stored.pk} (sha256 {stored.sha256}).")
        controls = pack.content["controls"]
        results: dict[str, int] = {}
        for row in controls["rows"]:
            results[row["result"]] = results.get(row["result"], 0) + 1
        self.stdout.write(
            f"Security review pack for {health_system.slug} in {options['out']}: "
            f"{', '.join(sorted(written))}."
        )
        self.stdout.write(
            "Controls: "
            + ", ".join(f"{n} {result}" for result, n in sorted(results.items()))
            + f"; vulnerability scan: {pack.content['vulnerabilities']['status']}"
            + (
                f" ({pack.content['vulnerabilities']['reason']})"
                if pack.content["vulnerabilities"]["reason"]
                else ""
            )
            + "."
        )

    def _health_system(self, wanted: str | None) -> HealthSystem:
        systems = HealthSystem.objects.all()
        if wanted:
            found = systems.filter(slug=wanted).first()
            if found is None:
                try:
                    found = systems.filter(pk=wanted).first()
                except ValidationError:
                    found = None
            if found is None:
                raise CommandError(f"No health system with id or slug {wanted!r}.")
            return found
        from fhirlink.demo import DEMO_SLUG

        demo = systems.filter(slug=DEMO_SLUG).first()
        if demo is not None:
            return demo
        if systems.count() == 1:
            only = systems.first()
            assert only is not None
            return only
        raise CommandError("Name the health system: --health-system ID or SLUG.")

    def _patient(self, wanted: str | None) -> Patient | None:
        if not wanted:
            return sample_patient_default()
        query = Patient.objects.filter(user__email__iexact=wanted)
        found = query.first()
        if found is None:
            try:
                found = Patient.objects.filter(pk=wanted).first()
            except ValidationError:
                found = None
        if found is None:
            raise CommandError("No such patient for --sample-patient.")
        return found
