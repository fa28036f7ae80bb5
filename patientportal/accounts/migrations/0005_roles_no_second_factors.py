"""Operators no longer enrol, see or delete second factors (roles.py, issue #19).

Runs after the sync models exist (fhirlink 0003), so the Care team group also gets the
view permissions on sync runs and synced resources the table names: no earlier role sync ran
after that migration, so fresh databases had the group without them."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_roles_deletion_requests"),
        ("fhirlink", "0003_sync_store"),
        ("otp_static", "__latest__"),
        ("otp_totp", "__latest__"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
