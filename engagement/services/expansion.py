"""Expansion: an occurrence into outbox rows, in resumable batches of patients.

One row per (occurrence, patient, channel), unique; `bulk_create(ignore_conflicts=True)`, so
overlapping or repeated expansions add nothing. Each row's `due_at` is the occurrence's floating
local time in the patient's time zone, after their quiet hours.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from engagement import channels, cohorts, scheduling
from engagement.models import Campaign, Delivery, Occurrence, ReminderPreference
from patientportal.accounts.models import Patient

logger = logging.getLogger(__name__)


def idempotency_key(*, occurrence_id: int, patient_id: Any, channel: str) -> str:
    return f"{occurrence_id}:{patient_id}:{channel}"


# --- Expansion ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpansionResult:
    patients: int
    deliveries: int
    finished: bool


def occurrence_expand(
    *,
    occurrence_id: int,
    batch_size: int | None = None,
    max_batches: int | None = None,
    now: datetime | None = None,
) -> ExpansionResult:
    """Expands an occurrence into outbox rows, one short transaction per batch of patients.

    Resumable (a cursor on the occurrence) and safe to run concurrently: each batch locks the
    occurrence row; a second expander finds it locked and leaves.
    """
    batch_size = batch_size or settings.ENGAGEMENT_EXPAND_BATCH_SIZE
    patients_done = 0
    rows_done = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        with transaction.atomic():
            occurrence = (
                Occurrence.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("campaign", "campaign__template")
                .filter(pk=occurrence_id, status=Occurrence.Status.PENDING)
                .first()
            )
            if occurrence is None:
                return ExpansionResult(patients_done, rows_done, finished=True)
            patient_rows = _next_patients(occurrence=occurrence, batch_size=batch_size)
            if not patient_rows:
                occurrence.status = Occurrence.Status.EXPANDED
                occurrence.expanded_at = timezone.now()
                occurrence.save(update_fields=["status", "expanded_at"])
                return ExpansionResult(patients_done, rows_done, finished=True)
            deliveries = _deliveries_for(
                occurrence=occurrence, patient_rows=patient_rows, now=now or timezone.now()
            )
            Delivery.objects.bulk_create(deliveries, ignore_conflicts=True, batch_size=1000)
            occurrence.cursor = str(patient_rows[-1][0])
            occurrence.patients_expanded = F("patients_expanded") + len(patient_rows)
            occurrence.save(update_fields=["cursor", "patients_expanded"])
            patients_done += len(patient_rows)
            rows_done += len(deliveries)
    return ExpansionResult(patients_done, rows_done, finished=False)


def _next_patients(*, occurrence: Occurrence, batch_size: int) -> list[tuple[uuid.UUID, str]]:
    if occurrence.patient_id is not None:
        queryset = Patient.objects.filter(pk=occurrence.patient_id)
    else:
        queryset = cohorts.cohort_patients(
            campaign=occurrence.campaign,
            purpose=f"occurrence {occurrence.pk}",
            log=not occurrence.cursor,
        )
    if occurrence.cursor:
        queryset = queryset.filter(pk__gt=uuid.UUID(occurrence.cursor))
    return list(queryset.order_by("pk").values_list("pk", "time_zone")[:batch_size])


def _deliveries_for(
    *, occurrence: Occurrence, patient_rows: list[tuple[uuid.UUID, str]], now: datetime
) -> list[Delivery]:
    campaign = occurrence.campaign
    ids = [str(pk) for pk, _ in patient_rows]
    preferences = {
        str(pref.patient_id): pref for pref in ReminderPreference.objects.filter(patient_id__in=ids)
    }
    default = ReminderPreference()
    # Only patients who consent now get rows (dispatch checks again before sending).
    consented = cohorts.consenting_patient_ids(patient_ids=[pk for pk, _ in patient_rows])
    reachable = {
        channel: channels.backend_for(channel).available_for(patient_ids=ids)
        for channel in campaign.channels
    }
    local = scheduling.carrier_to_floating(occurrence.local_start)
    not_before = campaign.activated_at if campaign.kind == Campaign.Kind.STAFF else None
    rows: list[Delivery] = []
    for patient_id, time_zone in patient_rows:
        key = str(patient_id)
        preference = preferences.get(key, default)
        if preference.opted_out_at is not None or key not in consented:
            continue
        if occurrence.event_key:
            # A system event is due now, or at the end of the patient's quiet hours.
            due = scheduling.due_at(
                scheduling.to_local(now, time_zone),
                time_zone=time_zone,
                quiet_start=preference.quiet_start,
                quiet_end=preference.quiet_end,
            )
            due = max(due, now)
        else:
            due = scheduling.due_at(
                local,
                time_zone=time_zone,
                quiet_start=preference.quiet_start,
                quiet_end=preference.quiet_end,
            )
            if not_before is not None and due < not_before:
                continue  # already past for this patient when staff scheduled it
        for channel in campaign.channels:
            if not preference.allows(channel) or key not in reachable[channel]:
                continue
            rows.append(
                Delivery(
                    occurrence_id=occurrence.pk,
                    campaign_id=campaign.pk,
                    patient_id=patient_id,
                    channel=channel,
                    idempotency_key=idempotency_key(
                        occurrence_id=occurrence.pk, patient_id=patient_id, channel=channel
                    ),
                    due_at=due,
                )
            )
    return rows
