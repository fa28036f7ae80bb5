from django.apps import AppConfig


class ReviewPackConfig(AppConfig):
    name = "patientportal.reviewpack"
    label = "reviewpack"
    verbose_name = "Security review"
    default_auto_field = "django.db.models.BigAutoField"
