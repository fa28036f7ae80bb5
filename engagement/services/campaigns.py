"""Campaign writes: validate, schedule, cancel, plan occurrences; system events."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from engagement import cohorts, scheduling, templating
from engagement.exceptions import CampaignNotActive, InvalidSchedule
from engagement.models import (
    Audience,
    Campaign,
    Delivery,
    DeliveryStatus,
    MessageTemplate,
    Occurrence,
    ReminderPreference,
)
from patientportal.accounts.models import User
from patientportal.consent.models import Purpose
from patientportal.consent.selectors import patients_with_consent

logger = logging.getLogger(__name__)

PENDING_STATUSES = (DeliveryStatus.SCHEDULED, DeliveryStatus.SENDING)


def template_validate(*, title: str, body: str) -> None:
    """Raises InvalidSchedule-style validation errors for non-whitelisted placeholders."""
    try:
        templating.placeholders_in(title)
        templating.placeholders_in(body)
    except templating.TemplateError as exc:
        raise InvalidSchedule(str(exc), code="invalid_template") from exc


def campaign_validate(*, campaign: Campaign) -> None:
    """Checks the schedule and audience before a campaign can be scheduled."""
    if campaign.rrule.strip():
        try:
            scheduling.parse_rule(
                campaign.rrule,
                dtstart=datetime.combine(campaign.starts_on, campaign.send_time),
            )
        except scheduling.ScheduleError as exc:
            raise InvalidSchedule(str(exc)) from exc
    if campaign.ends_on is not None and campaign.ends_on < campaign.starts_on:
        raise InvalidSchedule("The end date is before the start date.")
    if (campaign.audience == Audience.PATIENT) != (campaign.patient_id is not None):
        raise InvalidSchedule("Choose a patient for a one-patient reminder, and only then.")
    if campaign.audience in (Audience.CONDITION_CODE, Audience.MEDICATION_CODE) and not (
        campaign.cohort_code.strip()
    ):
        raise InvalidSchedule("Give the code the cohort selects on.")
    if not campaign.channels:
        raise InvalidSchedule("Choose at least one channel.")


def campaign_audience_size(*, campaign: Campaign) -> int:
    """How many patients the cohort has now."""
    return cohorts.cohort_patients(campaign=campaign, purpose="size preview").count()


def campaign_reachable_size(*, campaign: Campaign) -> int:
    """How many of the cohort's patients consent to reminders and have not opted out."""
    queryset = cohorts.cohort_patients(campaign=campaign, purpose="size preview", log=False)
    opted_out = ReminderPreference.objects.filter(opted_out_at__isnull=False)
    return (
        queryset.filter(pk__in=patients_with_consent(purpose=Purpose.ENGAGEMENT))
        .exclude(pk__in=opted_out.values("patient_id"))
        .count()
    )


def campaign_schedule(*, campaign: Campaign, actor: User | None = None) -> Campaign:
    """Validates and activates a campaign; beat plans its occurrences from then on."""
    campaign_validate(campaign=campaign)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.status == Campaign.Status.CANCELLED:
            raise CampaignNotActive()
        if locked.status != Campaign.Status.SCHEDULED:
            locked.status = Campaign.Status.SCHEDULED
            locked.activated_at = timezone.now()
            if actor is not None and locked.created_by_id is None:
                locked.created_by = actor
            locked.save(update_fields=["status", "activated_at", "created_by", "updated_at"])
    logger.info("campaign %s scheduled", campaign.pk)
    campaign.refresh_from_db()
    return campaign


