"""Switch the sandbox's fault injection for a tenant at run time. Non-interactive."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhirlink.sandbox.conf import DEMO_TENANT
from fhirlink.sandbox.faults import FAULT_NAMES, faults_active, faults_clear, faults_set


class Command(BaseCommand):
    help = (
        "Set, show or clear the sandbox's faults for a tenant (see fhirlink/sandbox/faults.py). "
        "Examples: --latency-ms 200; --status 503 --times 2; --rate-limit 3 --times 1; "
        "--timeout 30; --malformed-json; --truncated-page; --looping-next; --invalid-fhir; "
        "--revoke-grant-after 5; --refresh-failure invalid_grant; --json '{...}'; --clear; --show."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", default=DEMO_TENANT)
        parser.add_argument("--clear", action="store_true", help="remove every fault first")
        parser.add_argument(
            "--show",
            action="store_true",
            help="print the active faults (database + SANDBOX_FAULTS)",
        )
        parser.add_argument("--merge", action="store_true", help="keep faults already set")
        parser.add_argument(
            "--times", type=int, default=None, help="how many times each fault set here triggers"
        )
        parser.add_argument(
            "--resource-types", default="", help="comma-separated; limit FHIR faults to these types"
        )
        parser.add_argument("--latency-ms", type=int)
        parser.add_argument("--status", type=int, choices=[429, 500, 502, 503])
        parser.add_argument(
            "--rate-limit", type=int, metavar="RETRY_AFTER", help="429 with this Retry-After"
        )
        parser.add_argument(
            "--timeout", type=float, metavar="SECONDS", help="stall responses this long"
        )
        parser.add_argument("--malformed-json", action="store_true")
        parser.add_argument("--truncated-page", action="store_true")
        parser.add_argument("--looping-next", action="store_true")
        parser.add_argument("--invalid-fhir", action="store_true")
        parser.add_argument("--revoke-grant-after", type=int, metavar="REQUESTS")
        parser.add_argument("--refresh-failure", choices=["invalid_grant", "server_error"])
        parser.add_argument(
            "--json", default="", help=f"a JSON object of faults ({', '.join(FAULT_NAMES)})"
        )

    def handle(self, *args: Any, **o: Any) -> None:
        tenant = o["tenant"]
        common: dict[str, Any] = {}
        if o["times"] is not None:
            common["times"] = o["times"]
        if o["resource_types"]:
            common["resource_types"] = [
                t.strip() for t in o["resource_types"].split(",") if t.strip()
            ]
        faults: dict[str, Any] = {}
        if o["latency_ms"] is not None:
            faults["latency_ms"] = {"ms": o["latency_ms"], **common}
        if o["status"] is not None:
            faults["status"] = {"code": o["status"], **common}
        if o["rate_limit"] is not None:
            faults["rate_limit"] = {"retry_after": o["rate_limit"], **common}
        if o["timeout"] is not None:
            faults["timeout"] = {"seconds": o["timeout"], **common}
        for name in ("malformed_json", "truncated_page", "looping_next", "invalid_fhir"):
            if o[name]:
                faults[name] = dict(common)
        if o["revoke_grant_after"] is not None:
            faults["revoke_grant_after"] = {"requests": o["revoke_grant_after"]}
        if o["refresh_failure"]:
            faults["refresh_failure"] = {"error": o["refresh_failure"], **common}
        if o["json"]:
            try:
                faults.update(json.loads(o["json"]))
            except ValueError as error:
                raise CommandError(f"--json: {error}") from error
        if o["clear"]:
            faults_clear(tenant=tenant)
        if faults:
            try:
                faults_set(tenant=tenant, faults=faults, merge=o["merge"] or o["clear"])
            except ValueError as error:
                raise CommandError(str(error)) from error
        active = faults_active(tenant)
        if o["show"] or faults or o["clear"]:
            self.stdout.write(json.dumps({"tenant": tenant, "faults": active}, sort_keys=True))
