"""Engagement writes. Import from here; the modules split campaigns, delivery, events and the
patient's own actions."""

from engagement.services.campaigns import (
    campaign_audience_size,
    campaign_cancel,
    campaign_reachable_size,
    campaign_schedule,
    campaign_validate,
    occurrences_plan,
    template_validate,
)
from engagement.services.delivery import (
    DispatchStats,
    deliveries_cancel_for_patient,
    deliveries_claim,
    deliveries_dispatch,
    deliveries_release_expired_claims,
    deliveries_send_claimed,
    due_deliveries_exist,
)
from engagement.services.events import reconnect_reminder_send, system_event_occurrence
from engagement.services.expansion import ExpansionResult, occurrence_expand
from engagement.services.patients import (
    device_register,
    device_remove,
    patient_reminders_stop,
    preferences_get,
    preferences_update,
    reminder_acknowledge,
    reminder_open,
    reminder_snooze,
)

__all__ = [
    "DispatchStats",
    "ExpansionResult",
    "campaign_audience_size",
    "campaign_cancel",
    "campaign_reachable_size",
    "campaign_schedule",
    "campaign_validate",
    "deliveries_cancel_for_patient",
    "deliveries_claim",
    "deliveries_dispatch",
    "deliveries_release_expired_claims",
    "deliveries_send_claimed",
    "device_register",
    "device_remove",
    "due_deliveries_exist",
    "occurrence_expand",
    "occurrences_plan",
    "patient_reminders_stop",
    "preferences_get",
    "preferences_update",
    "reconnect_reminder_send",
    "reminder_acknowledge",
    "reminder_open",
    "reminder_snooze",
    "system_event_occurrence",
    "template_validate",
]
