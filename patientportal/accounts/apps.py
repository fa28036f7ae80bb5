from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Patients and staff users, sign-in pages, and the mobile app's OAuth validator."""

    name = "patientportal.accounts"
    label = "accounts"
    verbose_name = "Accounts"
