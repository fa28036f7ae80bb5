from django.apps import AppConfig


class AccesslogConfig(AppConfig):
    """The append-only, hash-chained record of every access to patient data."""

    name = "patientportal.accesslog"
    label = "accesslog"
    verbose_name = "Access log"
