"""Operators and auditors see account deletion requests (roles.py)."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_account_deletion_request"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
