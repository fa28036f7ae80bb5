"""Demo data: the sandbox health system for the demo tenant, and its client at the sandbox.

Idempotent. Only when settings.SANDBOX_ENABLED. The sandbox is driven through its management
command, by name (fhirlink never imports the sandbox).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command

from fhirlink.models import ClientAuth, ScopeSyntax
from fhirlink.models.health_systems import DEFAULT_RESOURCES
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_register

DEMO_TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
DEMO_SLUG = "sandbox-demo"
DEMO_CLIENT_ID = "patient-portal-demo"


def seed(stdout: Any) -> None:
    if not getattr(settings, "SANDBOX_ENABLED", False):
        return
    base = f"{settings.SANDBOX_BASE_URL}/r4/{DEMO_TENANT}"
    # Its own redirect URI (/fhirlink/callback/sandbox-demo), registered at the sandbox below.
    redirect_uri = health_system_redirect_uri(DEMO_SLUG)
    health_system, created = health_system_register(
        slug=DEMO_SLUG,
        name="Sandbox Health (Cerner demo tenant)",
        fhir_base_url=base,
        tenant=DEMO_TENANT,
        client_id=DEMO_CLIENT_ID,
        client_auth=ClientAuth.PUBLIC,
        scope_syntax=ScopeSyntax.V2,
        # Binary too, so DocumentReference attachments (PDF, text) sync and open in the demo.
        resources=[*DEFAULT_RESOURCES, "Binary"],
        redirect_uri=redirect_uri,
        enabled=True,
    )
    call_command(
        "sandbox_client_register",
        "--client-id",
        DEMO_CLIENT_ID,
        "--redirect-uri",
        redirect_uri,
        "--smart",
        "v2",
        "--access",
        "offline",
        "--tenant",
        DEMO_TENANT,
        "--name",
        "Patient Portal (demo)",
        stdout=stdout,
    )
    stdout.write(
        f"{'Registered' if created else 'Updated'} health system {health_system.slug} -> {base}\n"
    )
