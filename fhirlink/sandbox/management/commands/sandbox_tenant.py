"""Create a sandbox tenant and set its switches (the behaviours CERNER.md marks unverified)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.sandbox.conf import DEMO_TENANT, TenantSwitches
from fhirlink.sandbox.state import tenant_create, tenant_set_switches, tenant_switches


class Command(BaseCommand):
    help = (
        "Create a sandbox tenant (idempotent) and set switches: --tenant ID [--name N] "
        "[--switch pkce_required_for_public=false] [--switch refresh_min_interval_seconds=0] ..."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", default=DEMO_TENANT)
        parser.add_argument("--name", default="")
        parser.add_argument("--switch", action="append", default=[], metavar="NAME=VALUE")

    def handle(self, *args: Any, **options: Any) -> None:
        known = {f.name for f in fields(TenantSwitches)} - {"extra"}
        switches: dict[str, Any] = {}
        for item in options["switch"]:
            name, _, raw = item.partition("=")
            if name not in known:
                raise CommandError(f"unknown switch {name!r}; known: {', '.join(sorted(known))}")
            try:
                switches[name] = json.loads(raw)
            except ValueError:
                switches[name] = raw
        tenant_create(tenant=options["tenant"], name=options["name"])
        if switches:
            tenant_set_switches(tenant=options["tenant"], **switches)
        current = asdict(tenant_switches(options["tenant"]))
        current.pop("extra", None)
        self.stdout.write(
            json.dumps({"tenant": options["tenant"], "switches": current}, sort_keys=True)
        )
