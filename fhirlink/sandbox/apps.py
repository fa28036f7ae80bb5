from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """A faithful Cerner (Oracle Health) emulator served as its own origin. Dev/demo/test only."""

    name = "fhirlink.sandbox"
    label = "sandbox"
    verbose_name = "Cerner sandbox"
