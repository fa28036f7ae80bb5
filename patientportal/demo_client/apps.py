from django.apps import AppConfig


class DemoClientConfig(AppConfig):
    name = "patientportal.demo_client"
    label = "demo_client"
    verbose_name = "Demo reference client"
