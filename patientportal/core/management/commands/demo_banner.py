"""Print the demo's URLs and logins (run by `make demo` before the processes start)."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from patientportal.accounts import demo


class Command(BaseCommand):
    help = "Print the demo URLs and logins."

    def handle(self, *args: Any, **options: Any) -> None:
        web = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
        sandbox = f"http://127.0.0.1:{os.environ.get('SANDBOX_PORT', '8001')}"
        lines = [
            "",
            "=" * 72,
            "Patient Portal demo",
            "=" * 72,
            f"  Reference client (the mobile app's journey)  {web}/demo/",
            f"  API docs (OpenAPI / Swagger UI)               {web}/api/docs/",
            f"  OpenAPI schema                                {web}/api/schema/",
            f"  Admin (staff)                                 {web}/admin/",
            f"  Health / readiness                            {web}/healthz  {web}/readyz",
            f"  Cerner sandbox (its own origin)               {sandbox}/",
            "",
            "  Logins",
            f"    patient      {demo.DEMO_PATIENT_EMAIL:24} {demo.DEMO_PATIENT_PASSWORD}",
        ]
        for email, role in demo.DEMO_STAFF.items():
            label = role or "superuser"
            lines.append(f"    {label:12} {email:24} {demo.DEMO_STAFF_PASSWORD}")
        lines += ["", "  Ctrl-C stops everything.", "=" * 72, ""]
        self.stdout.write("\n".join(lines))
