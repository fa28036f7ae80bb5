"""Give the Auditor (and Operator) groups the access-log and consent permissions (roles.py)."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("accesslog", "0002_append_only_trigger"),
        ("consent", "0001_initial"),
        ("accounts", "0002_staff_roles"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
