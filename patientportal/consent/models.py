"""Consent: versioned documents per purpose, each patient's current state, and the history.

- `ConsentDocument`: what the patient agrees to, written by operators in the admin. One row per
  (purpose, version, language). A version with `requires_reconsent` invalidates grants of older
  versions once it is effective.
- `PatientConsent`: the current state per (patient, purpose), the row the consent gate reads.
- `ConsentRecord`: the history (grant, revoke, consent needed). Insert-only: never edited.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from patientportal.accounts.models import Patient


class Purpose(models.TextChoices):
    """What a use of patient data is for. Every path that uses patient data names one."""

    EHR_SYNC = "ehr_sync", "Sync my health record"
    CARE_TEAM_ACCESS = "care_team_access", "Care-team access"
    ENGAGEMENT = "engagement", "Reminders and engagement"
    AI_PROCESSING = "ai_processing", "AI processing"


class ConsentDocument(models.Model):
    """A version of the consent text for a purpose, in one language."""

    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    version = models.PositiveIntegerField()
    language = models.CharField(max_length=16, default="en")
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="The text the patient reads and accepts (Markdown).")
    effective_at = models.DateTimeField(
        help_text="From this moment this version is the current one for its purpose."
    )
    requires_reconsent = models.BooleanField(
        default=False,
        help_text=(
            "Patients who accepted an older version must accept this one before the purpose "
            "may use their data again (they move to 'consent needed' when it takes effect)."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["purpose", "-version", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["purpose", "version", "language"], name="consentdoc_unique_version"
            ),
        ]
        indexes = [models.Index(fields=["purpose", "effective_at"], name="consentdoc_effective")]

    def __str__(self) -> str:
        return f"{self.purpose} v{self.version} ({self.language})"


class ConsentStatus(models.TextChoices):
    GRANTED = "granted", "Granted"
    REVOKED = "revoked", "Revoked"
    CONSENT_NEEDED = "consent_needed", "Consent needed"


class PatientConsent(models.Model):
    """The patient's current consent for one purpose. Only the consent services write it."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices)
    version = models.PositiveIntegerField(help_text="The document version last accepted.")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "purpose"], name="patientconsent_unique"),
        ]
        indexes = [models.Index(fields=["purpose", "status", "version"], name="patientconsent_q")]

    def __str__(self) -> str:
        return f"{self.purpose}: {self.status}"


class ConsentAction(models.TextChoices):
    GRANT = "grant", "Granted"
    REVOKE = "revoke", "Revoked"
    CONSENT_NEEDED = "consent_needed", "Consent needed (new version)"


class ImmutableQuerySet(models.QuerySet[Any]):
    """History rows are never edited or deleted through the ORM."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError(f"{self.model.__name__} rows are never edited.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError(f"{self.model.__name__} rows are never deleted.")


class ConsentRecord(models.Model):
    """One event in a patient's consent history. Insert-only."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="consent_records")
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    action = models.CharField(max_length=16, choices=ConsentAction.choices)
    document = models.ForeignKey(
        ConsentDocument, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    version = models.PositiveIntegerField()
    language = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField()
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    application_client_id = models.CharField(
        max_length=100, blank=True, default="", help_text="The OAuth app the patient used."
    )
    request_id = models.CharField(max_length=64, blank=True, default="")

    objects: ClassVar[models.Manager[ConsentRecord]] = models.Manager.from_queryset(
        ImmutableQuerySet
    )()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["patient", "-created_at"], name="consentrecord_patient")]

    def __str__(self) -> str:
        return f"{self.purpose} {self.action} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("ConsentRecord rows are never edited.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("ConsentRecord rows are never deleted.")
