from django.apps import AppConfig


class EngagementConfig(AppConfig):
    """Reminders, schedules, cohorts, delivery channels and device registrations."""

    name = "engagement"
    label = "engagement"
    verbose_name = "Engagement"
