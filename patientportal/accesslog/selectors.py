"""Access-log reads: the patient's view and the auditor's filters."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils.crypto import salted_hmac

from patientportal.accounts.models import Patient

from .models import AccessEvent, ActorKind

SYSTEM_LABELS = {
    "fhirlink.sync_connection": "Automatic sync with your health system",
}


def access_events_for_patient(
    *,
    patient: Patient,
    action: str | None = None,
    actor_kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    person: str | None = None,
) -> QuerySet[AccessEvent]:
    events = AccessEvent.objects.filter(patient_id=patient.pk)
    if person:
        # The reads of one person's record (the records API logs `person` on each row).
        events = events.filter(query__person=person)
    if action:
        events = events.filter(action=action)
    if actor_kind:
        events = events.filter(actor_kind=actor_kind)
    if since:
        events = events.filter(occurred_at__gte=since)
    if until:
        events = events.filter(occurred_at__lt=until)
    return events


PUBLIC_ID_SALT = "patientportal.accesslog.public-id"


def access_event_public_id(event: AccessEvent) -> str:
    """The id a patient sees for an entry: a UUID-shaped HMAC-SHA256 of its `seq` under the
    chain key. The `seq` itself is installation-wide (a patient watching it would learn how
    many accesses everyone else's data had), so it stays for auditors (admin, exports,
    `accesslog_verify`); this id is stable and unique per entry and says nothing about others."""
    key = settings.ACCESS_LOG_CHAIN_KEY or settings.SECRET_KEY
    digest = salted_hmac(PUBLIC_ID_SALT, str(event.seq), secret=key, algorithm="sha256")
    return str(uuid.UUID(hex=digest.hexdigest()[:32]))


def actor_display(event: AccessEvent) -> str:
    """Who, as the patient sees it. Staff per ACCESS_LOG_STAFF_DISPLAY (role, name or both)."""
    if event.actor_kind == ActorKind.PATIENT:
        return "You"
    if event.actor_kind == ActorKind.STAFF:
        mode = settings.ACCESS_LOG_STAFF_DISPLAY
        role = event.actor_role or "Staff"
        if mode == "role" or not event.actor_name:
            return role
        if mode == "name":
            return event.actor_name
        return f"{event.actor_name} ({role})"
    if event.actor_kind == ActorKind.SYSTEM:
        return SYSTEM_LABELS.get(event.actor_role, "Patient Portal (automatic)")
    return event.actor_role or event.application_client_id or "An API client"