def campaign_cancel(*, campaign_id: int) -> int:
    """Cancels a campaign, its pending occurrences and its undelivered outbox rows.

    Returns the number of outbox rows cancelled. Rows already sent stay as they are.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = Campaign.objects.filter(pk=campaign_id).exclude(status=Campaign.Status.CANCELLED)
        updated.update(status=Campaign.Status.CANCELLED, cancelled_at=now, updated_at=now)
        Occurrence.objects.filter(campaign_id=campaign_id, status=Occurrence.Status.PENDING).update(
            status=Occurrence.Status.CANCELLED
        )
        cancelled = Delivery.objects.filter(
            campaign_id=campaign_id, status__in=PENDING_STATUSES
        ).update(status=DeliveryStatus.CANCELLED, cancelled_at=now, error_code="campaign_cancelled")
    logger.info("campaign %s cancelled (%s deliveries)", campaign_id, cancelled)
    return cancelled


def occurrences_plan(*, now: datetime | None = None) -> int:
    """Creates the occurrences of scheduled campaigns that some time zone has reached.

    An occurrence at floating local time L exists from L - 14 h (the first zone to reach it).
    Idempotent: the unique (campaign, local_start) constraint absorbs overlapping beat runs.
    """
    now = now or timezone.now()
    horizon = scheduling.carrier_to_floating(now) + scheduling.EARLIEST_ZONE_OFFSET
    created = 0
    campaigns = Campaign.objects.filter(
        status=Campaign.Status.SCHEDULED, kind=Campaign.Kind.STAFF
    ).only(
        "id",
        "starts_on",
        "send_time",
        "rrule",
        "ends_on",
        "planned_through",
        "activated_at",
    )
    for campaign in campaigns.iterator():
        created += _plan_campaign(campaign=campaign, horizon=horizon)
    return created


def _plan_campaign(*, campaign: Campaign, horizon: datetime) -> int:
    after = (
        scheduling.carrier_to_floating(campaign.planned_through)
        if campaign.planned_through
        else None
    )
    try:
        occurrences = list(
            scheduling.local_occurrences(
                starts_on=campaign.starts_on,
                send_time=campaign.send_time,
                rule_text=campaign.rrule,
                ends_on=campaign.ends_on,
                after=after,
                until=horizon,
            )
        )
    except scheduling.ScheduleError:
        logger.warning("campaign %s has an invalid schedule; not planned", campaign.pk)
        return 0
    activated = campaign.activated_at or timezone.now()
    rows = []
    for local in occurrences:
        # Skip occurrences every time zone had passed before the campaign was scheduled.
        latest = scheduling.floating_to_carrier(local) + scheduling.LATEST_ZONE_OFFSET
        if latest < activated:
            continue
        rows.append(
            Occurrence(
                campaign_id=campaign.pk,
                local_start=scheduling.floating_to_carrier(local),
                expand_after=scheduling.floating_to_carrier(local)
                - scheduling.EARLIEST_ZONE_OFFSET,
            )
        )
    with transaction.atomic():
        Occurrence.objects.bulk_create(rows, ignore_conflicts=True)
        Campaign.objects.filter(pk=campaign.pk).update(
            planned_through=scheduling.floating_to_carrier(horizon)
        )
        if _campaign_has_no_future(campaign=campaign, horizon=horizon):
            Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SCHEDULED).update(
                status=Campaign.Status.FINISHED
            )
    return len(rows)


def _campaign_has_no_future(*, campaign: Campaign, horizon: datetime) -> bool:
    try:
        upcoming = scheduling.local_occurrences(
            starts_on=campaign.starts_on,
            send_time=campaign.send_time,
            rule_text=campaign.rrule,
            ends_on=campaign.ends_on,
            after=horizon,
            until=horizon + timedelta(days=3660),
        )
        next(upcoming)
    except StopIteration:
        return True
    return False


# --- System events ------------------------------------------------------------------------------

RECONNECT_SLUG = "connection-needs-reauth"
RECONNECT_TEMPLATE = "Reconnect your health system"


def system_campaign_get_or_create(
    *, slug: str, template_name: str, title: str, body: str
) -> Campaign:
    template, _ = MessageTemplate.objects.get_or_create(
        name=template_name, defaults={"title": title, "body": body}
    )
    campaign, _ = Campaign.objects.get_or_create(
        slug=slug,
        defaults={
            "name": template_name,
            "kind": Campaign.Kind.SYSTEM,
            "template": template,
            "audience": Audience.ALL_PATIENTS,
            "starts_on": timezone.now().date(),
            "send_time": datetime.min.time(),
            "status": Campaign.Status.SCHEDULED,
            "activated_at": timezone.now(),
            "send_push": True,
            "send_email": True,
            "send_inbox": True,
        },
    )
    return campaign
