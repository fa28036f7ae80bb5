"""What a patient does from the app: devices, preferences, inbox actions."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from engagement import scheduling
from engagement.exceptions import DeviceNotFound, InvalidSchedule, ReminderNotFound
from engagement.models import Channel, Delivery, DeliveryStatus, Device, ReminderPreference
from engagement.services.delivery import deliveries_cancel_for_patient
from patientportal.accounts.models import Patient

logger = logging.getLogger(__name__)

VISIBLE_IN_INBOX = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.OPENED,
    DeliveryStatus.ACKNOWLEDGED,
)
MAX_SNOOZE = timedelta(days=7)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_register(*, patient: Patient, platform: str, token: str) -> Device:
    """Registers (or re-registers) a push token; a token moves to the patient registering it."""
    now = timezone.now()
    device, _ = Device.objects.update_or_create(
        platform=platform,
        token_hash=token_hash(token),
        defaults={"patient": patient, "token": token, "registered_at": now, "disabled_at": None},
    )
    return device


def device_remove(*, patient: Patient, device_id: uuid.UUID) -> None:
    deleted, _ = Device.objects.filter(pk=device_id, patient=patient).delete()
    if not deleted:
        raise DeviceNotFound()


@dataclass(frozen=True)
class Preferences:
    time_zone: str
    push: bool
    email: bool
    inbox: bool
    quiet_start: time | None
    quiet_end: time | None
    opted_out: bool


def preferences_get(*, patient: Patient) -> Preferences:
    pref = ReminderPreference.objects.filter(patient=patient).first() or ReminderPreference()
    return Preferences(
        time_zone=patient.time_zone,
        push=pref.push,
        email=pref.email,
        inbox=pref.inbox,
        quiet_start=pref.quiet_start,
        quiet_end=pref.quiet_end,
        opted_out=pref.opted_out_at is not None,
    )


_UNSET = object()


def preferences_update(
    *,
    patient: Patient,
    time_zone: str | None = None,
    push: bool | None = None,
    email: bool | None = None,
    inbox: bool | None = None,
    quiet_hours: tuple[time | None, time | None] | None = None,
    opted_out: bool | None = None,
) -> Preferences:
    """Updates what was given. Opting out cancels every pending reminder at once."""
    if time_zone is not None:
        try:
            scheduling.zone(time_zone)
        except scheduling.ScheduleError as exc:
            raise InvalidSchedule("Unknown time zone.", code="invalid_time_zone") from exc
    if quiet_hours is not None and (quiet_hours[0] is None) != (quiet_hours[1] is None):
        raise InvalidSchedule("Give both ends of the quiet hours, or neither.")
    with transaction.atomic():
        if time_zone is not None and time_zone != patient.time_zone:
            patient.time_zone = time_zone
            patient.save(update_fields=["time_zone"])
        pref, _ = ReminderPreference.objects.select_for_update().get_or_create(patient=patient)
        fields = ["updated_at"]
        for name, value in (("push", push), ("email", email), ("inbox", inbox)):
            if value is not None:
                setattr(pref, name, value)
                fields.append(name)
        if quiet_hours is not None:
            pref.quiet_start, pref.quiet_end = quiet_hours
            fields += ["quiet_start", "quiet_end"]
        if opted_out is not None:
            pref.opted_out_at = (pref.opted_out_at or timezone.now()) if opted_out else None
            fields.append("opted_out_at")
        pref.save(update_fields=fields)
        if opted_out:
            patient_id = patient.pk
            transaction.on_commit(
                lambda: deliveries_cancel_for_patient(patient_id=patient_id, reason="opted_out")
            )
    return preferences_get(patient=patient)


def patient_reminders_stop(*, patient_id: Any) -> None:
    """ACCOUNT_DELETION_REQUEST_HANDLERS entry: no more reminders and no push registrations for
    a patient whose account is being deleted (the rows themselves go with the patient)."""
    with transaction.atomic():
        deliveries_cancel_for_patient(patient_id=patient_id, reason="account_deleted")
        Device.objects.filter(patient_id=patient_id).delete()


def _inbox_item(*, patient: Patient, delivery_id: uuid.UUID) -> Delivery:
    item = (
        Delivery.objects.select_for_update()
        .filter(pk=delivery_id, patient=patient, channel=Channel.INBOX, status__in=VISIBLE_IN_INBOX)
        .first()
    )
    if item is None:
        raise ReminderNotFound()
    return item


def reminder_open(*, patient: Patient, delivery_id: uuid.UUID) -> Delivery:
    with transaction.atomic():
        item = _inbox_item(patient=patient, delivery_id=delivery_id)
        if item.status == DeliveryStatus.DELIVERED:
            item.status = DeliveryStatus.OPENED
            item.opened_at = timezone.now()
            item.save(update_fields=["status", "opened_at"])
    return item


def reminder_acknowledge(*, patient: Patient, delivery_id: uuid.UUID) -> Delivery:
    """Acknowledges a reminder (idempotent); its push/e-mail siblings count as acknowledged."""
    with transaction.atomic():
        item = _inbox_item(patient=patient, delivery_id=delivery_id)
        if item.status != DeliveryStatus.ACKNOWLEDGED:
            now = timezone.now()
            item.status = DeliveryStatus.ACKNOWLEDGED
            item.opened_at = item.opened_at or now
            item.acknowledged_at = now
            item.snoozed_until = None
            item.save(update_fields=["status", "opened_at", "acknowledged_at", "snoozed_until"])
            Delivery.objects.filter(
                occurrence_id=item.occurrence_id,
                patient=patient,
                status__in=(DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.OPENED),
            ).exclude(pk=item.pk).update(status=DeliveryStatus.ACKNOWLEDGED, acknowledged_at=now)
    return item


def reminder_snooze(
    *,
    patient: Patient,
    delivery_id: uuid.UUID,
    until: datetime | None = None,
    minutes: int | None = None,
) -> Delivery:
    """Hides a reminder from the inbox until a time (at most 7 days ahead)."""
    now = timezone.now()
    with transaction.atomic():
        # Another patient's or a missing reminder is a 404 whatever the body says.
        item = _inbox_item(patient=patient, delivery_id=delivery_id)
        if until is None:
            if minutes is None:
                raise InvalidSchedule("Give `until` or `minutes`.", code="invalid_snooze")
            until = now + timedelta(minutes=minutes)
        if until <= now or until > now + MAX_SNOOZE:
            raise InvalidSchedule("Snooze to a time within the next 7 days.", code="invalid_snooze")
        if item.status == DeliveryStatus.ACKNOWLEDGED:
            raise InvalidSchedule(
                "An acknowledged reminder cannot be snoozed.", code="invalid_snooze"
            )
        item.snoozed_until = until
        item.save(update_fields=["snoozed_until"])
    return item
