from django.apps import AppConfig


class CareteamsConfig(AppConfig):
    name = "patientportal.careteams"
    label = "careteams"
    verbose_name = "Care teams"
    default_auto_field = "django.db.models.BigAutoField"
