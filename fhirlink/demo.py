"""Demo data: the sandbox health system for the demo tenant, and its client at the sandbox; the
same for the sandbox's generic SMART App Launch 2.x profile (its patient picker lets
`parentsandbox` connect her child's record).

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
GENERIC_TENANT = "generic"  # the generic profile's built-in tenant
GENERIC_SLUG = "generic-sandbox"


def seed(stdout: Any) -> None:
    if not getattr(settings, "SANDBOX_ENABLED", False):
        return
    _sandbox_health_system(
        stdout,
        slug=DEMO_SLUG,
        name="Sandbox Health (Cerner demo tenant)",
        fhir_base_url=f"{settings.SANDBOX_BASE_URL}/r4/{DEMO_TENANT}",
        tenant=DEMO_TENANT,
    )
    # The generic SMART 2.x sandbox (deploy/Procfile.demo serves it at GENERIC_SANDBOX_BASE_URL).
    _sandbox_health_system(
        stdout,
        slug=GENERIC_SLUG,
        name="Generic SMART Health (standards-only sandbox)",
        fhir_base_url=f"{settings.GENERIC_SANDBOX_BASE_URL}/fhir/{GENERIC_TENANT}",
        tenant=GENERIC_TENANT,
    )
    seed_directory(stdout)


def _sandbox_health_system(
    stdout: Any, *, slug: str, name: str, fhir_base_url: str, tenant: str
) -> None:
    """A connectable health system at a sandbox tenant, and the demo client registered at that
    tenant with the health system's own redirect URI (/fhirlink/callback/<slug>)."""
    redirect_uri = health_system_redirect_uri(slug)
    health_system, created = health_system_register(
        slug=slug,
        name=name,
        fhir_base_url=fhir_base_url,
        tenant=tenant,
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
        tenant,
        "--name",
        "Patient Portal (demo)",
        stdout=stdout,
    )
    verb = "Registered" if created else "Updated"
    stdout.write(f"{verb} health system {health_system.slug} -> {fhir_base_url}\n")


# The demo's directory (issue #22): a few connectable sandbox tenants among Oracle's real (not
# connectable from here) entries. Same name, two towns: patients tell them apart by city.
DIRECTORY_SOURCE = "sandbox"
DIRECTORY_TENANTS = [
    ("5c1e7d0a-3b8f-4e8e-9a51-d1a0c0de0001", "Sandbox Community Hospital", "Kansas City", "64108"),
    ("5c1e7d0a-3b8f-4e8e-9a51-d1a0c0de0002", "Sandbox Community Hospital", "Liberty", "64068"),
]


def seed_directory(stdout: Any) -> None:
    """Sandbox tenants as directory entries, one platform app (the demo client) for them all."""
    import json

    from fhirlink.directory.importer import directory_import
    from fhirlink.directory.platform import platform_app_save
    from fhirlink.models import PlatformApp
    from fhirlink.services.registry import default_redirect_uri

    entries: list[dict[str, Any]] = []
    for tenant, name, city, zip_code in DIRECTORY_TENANTS:
        entries.append(
            {
                "resource": {
                    "resourceType": "Organization",
                    "id": f"O{tenant}",
                    "name": name,
                    "address": [{"city": city, "state": "MO", "postalCode": zip_code}],
                    "endpoint": [{"reference": f"Endpoint/{tenant}"}],
                }
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Endpoint",
                    "id": tenant,
                    "status": "active",
                    "address": f"{settings.SANDBOX_BASE_URL}/r4/{tenant}",
                }
            }
        )
        call_command(
            "sandbox_client_register",
            "--client-id",
            DEMO_CLIENT_ID,
            "--redirect-uri",
            default_redirect_uri(),
            "--tenant",
            tenant,
            "--name",
            "Patient Portal (demo)",
            stdout=stdout,
        )
    bundle = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    run = directory_import(raw=bundle.encode(), source=DIRECTORY_SOURCE, origin="demo")
    app = PlatformApp.objects.filter(source=DIRECTORY_SOURCE).first() or PlatformApp(
        source=DIRECTORY_SOURCE, name="Patient Portal (demo) on the sandbox"
    )
    app.client_id = DEMO_CLIENT_ID
    app.resources = [*DEFAULT_RESOURCES, "Binary"]
    platform_app_save(app=app)
    stdout.write(f"Directory: {run.total} sandbox entries (added {run.added})\n")
