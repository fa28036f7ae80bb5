"""Who can see and change what: staff roles, admin registrations, the patient API's scopes.

Produced from the running system: each role's permissions are the role group's permissions in
the database (the roles table in `patientportal.accounts.roles` is what the migrations give
them; a difference is called out), the admin's registrations say where each model is shown
and whether that page serves patient data (and so is access-logged and scoped to the care
team), and each API scope lists the operations (`required_scopes` on the views) it opens.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import URLPattern, URLResolver, get_resolver

from patientportal.accounts.roles import ROLE_PERMISSIONS

VERBS = ("view", "add", "change", "delete")


def _admin_models() -> dict[str, dict[str, Any]]:
    from patientportal.accesslog.logged import AccessLoggedAdminMixin

    registered: dict[str, dict[str, Any]] = {}
    for model, model_admin in admin.site._registry.items():
        logged = isinstance(model_admin, AccessLoggedAdminMixin)
        registered[model._meta.label_lower] = {
            "model": model._meta.label,
            "admin": f"{type(model_admin).__module__}.{type(model_admin).__qualname__}",
            "serves_patient_data": logged,
            "patient_field": getattr(model_admin, "access_log_patient_field", "") if logged else "",
        }
    return registered


def _split(codename: str) -> tuple[str, str]:
    verb, _, model = codename.partition("_")
    return (verb, model) if verb in VERBS else ("other", codename)


def staff_roles() -> list[dict[str, Any]]:
    registered = _admin_models()
    roles: list[dict[str, Any]] = []
    for role, table in ROLE_PERMISSIONS.items():
        group = Group.objects.filter(name=role).first()
        actual: set[str] = set()
        if group is not None:
            actual = {
                f"{app}.{codename}"
                for app, codename in group.permissions.values_list(
                    "content_type__app_label", "codename"
                )
            }
        by_model: dict[str, set[str]] = defaultdict(set)
        for permission in sorted(actual):
            app_label, codename = permission.split(".", 1)
            verb, model = _split(codename)
            by_model[f"{app_label}.{model}"].add(verb)
        models: list[dict[str, Any]] = []
        for label, verbs in sorted(by_model.items()):
            shown = registered.get(label)
            models.append(
                {
                    "model": shown["model"] if shown else label,
                    "can": [v for v in (*VERBS, "other") if v in verbs],
                    "in_admin": shown is not None,
                    "serves_patient_data": bool(shown and shown["serves_patient_data"]),
                }
            )
        roles.append(
            {
                "role": role,
                "group_exists": group is not None,
                "permissions": sorted(actual),
                "models": models,
                "reads": [m["model"] for m in models if "view" in m["can"]],
                "changes": [
                    m["model"] for m in models if {"add", "change", "delete"} & set(m["can"])
                ],
                "differs_from_roles_table": {
                    "added_in_database": sorted(actual - set(table)),
                    "missing_from_database": sorted(set(table) - actual),
                },
            }
        )
    return roles


def _walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found.extend(_walk(entry.url_patterns, prefix + str(entry.pattern)))
        else:
            view_class = getattr(entry.callback, "view_class", None) or getattr(
                entry.callback, "cls", None
            )
            if view_class is not None:
                found.append((prefix + str(entry.pattern), view_class))
    return found


def patient_scopes() -> list[dict[str, Any]]:
    operations: dict[str, list[str]] = defaultdict(list)
    for route, view_class in _walk(get_resolver().url_patterns):
        if not route.startswith("api/v1/"):
            continue
        scopes = getattr(view_class, "required_scopes", None) or []
        methods = [
            m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)
        ]
        for scope in scopes:
            operations[scope].append(f"{' '.join(methods)} /{route}")
    return [
        {
            "scope": scope,
            "description": description,
            "operations": sorted(set(operations.get(scope, []))),
        }
        for scope, description in settings.API_SCOPES.items()
    ]


def roles_and_permissions() -> dict[str, Any]:
    registered = _admin_models()
    return {
        "staff_roles": staff_roles(),
        "superusers": (
            "Superusers hold every permission; never scoped to a care team. Staff sign-in needs "
            f"TOTP when STAFF_OTP_REQUIRED (now {settings.STAFF_OTP_REQUIRED})."
        ),
        "admin_registrations": sorted(registered.values(), key=lambda row: row["model"]),
        "patient_scopes": patient_scopes(),
    }
