"""Consent reads: current documents, a patient's states and history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from patientportal.accounts.models import Patient

from .models import ConsentDocument, ConsentRecord, ConsentStatus, PatientConsent, Purpose


def purposes_enabled() -> list[str]:
    """The purposes offered on this server, in Purpose order (ai_processing only if enabled)."""
    enabled = set(settings.CONSENT_ENABLED_PURPOSES)
    return [p for p in Purpose.values if p in enabled]


def consent_document_current(
    *, purpose: str, language: str | None = None, now: datetime | None = None
) -> ConsentDocument | None:
    """The newest effective version for the purpose, in `language` if written, else the default."""
    now = now or timezone.now()
    effective = ConsentDocument.objects.filter(purpose=purpose, effective_at__lte=now)
    latest = effective.order_by("-version").values_list("version", flat=True).first()
    if latest is None:
        return None
    candidates = {d.language: d for d in effective.filter(version=latest)}
    for lang in (language, settings.CONSENT_DEFAULT_LANGUAGE):
        if lang and lang in candidates:
            return candidates[lang]
    return sorted(candidates.values(), key=lambda d: d.language)[0]


def consent_documents_current(
    *, language: str | None = None, now: datetime | None = None
) -> list[ConsentDocument]:
    """The current document of every enabled purpose that has one."""
    documents = []
    for purpose in purposes_enabled():
        document = consent_document_current(purpose=purpose, language=language, now=now)
        if document is not None:
            documents.append(document)
    return documents


def required_version(*, purpose: str, now: datetime | None = None) -> int:
    """The oldest version a grant may have and still count (the newest re-consent version)."""
    version = (
        ConsentDocument.objects.filter(
            purpose=purpose, requires_reconsent=True, effective_at__lte=now or timezone.now()
        )
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    return version or 0


def patient_consents(*, patient: Patient) -> dict[str, PatientConsent]:
    return {c.purpose: c for c in PatientConsent.objects.filter(patient=patient)}


def effective_status(*, consent: PatientConsent | None, purpose: str) -> str:
    """The status the patient sees, taking a re-consent version not yet applied into account."""
    if consent is None:
        return ConsentStatus.CONSENT_NEEDED
    if consent.status == ConsentStatus.GRANTED and consent.version < required_version(
        purpose=purpose
    ):
        return ConsentStatus.CONSENT_NEEDED
    return consent.status


def consent_history(*, patient: Patient) -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.filter(patient=patient).select_related("document")


def patients_with_consent(*, purpose: str) -> QuerySet[PatientConsent, Any]:
    """Ids of the patients whose consent for the purpose holds now (a subquery for filters)."""
    if purpose not in settings.CONSENT_ENABLED_PURPOSES:
        return PatientConsent.objects.none().values("patient_id")
    return PatientConsent.objects.filter(
        purpose=purpose,
        status=ConsentStatus.GRANTED,
        version__gte=required_version(purpose=purpose),
    ).values("patient_id")
