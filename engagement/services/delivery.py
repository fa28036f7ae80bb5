"""The outbox (expansion is in `expansion.py`): claim due rows, send, record, retry.

Exactly-once rests on the database, not on the broker:
- one row per (occurrence, patient, channel), unique; expansion is `bulk_create(
  ignore_conflicts=True)` in resumable batches, so overlapping or repeated expansions add nothing;
- a worker claims due rows (`select_for_update(skip_locked=True)` on PostgreSQL, plus a conditional
  UPDATE that only moves `scheduled` rows) under a random claim token, so two workers never hold
  the same row; every later write is conditional on that token and the `sending` status;
- a worker that dies leaves its rows `sending`; after the claim lease they return to `scheduled`.
  For the in-app inbox the row *is* the message, so it is delivered exactly once; push and e-mail
  carry a collapse id / Message-ID derived from the idempotency key for the rare resend after a
  crash between the provider's acceptance and our commit.
"""

from __future__ import annotations

import logging
import random
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.dateformat import format as date_format

from engagement import channels, cohorts, scheduling, templating
from engagement.models import (
    Campaign,
    Channel,
    Delivery,
    DeliveryStatus,
    Occurrence,
    ReminderPreference,
)

logger = logging.getLogger(__name__)

GENERIC_TITLE = "New reminder"
GENERIC_BODY = "You have a new reminder in {app_name}. Open the app to read it."


# --- Dispatch -----------------------------------------------------------------------------------


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0

    def add(self, other: DispatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def deliveries_claim(*, limit: int, now: datetime | None = None) -> tuple[str, list[uuid.UUID]]:
    """Claims up to `limit` due rows for this worker; returns the claim token and the row ids."""
    now = now or timezone.now()
    token = secrets.token_hex(16)
    with transaction.atomic():
        candidates = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.SCHEDULED, due_at__lte=now)
            .order_by("due_at")
            .values_list("id", flat=True)[:limit]
        )
        if not candidates:
            return token, []
        Delivery.objects.filter(id__in=candidates, status=DeliveryStatus.SCHEDULED).update(
            status=DeliveryStatus.SENDING,
            claim_token=token,
            claimed_at=now,
            attempts=F("attempts") + 1,
        )
    claimed = list(
        Delivery.objects.filter(claim_token=token, status=DeliveryStatus.SENDING).values_list(
            "id", flat=True
        )
    )
    return token, claimed


def deliveries_dispatch(
    *,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    max_batches: int | None = None,
) -> DispatchStats:
    """Claims and sends due rows batch after batch until none is due or time runs out."""
    batch_size = batch_size or settings.ENGAGEMENT_DISPATCH_BATCH_SIZE
    budget = max_seconds if max_seconds is not None else settings.ENGAGEMENT_DISPATCH_MAX_SECONDS
    deadline = timezone.now() + timedelta(seconds=budget)
    total = DispatchStats()
    batches = 0
    while timezone.now() < deadline and (max_batches is None or batches < max_batches):
        batches += 1
        token, ids = deliveries_claim(limit=batch_size)
        if not ids:
            break
        total.add(deliveries_send_claimed(claim_token=token, ids=ids))
    return total


def _render_context(delivery: Delivery, local_date: datetime) -> dict[str, str]:
    return {
        "first_name": delivery.patient.user.first_name,
        "app_name": settings.ENGAGEMENT_APP_NAME,
        "reminder_date": date_format(local_date, "j F Y"),
    }


def message_for(delivery: Delivery) -> channels.OutgoingMessage:
    """What the channel sends: the template's text only where it may be shown outside the app."""
    template = delivery.campaign.template
    context = _render_context(
        delivery, scheduling.to_local(delivery.due_at, delivery.patient.time_zone)
    )
    outside = delivery.channel != Channel.INBOX
    if outside and not template.show_text_outside_app:
        title = GENERIC_TITLE
        body = templating.render(GENERIC_BODY, context)
    else:
        title = templating.render(template.title, context)
        body = templating.render(template.body, context)
    reminder_id = ""
    if outside:
        inbox_id = (
            Delivery.objects.filter(
                occurrence_id=delivery.occurrence_id,
                patient_id=delivery.patient_id,
                channel=Channel.INBOX,
            )
            .values_list("pk", flat=True)
            .first()
        )
        reminder_id = str(inbox_id) if inbox_id else ""
    return channels.OutgoingMessage(
        delivery_id=str(delivery.pk),
        idempotency_key=delivery.idempotency_key,
        patient_id=str(delivery.patient_id),
        title=title,
        body=body,
        reminder_id=reminder_id,
    )


