"""Register or update (by --slug) a health system, non-interactively.

Secrets never go on the command line (they would show in `ps` and shell history): pass the
client secret or PEM private key with --secret-env VAR or --secret-file PATH.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink import vault
from fhirlink.models import ClientAuth, ScopeSyntax
from fhirlink.services.registry import health_system_register
from patientportal.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Register or update a health system (Cerner tenant + client registration)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True, help="Stable identifier (update key).")
        parser.add_argument("--name")
        parser.add_argument("--fhir-base-url")
        parser.add_argument("--tenant")
        parser.add_argument("--client-id")
        parser.add_argument("--client-auth", choices=ClientAuth.values)
        parser.add_argument("--jwt-key-id", help="kid of the private key (private_key_jwt).")
        parser.add_argument("--jwt-alg", choices=["RS384", "ES384"])
        parser.add_argument("--secret-env", help="Read the secret / PEM key from this env var.")
        parser.add_argument("--secret-file", help="Read the secret / PEM key from this file.")
        parser.add_argument(
            "--generate-key",
            action="store_true",
            help="private_key_jwt: generate a new key (--jwt-alg), store it, print its public JWK.",
        )
        parser.add_argument("--scope-syntax", choices=ScopeSyntax.values)
        parser.add_argument("--resources", help="Comma-separated FHIR resource types to request.")
        parser.add_argument("--redirect-uri")
        parser.add_argument("--logo-url")
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--enable", dest="enabled", action="store_true", default=None)
        state.add_argument("--disable", dest="enabled", action="store_false")

    def handle(self, *args: Any, **options: Any) -> None:
        secret: str | None = None
        if options["secret_env"]:
            secret = os.environ.get(options["secret_env"])
            if not secret:
                raise CommandError(f"environment variable {options['secret_env']} is empty")
        elif options["secret_file"]:
            secret = Path(options["secret_file"]).read_text().strip()
        elif options["generate_key"]:
            if options["client_auth"] != "private_key_jwt" or not options["jwt_key_id"]:
                raise CommandError(
                    "--generate-key needs --client-auth private_key_jwt --jwt-key-id"
                )
            secret = vault.signing_key_generate(alg=options["jwt_alg"] or "RS384")
        resources = (
            [r.strip() for r in options["resources"].split(",") if r.strip()]
            if options["resources"]
            else None
        )
        try:
            health_system, created = health_system_register(
                slug=options["slug"],
                secret=secret,
                name=options["name"],
                fhir_base_url=options["fhir_base_url"],
                tenant=options["tenant"],
                client_id=options["client_id"],
                client_auth=options["client_auth"],
                jwt_key_id=options["jwt_key_id"],
                jwt_alg=options["jwt_alg"],
                scope_syntax=options["scope_syntax"],
                resources=resources,
                redirect_uri=options["redirect_uri"],
                logo_url=options["logo_url"],
                enabled=options["enabled"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        except Exception as exc:  # model validation
            raise CommandError(str(exc)) from None
        verb = "Registered" if created else "Updated"
        self.stdout.write(f"{verb} health system {health_system.slug} ({health_system.pk})")
        if options["generate_key"] and secret:
            jwk = vault.signing_key_public_jwk(
                secret, alg=health_system.jwt_alg, kid=health_system.jwt_key_id
            )
            self.stdout.write(
                "Public key to register at the EHR (also served at /fhirlink/jwks.json):"
            )
            self.stdout.write(json.dumps({"keys": [jwk]}, indent=2))
