"""Import a published directory of patient-access endpoints (Oracle's list by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink import http
from fhirlink.directory.importer import directory_default_url, directory_fetch, directory_import
from patientportal.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Import Oracle Health's published patient-access endpoints (the published URL by "
        "default, FHIRLINK_DIRECTORY_URL) or a local file (--file), in Oracle's format or as a "
        "SMART User-access Brands bundle. Idempotent; prints what was added, changed, retired."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", default=None, help="a local copy of the bundle (JSON)")
        parser.add_argument("--url", default=None, help="fetch this URL instead of the default")
        parser.add_argument(
            "--source",
            default=None,
            help="the directory source (default FHIRLINK_DIRECTORY_SOURCE, oracle-millennium)",
        )
        parser.add_argument("--release", default=None, help="release label (default: from file)")
        parser.add_argument("--details", action="store_true", help="list the names that changed")

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["source"] or settings.FHIRLINK_DIRECTORY_SOURCE
        try:
            if options["file"]:
                path = Path(options["file"])
                raw, origin = path.read_bytes(), path.name
            else:
                origin = options["url"] or directory_default_url()
                raw = directory_fetch(url=origin)
            run = directory_import(
                raw=raw, source=source, origin=origin, release=options["release"]
            )
        except OSError as exc:
            raise CommandError(f"cannot read the file: {exc.strerror}") from exc
        except http.EhrHttpError as exc:
            raise CommandError(f"cannot fetch the directory: {exc}") from exc
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"{run.source} release {run.release}: {run.total} entries; added {run.added}, "
            f"changed {run.changed} (renamed {run.renamed}), retired {run.retired}; "
            f"connections marked {run.connections_marked}"
        )
        if options["details"]:
            for kind in ("added", "renamed", "retired"):
                for item in run.details.get(kind, []):
                    label = " -> ".join(item) if isinstance(item, list) else item
                    self.stdout.write(f"  {kind}: {label}")
