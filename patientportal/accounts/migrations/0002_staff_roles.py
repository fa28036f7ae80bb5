"""Create the staff role groups (care team, engagement, auditor, operator)."""

from django.db import migrations

from patientportal.accounts.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("oauth2_provider", "__latest__"),
        ("otp_totp", "__latest__"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
