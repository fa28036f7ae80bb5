from django.apps import AppConfig


class FhirlinkConfig(AppConfig):
    """The EHR side: health systems, SMART launch, token vault, FHIR client, sync, records."""

    name = "fhirlink"
    label = "fhirlink"
    verbose_name = "EHR link"
    default_auto_field = "django.db.models.BigAutoField"
