"""Engagement's errors (stable codes; messages never hold PHI)."""

from __future__ import annotations

from patientportal.core.errors import Conflict, NotFound, ValidationFailed


class ReminderNotFound(NotFound):
    default_code = "reminder_not_found"
    default_message = "Reminder not found."


class DeviceNotFound(NotFound):
    default_code = "device_not_found"
    default_message = "Device not found."


class InvalidSchedule(ValidationFailed):
    default_code = "invalid_schedule"
    default_message = "The schedule is not valid."


class CampaignNotActive(Conflict):
    default_code = "campaign_not_active"
    default_message = "The campaign is not active."
