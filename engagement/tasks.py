"""Thin Celery wrappers around the outbox services (primitive ids; idempotent via the DB)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from engagement import services
from engagement.models import Occurrence

logger = logging.getLogger(__name__)


@shared_task(name="engagement.tick", ignore_result=True, soft_time_limit=50, time_limit=60)
def tick() -> None:
    """Beat, every 30 s: plan occurrences, start due expansions, release dead claims, and fan
    out dispatchers when rows are due. Overlapping ticks are harmless (see services.delivery)."""
    services.occurrences_plan()
    services.deliveries_release_expired_claims()
    due = Occurrence.objects.filter(
        status=Occurrence.Status.PENDING, expand_after__lte=timezone.now()
    ).values_list("pk", flat=True)
    for occurrence_id in due[:100]:
        expand_occurrence.delay(occurrence_id)
    if services.due_deliveries_exist():
        for _ in range(settings.ENGAGEMENT_DISPATCH_FANOUT):
            dispatch.delay()


@shared_task(
    name="engagement.expand_occurrence",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=25 * 60,
    time_limit=30 * 60,
)
def expand_occurrence(occurrence_id: int) -> None:
    result = services.occurrence_expand(occurrence_id=occurrence_id)
    if result.deliveries:
        dispatch.delay()


@shared_task(
    name="engagement.dispatch",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=120,
    time_limit=150,
)
def dispatch() -> None:
    stats = services.deliveries_dispatch()
    if stats.claimed:
        logger.info(
            "dispatched: %s claimed, %s sent, %s delivered, %s retried, %s failed, %s cancelled",
            stats.claimed,
            stats.sent,
            stats.delivered,
            stats.retried,
            stats.failed,
            stats.cancelled,
        )