def deliveries_send_claimed(*, claim_token: str, ids: Iterable[uuid.UUID]) -> DispatchStats:
    """Sends the rows this worker claimed; every write is conditional on the claim."""
    stats = DispatchStats()
    rows = list(
        Delivery.objects.filter(
            id__in=list(ids), claim_token=claim_token, status=DeliveryStatus.SENDING
        ).select_related("campaign", "campaign__template", "occurrence", "patient__user")
    )
    preferences = {
        pref.patient_id: pref
        for pref in ReminderPreference.objects.filter(patient_id__in={r.patient_id for r in rows})
    }
    consented = cohorts.consenting_patient_ids(patient_ids=list({r.patient_id for r in rows}))
    now = timezone.now()
    # Outcomes without an outside effect are written per group at the end of the batch (one
    # UPDATE each); an outside send (push, e-mail) is recorded right after the provider accepts.
    grouped: dict[tuple[str, str], list[uuid.UUID]] = defaultdict(list)
    for delivery in rows:
        stats.claimed += 1
        reason = _cancel_reason(delivery, preferences.get(delivery.patient_id), consented)
        if reason:
            grouped[(DeliveryStatus.CANCELLED, reason)].append(delivery.pk)
            stats.cancelled += 1
            continue
        if delivery.due_at < now - settings.ENGAGEMENT_MAX_LATENESS:
            grouped[(DeliveryStatus.EXPIRED, "too_late")].append(delivery.pk)
            stats.expired += 1
            continue
        try:
            result = channels.backend_for(delivery.channel).send(message_for(delivery))
        except channels.RetryableSendError as exc:
            if delivery.attempts >= settings.ENGAGEMENT_MAX_ATTEMPTS:
                _mine(delivery.pk, claim_token).update(
                    status=DeliveryStatus.FAILED, failed_at=timezone.now(), error_code=exc.code
                )
                stats.failed += 1
            else:
                _mine(delivery.pk, claim_token).update(
                    status=DeliveryStatus.SCHEDULED,
                    due_at=timezone.now() + retry_delay(delivery.attempts),
                    error_code=exc.code,
                    claim_token="",
                )
                stats.retried += 1
            continue
        except channels.TerminalSendError as exc:
            _mine(delivery.pk, claim_token).update(
                status=DeliveryStatus.FAILED, failed_at=timezone.now(), error_code=exc.code
            )
            stats.failed += 1
            continue
        if result.delivered and not result.provider_message_id:
            grouped[(DeliveryStatus.DELIVERED, "")].append(delivery.pk)
            stats.delivered += 1
            continue
        sent_at = timezone.now()
        fields: dict[str, Any] = {
            "status": DeliveryStatus.DELIVERED if result.delivered else DeliveryStatus.SENT,
            "sent_at": sent_at,
            "provider_message_id": result.provider_message_id,
            "error_code": "",
        }
        if result.delivered:
            fields["delivered_at"] = sent_at
            stats.delivered += 1
        else:
            stats.sent += 1
        _mine(delivery.pk, claim_token).update(**fields)
    _write_grouped(claim_token=claim_token, grouped=grouped)
    return stats


def _mine(delivery_id: uuid.UUID, claim_token: str) -> QuerySet[Delivery]:
    """The row, as long as this worker still holds its claim."""
    return Delivery.objects.filter(
        pk=delivery_id, claim_token=claim_token, status=DeliveryStatus.SENDING
    )


def _write_grouped(*, claim_token: str, grouped: dict[tuple[str, str], list[uuid.UUID]]) -> None:
    now = timezone.now()
    for (status, code), ids in grouped.items():
        fields: dict[str, Any] = {"status": status, "error_code": code}
        if status == DeliveryStatus.CANCELLED:
            fields["cancelled_at"] = now
        elif status == DeliveryStatus.DELIVERED:
            fields["sent_at"] = now
            fields["delivered_at"] = now
        Delivery.objects.filter(
            pk__in=ids, claim_token=claim_token, status=DeliveryStatus.SENDING
        ).update(**fields)


def _cancel_reason(
    delivery: Delivery,
    preference: ReminderPreference | None,
    consented: set[str],
) -> str:
    if delivery.campaign.status == Campaign.Status.CANCELLED:
        return "campaign_cancelled"
    if delivery.occurrence.status == Occurrence.Status.CANCELLED:
        return "campaign_cancelled"
    if preference is not None and preference.opted_out_at is not None:
        return "opted_out"
    if preference is not None and not preference.allows(delivery.channel):
        return "channel_off"
    if str(delivery.patient_id) not in consented:
        return "no_consent"
    return ""


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff with ±20 % jitter, capped at one hour."""
    base = settings.ENGAGEMENT_RETRY_BASE_SECONDS * (2 ** max(attempt - 1, 0))
    seconds = min(base, 3600) * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not crypto)
    return timedelta(seconds=seconds)


def deliveries_release_expired_claims(*, now: datetime | None = None) -> int:
    """Rows claimed by a worker that died go back to `scheduled` after the lease."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.ENGAGEMENT_CLAIM_LEASE_SECONDS)
    stale = Delivery.objects.filter(status=DeliveryStatus.SENDING, claimed_at__lt=cutoff)
    exhausted = stale.filter(attempts__gte=settings.ENGAGEMENT_MAX_ATTEMPTS).update(
        status=DeliveryStatus.FAILED, failed_at=now, error_code="abandoned"
    )
    released = stale.update(status=DeliveryStatus.SCHEDULED, claim_token="")
    if released or exhausted:
        logger.warning("released %s and failed %s abandoned claims", released, exhausted)
    return released


def deliveries_cancel_for_patient(*, patient_id: Any, reason: str = "no_consent") -> int:
    """Consent revocation handler (CONSENT_REVOCATION_HANDLERS["engagement"]) and opt-out:
    cancels every pending row of the patient at once."""
    now = timezone.now()
    cancelled = Delivery.objects.filter(
        patient_id=patient_id,
        status__in=(DeliveryStatus.SCHEDULED, DeliveryStatus.SENDING),
    ).update(status=DeliveryStatus.CANCELLED, cancelled_at=now, error_code=reason)
    logger.info("cancelled %s pending deliveries (%s)", cancelled, reason)
    return cancelled


def due_deliveries_exist(*, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return Delivery.objects.filter(Q(status=DeliveryStatus.SCHEDULED) & Q(due_at__lte=now)).exists()
