"""Engagement reads."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from engagement.models import Campaign, Channel, Delivery, DeliveryStatus, Device
from engagement.services.patients import VISIBLE_IN_INBOX
from patientportal.accounts.models import Patient


def inbox_list(*, patient: Patient, include_snoozed: bool = False) -> QuerySet[Delivery]:
    """The patient's in-app reminders that have arrived (never another patient's)."""
    queryset = Delivery.objects.filter(
        patient=patient, channel=Channel.INBOX, status__in=VISIBLE_IN_INBOX
    ).select_related("campaign__template", "patient__user")
    if not include_snoozed:
        queryset = queryset.filter(
            Q(snoozed_until__isnull=True) | Q(snoozed_until__lte=timezone.now())
        )
    return queryset


def device_list(*, patient: Patient) -> QuerySet[Device]:
    return Device.objects.filter(patient=patient, disabled_at__isnull=True)


STAT_STATUSES = {
    "scheduled": (DeliveryStatus.SCHEDULED, DeliveryStatus.SENDING),
    "sent": (
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.OPENED,
        DeliveryStatus.ACKNOWLEDGED,
    ),
    "delivered": (DeliveryStatus.DELIVERED, DeliveryStatus.OPENED, DeliveryStatus.ACKNOWLEDGED),
    "failed": (DeliveryStatus.FAILED, DeliveryStatus.EXPIRED),
    "acknowledged": (DeliveryStatus.ACKNOWLEDGED,),
    "cancelled": (DeliveryStatus.CANCELLED,),
}


def campaign_stats_annotations() -> dict[str, Count]:
    return {
        f"stat_{name}": Count("deliveries", filter=Q(deliveries__status__in=statuses))
        for name, statuses in STAT_STATUSES.items()
    }


def campaign_list_with_stats() -> QuerySet[Campaign]:
    return Campaign.objects.annotate(**campaign_stats_annotations())


def campaign_stats(*, campaign_id: int) -> dict[str, int]:
    row = Delivery.objects.filter(campaign_id=campaign_id).aggregate(
        **{
            name: Count("id", filter=Q(status__in=statuses))
            for name, statuses in STAT_STATUSES.items()
        }
    )
    return {name: int(value or 0) for name, value in row.items()}
