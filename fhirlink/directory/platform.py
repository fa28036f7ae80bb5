"""One app registration for the platform: a `PlatformApp` per directory source (e.g. the Oracle
Health patient app, one client id across every Millennium tenant it is enabled for).

A directory entry becomes a connectable `HealthSystem` lazily, when a patient picks it
(`directory_health_system_resolve`, called by `connection_start`); discovery and the capability
check then run on that row as for any registration (`services.discovery.discover`, cached).
Hand registrations keep working unchanged; an operator can hold back any entry.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from fhirlink import vault
from fhirlink.models import ClientAuth, DirectoryEntry, EntryStatus, HealthSystem, PlatformApp
from fhirlink.services.registry import default_redirect_uri, health_system_set_secret
from patientportal.core.errors import ValidationFailed

logger = logging.getLogger(__name__)

# The client fields a materialised health system takes from its platform app.
CLIENT_FIELDS = ("client_id", "client_auth", "jwt_key_id", "jwt_alg", "scope_syntax", "resources")


def platform_app_secret_aad(app: PlatformApp) -> str:
    return f"fhirlink.platformapp:{app.pk}:secret"


def _platform_app_secret(app: PlatformApp) -> str | None:
    if not app.secret_blob:
        return None
    return vault.open_sealed(
        bytes(app.secret_blob), key_id=app.secret_key_id, aad=platform_app_secret_aad(app)
    )


def _redirect_uri(entry: DirectoryEntry) -> str:
    """The one call site for a materialised health system's redirect URI."""
    return default_redirect_uri()


def platform_app_save(*, app: PlatformApp, secret: str | None = None) -> int:
    """Save the registration (sealing `secret` if given) and carry its client settings to every
    health system already created from it. Returns how many were updated."""
    if app.client_auth != ClientAuth.PUBLIC and not (secret or app.secret_blob):
        raise ValidationFailed(
            "A confidential client needs its secret or private key.", extra={"field": "secret"}
        )
    if app.client_auth == ClientAuth.PRIVATE_KEY_JWT and not app.jwt_key_id:
        raise ValidationFailed("private_key_jwt needs the key id (kid).", extra={"field": "kid"})
    with transaction.atomic():
        if secret:
            sealed = vault.seal(secret, aad=platform_app_secret_aad(app))
            app.secret_blob, app.secret_key_id = sealed.blob, sealed.key_id
        app.save()
        plain = _platform_app_secret(app)
        # The health systems created from it share their entry's primary key.
        systems = HealthSystem.objects.select_for_update().filter(
            directory_entry__source=app.source, directory_entry__id=F("pk")
        )
        updated = 0
        for health_system in systems:
            for name in CLIENT_FIELDS:
                setattr(health_system, name, getattr(app, name))
            health_system_set_secret(health_system, plain)
            health_system.save()
            updated += 1
    return updated


def directory_health_system_resolve(*, health_system_id: Any) -> HealthSystem | None:
    """The enabled health system for an id from the search API: a registration, or a directory
    entry materialised now with its source's platform app. None if there is none to connect."""
    health_system = HealthSystem.objects.filter(pk=health_system_id, enabled=True).first()
    if health_system is not None:
        held = DirectoryEntry.objects.filter(health_system=health_system, held_back=True)
        return None if held.exists() else health_system
    entry = DirectoryEntry.objects.filter(
        pk=health_system_id, status=EntryStatus.ACTIVE, held_back=False
    ).first()
    if entry is None:
        return None
    if entry.health_system_id is not None:
        return HealthSystem.objects.filter(pk=entry.health_system_id, enabled=True).first()
    app = PlatformApp.objects.filter(source=entry.source, enabled=True).first()
    if app is None:
        return None
    return _materialise(entry=entry, app=app)


def _materialise(*, entry: DirectoryEntry, app: PlatformApp) -> HealthSystem | None:
    health_system = HealthSystem(
        pk=entry.pk,
        slug=f"dir-{entry.pk.hex}",
        name=entry.name[:200],
        logo_url=entry.logo_url,
        fhir_base_url=entry.fhir_base_url,
        tenant=entry.tenant,
        redirect_uri=_redirect_uri(entry),
        enabled=True,
        **{name: getattr(app, name) for name in CLIENT_FIELDS},
    )
    health_system_set_secret(health_system, _platform_app_secret(app))
    try:
        with transaction.atomic():
            health_system.save(force_insert=True)
            # .update(): no updated_at bump, so the search index is not rebuilt for this.
            DirectoryEntry.objects.filter(pk=entry.pk, health_system__isnull=True).update(
                health_system=health_system
            )
    except IntegrityError:
        # Another request materialised it first (same primary key).
        return HealthSystem.objects.filter(pk=entry.pk, enabled=True).first()
    logger.info("directory entry %s: health system created from platform app %s", entry.pk, app.pk)
    return health_system


def directory_entries_hold_back(*, entry_ids: list[Any], held_back: bool) -> int:
    """Hide (or show again) entries; a created health system follows (no new connections)."""
    with transaction.atomic():
        count = DirectoryEntry.objects.filter(pk__in=entry_ids).update(
            held_back=held_back, updated_at=timezone.now()
        )
        HealthSystem.objects.filter(pk__in=entry_ids).update(enabled=not held_back)
    return count
