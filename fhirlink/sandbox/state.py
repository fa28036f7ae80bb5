"""Tenants, the per-tenant clock and switches, hashing and URL helpers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .conf import DEMO_TENANT, TOKEN_HOST, TenantSwitches
from .models import SandboxTenant


def tenant_exists(tenant: str) -> bool:
    return tenant == DEMO_TENANT or SandboxTenant.objects.filter(id=tenant).exists()


@dataclass(frozen=True)
class TenantState:
    exists: bool
    now: datetime
    faults: dict[str, Any]


def tenant_state(tenant: str) -> TenantState:
    """Existence, clock and faults of a tenant in one query (once per FHIR request)."""
    row = SandboxTenant.objects.filter(id=tenant).values("clock_offset_seconds", "faults").first()
    offset = row["clock_offset_seconds"] if row else 0
    return TenantState(
        exists=tenant == DEMO_TENANT or row is not None,
        now=timezone.now() + timedelta(seconds=offset),
        faults=(row["faults"] if row else {}) or {},
    )


def tenant_row(tenant: str) -> SandboxTenant:
    """The tenant's row, created on first use (the demo tenant needs none until then)."""
    row, _ = SandboxTenant.objects.get_or_create(id=tenant)
    return row


def tenant_create(*, tenant: str, name: str = "", switches: dict | None = None) -> SandboxTenant:
    row, _ = SandboxTenant.objects.update_or_create(
        id=tenant, defaults={"name": name, **({"switches": switches} if switches else {})}
    )
    return row


def tenant_switches(tenant: str) -> TenantSwitches:
    row = SandboxTenant.objects.filter(id=tenant).only("switches").first()
    return TenantSwitches.from_dict(row.switches if row else {})


def tenant_set_switches(*, tenant: str, **switches: object) -> None:
    with transaction.atomic():
        row = tenant_row(tenant)
        row.switches = {**row.switches, **switches}
        row.save(update_fields=["switches"])


def clock_now(tenant: str) -> datetime:
    """The sandbox's clock for a tenant: real time plus the offset the tests moved it by."""
    offset = (
        SandboxTenant.objects.filter(id=tenant)
        .values_list("clock_offset_seconds", flat=True)
        .first()
    )
    return timezone.now() + timedelta(seconds=offset or 0)


def clock_advance(*, tenant: str, seconds: int) -> datetime:
    from django.db.models import F

    with transaction.atomic():
        tenant_row(tenant)
        SandboxTenant.objects.filter(id=tenant).update(
            clock_offset_seconds=F("clock_offset_seconds") + seconds
        )
    return clock_now(tenant)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def origin_of(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def fhir_base(origin: str, tenant: str) -> str:
    return f"{origin}/r4/{tenant}"


def issuer(origin: str, tenant: str) -> str:
    return f"{origin}/tenants/{tenant}/oidc/idsps/{tenant}/"


def oauth_urls(origin: str, tenant: str) -> dict[str, str]:
    prefix = f"{origin}/tenants/{tenant}/protocols/oauth2/profiles/smart-v1"
    return {
        "authorize": f"{prefix}/personas/patient/authorize",
        "token": (
            f"{origin}/tenants/{tenant}/hosts/{TOKEN_HOST}/protocols/oauth2/profiles/smart-v1/token"
        ),
        "revoke": f"{prefix}/token/revoke",
        "introspect": f"{origin}/tokeninfo",
        "manage": f"{origin}/tenants/{tenant}/personas/patient/my-authorizations",
        "jwks": f"{origin}/jwk",
    }
