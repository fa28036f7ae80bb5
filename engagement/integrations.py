"""The other apps engagement depends on, behind narrow, guarded functions.

Consent (`patientportal.consent`), the access log (`patientportal.accesslog`) and connections
(`fhirlink.models.Connection`) are built alongside this app. Their contracts are in
docs/DEVELOPING.md; until an app lands, these functions degrade safely:
- no consent service: nothing is consented, nothing is sent (fail closed);
- no access-log service: the entry is logged as skipped at WARNING (ids only);
- no Connection model: connection-based cohorts are unavailable (size 0, cannot be scheduled).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from django.apps import apps
from django.db import models

from patientportal.accounts.models import Patient

logger = logging.getLogger(__name__)

ENGAGEMENT_PURPOSE = "engagement"
NEEDS_REAUTH_STATUS = "needs_reauth"
CONNECTED_STATUSES = ("active", "syncing")
LAST_SYNC_FIELDS = ("last_synced_at", "last_sync_at", "last_successful_sync_at", "synced_at")


def consent_available() -> bool:
    try:
        importlib.import_module("patientportal.consent.services")
    except ImportError:
        return False
    return True


def engagement_consent_granted(*, patient: Patient) -> bool:
    """Whether the patient currently consents to engagement reminders. Fails closed."""
    try:
        from patientportal.consent import services as consent_services
        from patientportal.consent.models import Purpose
    except ImportError:
        return False
    purpose: Any = getattr(Purpose, "ENGAGEMENT", ENGAGEMENT_PURPOSE)
    return bool(consent_services.consent_is_granted(patient=patient, purpose=purpose))


def engagement_consented_ids(*, patient_ids: list[Any]) -> set[str]:
    """Which of these patients consent now, in one query when the consent app offers the
    `patients_with_consent` selector (else one `consent_is_granted` call each). Fails closed."""
    try:
        from patientportal.consent.selectors import patients_with_consent
    except ImportError:
        return {str(pk) for pk in patient_ids if engagement_consent_granted(patient=Patient(pk=pk))}
    granted = patients_with_consent(purpose=ENGAGEMENT_PURPOSE).filter(patient_id__in=patient_ids)
    return {str(pk) for pk in granted.values_list("patient_id", flat=True)}


def engagement_consented(queryset: models.QuerySet[Patient]) -> models.QuerySet[Patient]:
    """The patients of `queryset` who consent to reminders now (none without the consent app)."""
    try:
        from patientportal.consent.selectors import patients_with_consent
    except ImportError:
        return queryset.none()
    return queryset.filter(pk__in=patients_with_consent(purpose=ENGAGEMENT_PURPOSE))


def access_log_record(**fields: Any) -> None:
    """Writes one access-log entry through the access-log service, when it exists."""
    try:
        from patientportal.accesslog import services as accesslog_services
    except ImportError:
        logger.warning("access log unavailable; entry %s skipped", fields.get("action"))
        return
    accesslog_services.access_log_record(**fields)


def connection_model() -> type[models.Model] | None:
    try:
        return apps.get_model("fhirlink", "Connection")
    except LookupError:
        return None


def synced_resource_model() -> Any | None:
    """fhirlink's synced-record store (clear filter columns only are used here)."""
    try:
        return apps.get_model("fhirlink", "SyncedResource")
    except LookupError:
        return None


def connection_field(model: type[models.Model], candidates: tuple[str, ...]) -> str | None:
    names = {field.name for field in model._meta.get_fields()}
    return next((name for name in candidates if name in names), None)
