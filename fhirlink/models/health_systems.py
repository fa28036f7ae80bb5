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


class ReviewState(models.TextChoices):
    """Where the health system's security and privacy review stands (docs: README, operations)."""

    NOT_STARTED = "not_started", "Not started"
    IN_REVIEW = "in_review", "In review"
    APPROVED = "approved", "Approved"


class AgreementKind(models.TextChoices):
    """The agreement on file for the relationship, where it needs one."""

    NONE = "", "None on file"
    BAA = "baa", "Business associate agreement (HIPAA)"
    DPA = "dpa", "Data processing agreement (UK GDPR Art. 28)"
    DSA = "dsa", "Data sharing agreement"
    OTHER = "other", "Other agreement"


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
        max_length=500,
        blank=True,
        help_text=(
            "The redirect URI registered at the EHR: this health system's own "
            "/fhirlink/callback/<slug> (filled in when left empty)."
        ),
    )
    enabled = models.BooleanField(default=True)

    # Discovery cache (smart-configuration + CapabilityStatement summary).
    discovery = models.JSONField(null=True, blank=True, editable=False)
    discovery_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    discovery_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Security and privacy review (per customer). The pack generated for it is stored beside it
    # (patientportal.reviewpack.ReviewPack); `on_hold` keeps patients from connecting without
    # deleting anything.
    review_state = models.CharField(
        max_length=16, choices=ReviewState.choices, default=ReviewState.NOT_STARTED
    )
    review_started_on = models.DateField(null=True, blank=True)
    review_approved_on = models.DateField(null=True, blank=True)
    reviewer = models.CharField(
        max_length=200, blank=True, help_text="Who reviews for the health system (name, role)."
    )
    agreement_kind = models.CharField(
        max_length=8, choices=AgreementKind.choices, blank=True, default=AgreementKind.NONE
    )
    agreement_reference = models.CharField(
        max_length=200, blank=True, help_text="Where the signed agreement is filed (not the file)."
    )
    agreement_signed_on = models.DateField(null=True, blank=True)
    review_notes = models.TextField(blank=True)
    on_hold = models.BooleanField(
        default=False,
        help_text="Held: patients see it as not available yet and cannot connect; nothing is "
        "deleted and existing connections are kept.",
    )
    hold_reason = models.CharField(max_length=200, blank=True)
    held_at = models.DateTimeField(null=True, blank=True, editable=False)

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

    @property
    def available(self) -> bool:
        """Patients can connect it (enabled and not held)."""
        return self.enabled and not self.on_hold
