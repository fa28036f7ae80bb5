"""The health-system registry: create/update registrations, seal their client credential."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from fhirlink import vault
from fhirlink.models import ClientAuth, HealthSystem
from fhirlink.services.oauth_client import secret_aad
from patientportal.core.errors import ValidationFailed


def default_redirect_uri() -> str:
    """The shared (legacy) callback URL; new registrations get their own under it
    (`fhirlink.services.launch.health_system_redirect_uri`)."""
    return str(
        getattr(settings, "FHIRLINK_REDIRECT_URI", "")
        or f"{settings.PUBLIC_BASE_URL}/fhirlink/callback"
    )


def health_system_set_secret(health_system: HealthSystem, secret: str | None) -> list[str]:
    """Seal the client secret / private key PEM onto the row (not saved); None clears it."""
    if not secret:
        health_system.secret_blob = None
        health_system.secret_key_id = ""
    else:
        sealed = vault.seal(secret, aad=secret_aad(health_system))
        health_system.secret_blob = sealed.blob
        health_system.secret_key_id = sealed.key_id
    return ["secret_blob", "secret_key_id"]


def _validate(health_system: HealthSystem) -> None:
    if health_system.client_auth != ClientAuth.PUBLIC and not health_system.secret_blob:
        raise ValidationFailed(
            "A confidential client needs its secret or private key.",
            extra={"field": "secret"},
        )
    if health_system.client_auth == ClientAuth.PRIVATE_KEY_JWT and not health_system.jwt_key_id:
        raise ValidationFailed("private_key_jwt needs the key id (kid).", extra={"field": "kid"})


def health_system_register(
    *, slug: str, secret: str | None = None, **fields: Any
) -> tuple[HealthSystem, bool]:
    """Create or update (by slug) a registration. `secret` None leaves a stored one as is."""
    with transaction.atomic():
        health_system = HealthSystem.objects.select_for_update().filter(slug=slug).first()
        created = health_system is None
        if health_system is None:
            health_system = HealthSystem(slug=slug)
        for name, value in fields.items():
            if value is not None:
                setattr(health_system, name, value)
        if not health_system.redirect_uri:
            from fhirlink.services.launch import health_system_redirect_uri

            health_system.redirect_uri = health_system_redirect_uri(health_system)
        if health_system.tenant == "" and "/r4/" in health_system.fhir_base_url:
            health_system.tenant = health_system.fhir_base_url.rstrip("/").rsplit("/", 1)[-1]
        if secret is not None:
            health_system_set_secret(health_system, secret)
        # Cached discovery no longer applies if the endpoint changed.
        health_system.discovery = None
        health_system.discovery_expires_at = None
        _validate(health_system)
        health_system.full_clean(exclude=["secret_blob", "discovery"])
        health_system.save()
    return health_system, created


def client_jwks() -> dict[str, Any]:
    """Public keys of every enabled private_key_jwt registration (our JWKS URL for the EHRs)."""
    from fhirlink.services.oauth_client import health_system_secret

    keys: list[dict[str, str]] = []
    seen: set[str] = set()
    for health_system in HealthSystem.objects.filter(
        enabled=True, client_auth=ClientAuth.PRIVATE_KEY_JWT
    ).exclude(secret_blob=None):
        if health_system.jwt_key_id in seen:
            continue
        try:
            jwk = vault.signing_key_public_jwk(
                health_system_secret(health_system),
                alg=health_system.jwt_alg,
                kid=health_system.jwt_key_id,
            )
        except vault.VaultError:
            continue
        seen.add(health_system.jwt_key_id)
        keys.append(jwk)
    return {"keys": keys}
