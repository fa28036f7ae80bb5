"""Per-customer enablement: the operator's hold on a health system (nothing is deleted)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from fhirlink.models import HealthSystem

logger = logging.getLogger(__name__)


def health_system_hold_set(*, health_system: HealthSystem, hold: bool, reason: str = "") -> bool:
    """Hold (or release) a health system. While held, patients see it as not available yet and
    cannot start a connection (`health_system_not_available_yet`); its registration, existing
    connections and synced data are kept. Returns whether anything changed."""
    with transaction.atomic():
        locked = HealthSystem.objects.select_for_update().get(pk=health_system.pk)
        if locked.on_hold == hold:
            return False
        locked.on_hold = hold
        locked.held_at = timezone.now() if hold else None
        if hold and reason:
            locked.hold_reason = reason[:200]
        elif not hold:
            locked.hold_reason = ""
        locked.save(update_fields=["on_hold", "held_at", "hold_reason", "updated_at"])
    health_system.on_hold, health_system.held_at = locked.on_hold, locked.held_at
    health_system.hold_reason = locked.hold_reason
    logger.info("Health system %s %s", health_system.pk, "held" if hold else "released")
    return True
