"""The consent gate and the consent writes.

`consent_is_granted` / `consent_require` answer "may purpose P use patient X's data now?" for
every other app. A grant counts while it is the patient's current state, its purpose is enabled,
and no effective document version requiring re-consent is newer than the version granted: the
gate flips the moment a revocation commits or a re-consent version takes effect, with no job in
between. Revocation (and "consent needed") then calls the handlers in
`settings.CONSENT_REVOCATION_HANDLERS[purpose]` after commit with `patient_id=`, so the sync
engine stops and engagement cancels pending reminders without consent importing them.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from patientportal.accesslog.models import AccessAction, ActorKind
from patientportal.accesslog.services import RequestContext, access_log_record, request_context
from patientportal.accounts.models import Patient, User

from .exceptions import ConsentDocumentNotCurrent, ConsentRequired, PurposeNotOffered
from .models import (
    ConsentAction,
    ConsentDocument,
    ConsentRecord,
    ConsentStatus,
    PatientConsent,
    Purpose,
)
from .selectors import consent_document_current, purposes_enabled

logger = logging.getLogger(__name__)


def _required_version_subquery(purpose: str, now: datetime) -> Any:
    from django.db.models import Subquery

    return Coalesce(
        Subquery(
            ConsentDocument.objects.filter(
                purpose=purpose, requires_reconsent=True, effective_at__lte=now
            )
            .order_by("-version")
            .values("version")[:1]
        ),
        Value(0),
    )


def consent_is_granted(*, patient: Patient | uuid.UUID | str, purpose: Purpose | str) -> bool:
    """True if the patient's consent for the purpose holds right now (one query)."""
    if str(purpose) not in settings.CONSENT_ENABLED_PURPOSES:
        return False
    patient_id = patient.pk if isinstance(patient, Patient) else patient
    return PatientConsent.objects.filter(
        patient_id=patient_id,
        purpose=str(purpose),
        status=ConsentStatus.GRANTED,
        version__gte=_required_version_subquery(str(purpose), timezone.now()),
    ).exists()


def consent_require(*, patient: Patient | uuid.UUID | str, purpose: Purpose | str) -> None:
    """Raise ConsentRequired (403 `consent_required`) unless the consent holds."""
    if not consent_is_granted(patient=patient, purpose=purpose):
        raise ConsentRequired(extra={"purpose": str(purpose)})


def _run_revocation_handlers(*, purpose: str, patient_id: str) -> None:
    for dotted in settings.CONSENT_REVOCATION_HANDLERS.get(purpose, []):
        try:
            import_string(dotted)(patient_id=patient_id)
        except Exception:
            # One failing handler must not stop the others; the gate has already flipped.
            logger.exception("Consent revocation handler %s failed for purpose %s", dotted, purpose)


def _on_commit_revocation(*, purpose: str, patient_id: uuid.UUID) -> None:
    transaction.on_commit(
        lambda: _run_revocation_handlers(purpose=purpose, patient_id=str(patient_id))
    )


def _record(
    *,
    patient: Patient,
    purpose: str,
    action: str,
    version: int,
    document: ConsentDocument | None,
    now: datetime,
    actor_user_id: int | None,
    ctx: RequestContext,
) -> ConsentRecord:
    record = ConsentRecord(
        patient=patient,
        purpose=purpose,
        action=action,
        document=document,
        version=version,
        language=document.language if document else "",
        created_at=now,
        actor_user_id=actor_user_id,
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
        application_client_id=ctx.application_client_id,
        request_id=ctx.request_id,
    )
    record.save(force_insert=True)
    return record


