from django.apps import AppConfig


class ConsentConfig(AppConfig):
    """Versioned consent documents per purpose and the patients' grants and revocations."""

    name = "patientportal.consent"
    label = "consent"
    verbose_name = "Consent"
