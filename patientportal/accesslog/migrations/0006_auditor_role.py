"""Give the Auditor role the anchors and the patients' current consents (roles.py)."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("accesslog", "0005_anchor_hash"),
        ("consent", "0002_roles"),
        ("accounts", "0004_roles_deletion_requests"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