def consent_grant(
    *,
    patient: Patient,
    purpose: Purpose | str,
    version: int,
    language: str | None = None,
    actor_user: User | None = None,
    request: Any | None = None,
) -> ConsentRecord:
    """The patient accepts the current document of a purpose (the version they read)."""
    purpose = str(purpose)
    if purpose not in purposes_enabled():
        raise PurposeNotOffered()
    now = timezone.now()
    document = consent_document_current(purpose=purpose, language=language, now=now)
    if document is None:
        raise PurposeNotOffered()
    if document.version != version:
        raise ConsentDocumentNotCurrent(extra={"current_version": document.version})
    ctx = request_context(request)
    actor = actor_user or patient.user
    with transaction.atomic():
        PatientConsent.objects.update_or_create(
            patient=patient,
            purpose=purpose,
            defaults={"status": ConsentStatus.GRANTED, "version": version, "updated_at": now},
        )
        record = _record(
            patient=patient,
            purpose=purpose,
            action=ConsentAction.GRANT,
            version=version,
            document=document,
            now=now,
            actor_user_id=actor.pk,
            ctx=ctx,
        )
        access_log_record(
            actor_kind=ActorKind.PATIENT,
            actor_user=actor,
            action=AccessAction.CONSENT_CHANGE,
            patient=patient,
            purpose=purpose,
            resource_type="Consent",
            resource_ids=[record.pk],
            query={"change": "grant", "version": version},
            context=ctx,
            request=request,
        )
    return record


def consent_revoke(
    *,
    patient: Patient,
    purpose: Purpose | str,
    actor_user: User | None = None,
    request: Any | None = None,
) -> ConsentRecord | None:
    """Withdraw a consent. Effective at once; the purpose's handlers run after commit.

    Revoking a consent that is not granted changes nothing and returns None (idempotent).
    """
    purpose = str(purpose)
    if purpose not in Purpose.values:
        raise PurposeNotOffered()
    now = timezone.now()
    ctx = request_context(request)
    actor = actor_user or patient.user
    with transaction.atomic():
        consent = (
            PatientConsent.objects.select_for_update()
            .filter(patient=patient, purpose=purpose)
            .first()
        )
        if consent is None or consent.status == ConsentStatus.REVOKED:
            return None
        consent.status = ConsentStatus.REVOKED
        consent.updated_at = now
        consent.save(update_fields=["status", "updated_at"])
        record = _record(
            patient=patient,
            purpose=purpose,
            action=ConsentAction.REVOKE,
            version=consent.version,
            document=None,
            now=now,
            actor_user_id=actor.pk,
            ctx=ctx,
        )
        access_log_record(
            actor_kind=ActorKind.PATIENT,
            actor_user=actor,
            action=AccessAction.CONSENT_CHANGE,
            patient=patient,
            purpose=purpose,
            resource_type="Consent",
            resource_ids=[record.pk],
            query={"change": "revoke", "version": consent.version},
            context=ctx,
            request=request,
        )
        _on_commit_revocation(purpose=purpose, patient_id=patient.pk)
    return record


def consent_apply_reconsent(*, now: datetime | None = None) -> int:
    """Move patients whose grant predates an effective re-consent version to "consent needed".

    The gate already refuses such grants (it compares versions); this makes the state visible,
    writes the history and calls the revocation handlers so running work stops. Idempotent; run
    by the beat task `consent.apply_reconsent` and when an operator saves a document.
    """
    now = now or timezone.now()
    moved = 0
    for purpose in Purpose.values:
        with transaction.atomic():
            stale = list(
                PatientConsent.objects.select_for_update()
                .filter(
                    purpose=purpose,
                    status=ConsentStatus.GRANTED,
                    version__lt=_required_version_subquery(purpose, now),
                )
                .select_related("patient")
            )
            if not stale:
                continue
            PatientConsent.objects.filter(pk__in=[c.pk for c in stale]).update(
                status=ConsentStatus.CONSENT_NEEDED, updated_at=now
            )
            ConsentRecord.objects.bulk_create(
                [
                    ConsentRecord(
                        patient=c.patient,
                        purpose=purpose,
                        action=ConsentAction.CONSENT_NEEDED,
                        version=c.version,
                        created_at=now,
                    )
                    for c in stale
                ]
            )
            for c in stale:
                _on_commit_revocation(purpose=purpose, patient_id=c.patient_id)
            moved += len(stale)
    if moved:
        logger.info("Consent: %s grants moved to consent_needed by a new version", moved)
    return moved
