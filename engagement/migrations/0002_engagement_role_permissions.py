"""Give the Engagement role its permissions on this app's models (see accounts/roles.py)."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("engagement", "0001_initial"),
        ("accounts", "0002_staff_roles"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
