"""The health-system registry: one row per Cerner tenant + client registration."""

from __future__ import annotations

import uuid

from django.db import models


class ClientAuth(models.TextChoices):
    PUBLIC = "public", "Public client (PKCE only)"
    CLIENT_SECRET_BASIC = "client_secret_basic", "Confidential: client_secret_basic"
    PRIVATE_KEY_JWT = "private_key_jwt", "Confidential: private_key_jwt"


class ScopeSyntax(models.TextChoices):
    V1 = "v1", "SMART v1 (patient/X.read)"
    V2 = "v2", "SMART v2 (patient/X.rs)"


class JwtAlg(models.TextChoices):
    RS384 = "RS384", "RS384"
    ES384 = "ES384", "ES384"


DEFAULT_RESOURCES = [
    "Patient",
    "AllergyIntolerance",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "Encounter",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "Goal",
    "CareTeam",
]


def default_resources() -> list[str]:
    return list(DEFAULT_RESOURCES)


class HealthSystem(models.Model):
    """A Cerner tenant the app is registered with. Operators manage these in the admin or with
    `manage.py healthsystem_register`. The client secret / private key is sealed by the vault
    (`secret_blob` under KEK `secret_key_id`) and never shown back."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    logo_url = models.URLField(blank=True)
    fhir_base_url = models.URLField(max_length=500)
    tenant = models.CharField(max_length=100, blank=True)
    client_id = models.CharField(max_length=200)
    client_auth = models.CharField(
        max_length=32, choices=ClientAuth.choices, default=ClientAuth.PUBLIC
    )
    jwt_key_id = models.CharField(
        max_length=200, blank=True, help_text="kid of the private key (private_key_jwt)."
    )
    jwt_alg = models.CharField(max_length=8, choices=JwtAlg.choices, default=JwtAlg.RS384)
    secret_key_id = models.CharField(max_length=64, blank=True, editable=False)
    secret_blob = models.BinaryField(null=True, blank=True, editable=False)
    scope_syntax = models.CharField(max_length=2, choices=ScopeSyntax.choices, default="v2")
    resources = models.JSONField(default=default_resources)
    redirect_uri = models.URLField(
        max_length=500, help_text="The redirect URI registered at the EHR (our /fhirlink/callback)."
    )
    enabled = models.BooleanField(default=True)

    # Discovery cache (smart-configuration + CapabilityStatement summary).
    discovery = models.JSONField(null=True, blank=True, editable=False)
    discovery_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    discovery_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["fhir_base_url", "client_id"], name="fhirlink_hs_base_client_unique"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_blob)
