"""System events delivered through the same outbox as staff reminders."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from engagement import scheduling
from engagement.models import Occurrence
from engagement.services.campaigns import RECONNECT_SLUG, system_campaign_get_or_create
from engagement.services.expansion import occurrence_expand
from fhirlink.models import Connection

logger = logging.getLogger(__name__)

RECONNECT_TITLE = "Please reconnect your health system"
RECONNECT_BODY = (
    "{app_name} can no longer update your health record. Open the app and reconnect your "
    "health system to keep it up to date."
)


def reconnect_reminder_send(*, connection_id: Any) -> Occurrence | None:
    """FHIRLINK_NEEDS_REAUTH_HANDLERS entry: a "please reconnect" reminder for the connection's
    patient, once per needs-reauth episode, through the outbox (consent, preferences,
    quiet hours and exactly-once all apply)."""
    row = (
        Connection.objects.filter(pk=connection_id).values("patient_id", "needs_reauth_at").first()
    )
    if row is None:
        return None
    reauth_at = row["needs_reauth_at"]
    # One reminder per needs-reauth episode (or per day if the episode has no timestamp).
    episode = f"{reauth_at:%Y-%m-%dT%H:%M:%S}" if reauth_at else f"{timezone.now():%Y-%m-%d}"
    campaign = system_campaign_get_or_create(
        slug=RECONNECT_SLUG,
        template_name="Reconnect your health system",
        title=RECONNECT_TITLE,
        body=RECONNECT_BODY,
    )
    return system_event_occurrence(
        campaign_id=campaign.pk,
        patient_id=row["patient_id"],
        event_key=f"needs-reauth:{connection_id}:{episode}",
    )


def system_event_occurrence(
    *, campaign_id: int, patient_id: Any, event_key: str
) -> Occurrence | None:
    """Creates (once per event key) and expands a one-patient occurrence, then dispatches."""
    now = timezone.now()
    try:
        with transaction.atomic():
            occurrence = Occurrence.objects.create(
                campaign_id=campaign_id,
                patient_id=patient_id,
                event_key=event_key,
                local_start=scheduling.floating_to_carrier(scheduling.carrier_to_floating(now)),
                expand_after=now,
            )
    except IntegrityError:
        return Occurrence.objects.filter(event_key=event_key).first()
    occurrence_expand(occurrence_id=occurrence.pk)
    from engagement.tasks import dispatch

    transaction.on_commit(lambda: dispatch.delay())
    return occurrence
