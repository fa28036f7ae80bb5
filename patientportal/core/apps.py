from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Project-wide conventions: errors, request ids, logging, health checks, API helpers."""

    name = "patientportal.core"
    label = "core"
    verbose_name = "Core"
