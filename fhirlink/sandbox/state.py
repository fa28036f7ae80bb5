"""Tenants, the per-tenant clock and switches, hashing and URL helpers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .conf import (
    DEMO_TENANT,
    GENERIC_TENANT,
    PROFILE_CERNER,
    PROFILE_GENERIC,
    TOKEN_HOST,
    TenantSwitches,
)
from .models import SandboxTenant

BUILTIN_TENANTS = {DEMO_TENANT: PROFILE_CERNER, GENERIC_TENANT: PROFILE_GENERIC}


def _raw_switches(tenant: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """A tenant's stored switches, with the built-in generic tenant's profile underneath."""
    base = {"profile": BUILTIN_TENANTS[tenant]} if tenant in BUILTIN_TENANTS else {}
    return {**base, **(stored or {})}


def tenant_exists(tenant: str, profile: str | None = None) -> bool:
    """The tenant exists (and, given ``profile``, is served by that profile: a Cerner tenant is
    not reachable through the generic server's URLs, nor the other way round)."""
    if profile is None and tenant in BUILTIN_TENANTS:
        return True
    row = SandboxTenant.objects.filter(id=tenant).values("switches").first()
    if row is None and tenant not in BUILTIN_TENANTS:
        return False
    if profile is None:
        return True
    raw = _raw_switches(tenant, row["switches"] if row else None)
    return str(raw.get("profile", PROFILE_CERNER)) == profile


@dataclass(frozen=True)
class TenantState:
    exists: bool
    now: datetime
    faults: dict[str, Any]
    profile: str = PROFILE_CERNER


def tenant_state(tenant: str) -> TenantState:
    """Existence, clock, faults and profile of a tenant in one query (once per FHIR request)."""
    row = (
        SandboxTenant.objects.filter(id=tenant)
        .values("clock_offset_seconds", "faults", "switches")
        .first()
    )
    offset = row["clock_offset_seconds"] if row else 0
    raw = _raw_switches(tenant, row["switches"] if row else None)
    return TenantState(
        exists=tenant in BUILTIN_TENANTS or row is not None,
        now=timezone.now() + timedelta(seconds=offset),
        faults=(row["faults"] if row else {}) or {},
        profile=str(raw.get("profile", PROFILE_CERNER)),
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
    return TenantSwitches.from_dict(_raw_switches(tenant, row.switches if row else None))


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


# --- URL layouts ---------------------------------------------------------------------------------
#
# Cerner: one origin; FHIR base /r4/{tenant}; authorization server under /tenants/{tenant}/...;
# the smart-configuration issuer /tenants/{tenant} is not the id_token's iss.
# Generic (a standards-only SMART 2.x server, Keycloak-like): the FHIR server and the
# authorization server are two origins of one port (127.0.0.1 and localhost); FHIR base
# /fhir/{tenant}; issuer /auth/realms/{tenant} (the same in discovery, the id_token and the
# authorization response's iss), endpoints under {issuer}/protocol/openid-connect/.


def generic_origins(origin: str) -> tuple[str, str]:
    """(FHIR origin, authorization server origin) of the generic profile served at ``origin``:
    the same port, two host names, so the issuer sits on another origin than the FHIR base."""
    parts = urlsplit(origin)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://127.0.0.1{port}", f"{parts.scheme}://localhost{port}"


def fhir_base(origin: str, tenant: str, profile: str = PROFILE_CERNER) -> str:
    if profile == PROFILE_GENERIC:
        return f"{generic_origins(origin)[0]}/fhir/{tenant}"
    return f"{origin}/r4/{tenant}"


def issuer(origin: str, tenant: str, profile: str = PROFILE_CERNER) -> str:
    """The id_token's ``iss`` (and the generic profile's discovery issuer and RFC 9207 ``iss``)."""
    if profile == PROFILE_GENERIC:
        return f"{generic_origins(origin)[1]}/auth/realms/{tenant}"
    return f"{origin}/tenants/{tenant}/oidc/idsps/{tenant}/"


def smart_issuer(origin: str, tenant: str, profile: str = PROFILE_CERNER) -> str:
    """The smart-configuration's ``issuer`` (Cerner's is not the id_token's)."""
    if profile == PROFILE_GENERIC:
        return issuer(origin, tenant, profile)
    return f"{origin}/tenants/{tenant}"


def auth_path(tenant: str, profile: str = PROFILE_CERNER) -> str:
    """The path the authorization pages (and their binding cookie) live under."""
    if profile == PROFILE_GENERIC:
        return f"/auth/realms/{tenant}/"
    return f"/tenants/{tenant}/"


def page_urls(tenant: str, profile: str = PROFILE_CERNER) -> dict[str, str]:
    """The login, patient picker and approval forms' actions (paths on the page's origin)."""
    if profile == PROFILE_GENERIC:
        prefix = f"/auth/realms/{tenant}/login-actions"
    else:
        prefix = f"/tenants/{tenant}/sandbox"
    return {"login": f"{prefix}/login", "pick": f"{prefix}/pick", "approve": f"{prefix}/approve"}


def oauth_urls(origin: str, tenant: str, profile: str = PROFILE_CERNER) -> dict[str, str]:
    if profile == PROFILE_GENERIC:
        oidc = f"{issuer(origin, tenant, profile)}/protocol/openid-connect"
        return {
            "authorize": f"{oidc}/auth",
            "token": f"{oidc}/token",
            "revoke": f"{oidc}/revoke",
            "introspect": f"{oidc}/token/introspect",
            "manage": f"{issuer(origin, tenant, profile)}/account",
            "jwks": f"{oidc}/certs",
        }
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
