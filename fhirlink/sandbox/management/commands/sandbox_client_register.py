"""Register (or update) a client at the sandbox, idempotently. Non-interactive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.sandbox.conf import DEMO_TENANT
from fhirlink.sandbox.oauth import client_register
from fhirlink.sandbox.state import tenant_create


class Command(BaseCommand):
    help = (
        "Register a SMART client at the Cerner sandbox: --client-id ID --redirect-uri URI "
        "[--confidential (--secret S | --jwks-url URL | --jwks-file PATH)] [--smart v1|v2] "
        "[--access offline|online|none] [--tenant ID]"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--client-id", required=True)
        parser.add_argument(
            "--redirect-uri", action="append", required=True, help="repeatable; matched exactly"
        )
        parser.add_argument("--confidential", action="store_true")
        parser.add_argument("--secret", default=None, help="client_secret_basic")
        parser.add_argument("--jwks-url", default="", help="private_key_jwt (RS384/ES384)")
        parser.add_argument("--jwks-file", default=None, help="private_key_jwt: a JWKS JSON file")
        parser.add_argument("--smart", choices=["v1", "v2"], default="v2")
        parser.add_argument("--access", choices=["offline", "online", "none"], default="offline")
        parser.add_argument("--tenant", default=DEMO_TENANT)
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        jwks = None
        if options["jwks_file"]:
            jwks = json.loads(Path(options["jwks_file"]).read_text())
        confidential = options["confidential"] or bool(
            options["secret"] or jwks or options["jwks_url"]
        )
        if options["tenant"] != DEMO_TENANT:
            tenant_create(tenant=options["tenant"])
        try:
            client_register(
                tenant=options["tenant"],
                client_id=options["client_id"],
                redirect_uris=options["redirect_uri"],
                confidential=confidential,
                secret=options["secret"],
                jwks=jwks,
                jwks_url=options["jwks_url"],
                smart_version=options["smart"],
                access=options["access"],
                name=options["name"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        kind = "confidential" if confidential else "public"
        self.stdout.write(
            f"sandbox client {options['client_id']} registered at tenant {options['tenant']} "
            f"({kind}, SMART {options['smart']}, {options['access']} access)"
        )
