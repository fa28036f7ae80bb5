"""Staff roles: one Django group per role, with least-privilege model permissions.

Each role lists the permissions it needs and nothing more. The groups are created by a data
migration; every app that adds models whose permissions a role needs adds a migration calling
`sync_roles`, so the groups always match this table. Permissions that do not exist (yet) are
skipped, so the table can name models of apps that land later.

No role holds a permission that changes who someone is or what they may do
(`SUPERUSER_ONLY_PERMISSIONS`): passwords, second factors, groups, permissions and accounts are
managed by superusers only. The admin enforces the same whatever a group holds
(patientportal/accounts/admin.py), so a permission granted by mistake opens nothing.
"""

from __future__ import annotations

from typing import Any

CARE_TEAM = "Care team"
ENGAGEMENT = "Engagement"
AUDITOR = "Auditor"
OPERATOR = "Operator"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Read-only charts of assigned patients (row-level filtering is the admin's job).
    CARE_TEAM: [
        "accounts.view_patient",
        "fhirlink.view_connection",
        "fhirlink.view_syncedresource",
        "fhirlink.view_syncrun",
    ],
    # Reminders and campaigns; cohort sizes, not clinical data.
    ENGAGEMENT: [
        "engagement.add_campaign",
        "engagement.change_campaign",
        "engagement.view_campaign",
        "engagement.view_delivery",
        "engagement.add_messagetemplate",
        "engagement.change_messagetemplate",
        "engagement.view_messagetemplate",
    ],
    # The access log and consent history, read-only.
    AUDITOR: [
        "accounts.view_accountdeletionrequest",
        "accesslog.view_accessevent",
        "accesslog.view_accessloganchor",
        "consent.view_consentdocument",
        "consent.view_consentrecord",
        "consent.view_patientconsent",
        "careteams.view_breakglassgrant",
        "careteams.view_careteamassignment",
        "careteams.view_careteam",
        "reviewpack.view_reviewpack",
    ],
    # Health-system registry, consent documents, care teams, and staff accounts' names and
    # active flag (never a password, e-mail address, second factor, group or permission).
    OPERATOR: [
        "fhirlink.add_healthsystem",
        "fhirlink.change_healthsystem",
        "fhirlink.view_healthsystem",
        "reviewpack.view_reviewpack",
        "consent.add_consentdocument",
        "consent.change_consentdocument",
        "consent.view_consentdocument",
        "accounts.view_user",
        "accounts.change_user",
        "accounts.view_accountdeletionrequest",
        "auth.view_group",
        "oauth2_provider.add_application",
        "oauth2_provider.change_application",
        "oauth2_provider.view_application",
        "careteams.add_careteam",
        "careteams.change_careteam",
        "careteams.view_careteam",
        "careteams.add_careteamassignment",
        "careteams.view_careteamassignment",
        "careteams.delete_careteamassignment",
    ],
}


# Permissions no role may hold (tests/security/test_admin_privilege.py checks the table and the
# groups): with any of them, a role could sign in as someone else or raise its own privileges.
SUPERUSER_ONLY_PERMISSIONS: frozenset[str] = frozenset(
    {
        "accounts.add_user",
        "accounts.delete_user",
        "auth.add_group",
        "auth.change_group",
        "auth.delete_group",
        "auth.add_permission",
        "auth.change_permission",
        "auth.delete_permission",
        *(
            f"{app}.{action}_{model}"
            for app, model in (
                ("otp_totp", "totpdevice"),
                ("otp_static", "staticdevice"),
                ("otp_static", "statictoken"),
            )
            for action in ("add", "change", "delete", "view")
        ),
    }
)


def sync_roles(apps: Any, schema_editor: Any) -> None:
    """Data-migration step: create the role groups and set exactly their permissions."""
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after `migrate`; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        wanted = []
        for name in names:
            app_label, codename = name.split(".", 1)
            wanted.extend(
                permission_model.objects.filter(
                    content_type__app_label=app_label, codename=codename
                )
            )
        group.permissions.set(wanted)
