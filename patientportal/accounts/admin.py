"""Users, patients and deletion requests in the admin. No password hashes, tokens or secrets.

The password is shown only through Django's standard read-only widget (algorithm and a masked
hash). Privilege fields (superuser, staff, groups, permissions) can be changed only by a
superuser, and only a superuser can change a superuser: an operator with `change_user` cannot
raise anyone's privileges, including their own.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from patientportal.accesslog.logged import AccessLoggedAdminMixin
from patientportal.careteams import admin_actions as careteam_actions

from .models import AccountDeletionRequest, Patient, User
from .services import oauth_tokens_revoke_for_user

_PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


@admin.register(User)
class UserAdmin(AccessLoggedAdminMixin, DjangoUserAdmin):
    # Patients' e-mail addresses and names: list and change pages are access-logged.
    access_log_patient_field = "patient"
    access_log_resource_type = "Account"
    ordering = ("id",)
    list_display = ("id", "email", "is_staff", "is_active", "email_verified_at", "date_joined")
    list_filter = ("is_staff", "is_active", "groups")
    search_fields = ("email",)
    readonly_fields = ("last_login", "date_joined", "email_verified_at", "deletion_requested_at")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Name", {"fields": ("first_name", "last_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        (
            "Dates",
            {"fields": ("last_login", "date_joined", "email_verified_at", "deletion_requested_at")},
        ),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += tuple(f for f in _PRIVILEGE_FIELDS if f not in fields)
        return fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            # A deactivated account keeps no app session (refresh tokens would outlive it).
            oauth_tokens_revoke_for_user(user=obj)


@admin.register(Patient)
class PatientAdmin(AccessLoggedAdminMixin, admin.ModelAdmin[Patient]):
    """Care-team staff see only their teams' consenting patients (AccessLoggedAdminMixin's
    scope); search matches within that scope only."""

    access_log_patient_field = "pk"
    list_display = ("id", "name", "time_zone", "created_at", "chart")
    list_select_related = ("user",)
    search_fields = ("user__first_name", "user__last_name", "=id")
    readonly_fields = ("id", "user", "name", "created_at", "chart")
    fields = ("id", "user", "name", "time_zone", "created_at", "chart")
    action_form = careteam_actions.PatientActionForm
    actions = [careteam_actions.assign_to_care_team]

    @admin.display(description="name")
    def name(self, obj: Patient) -> str:
        return obj.user.get_full_name() if obj.user_id else ""

    @admin.display(description="chart")
    def chart(self, obj: Patient) -> str:
        try:
            url = reverse("admin:fhirlink_patient_chart", args=[obj.pk])
        except NoReverseMatch:
            return ""
        return format_html('<a href="{}">Open chart</a>', url)

    def has_assign_permission(self, request: HttpRequest) -> bool:
        return careteam_actions.has_assign_permission(request)


@admin.register(AccountDeletionRequest)
class AccountDeletionRequestAdmin(AccessLoggedAdminMixin, admin.ModelAdmin[AccountDeletionRequest]):
    """Operators' work list. Created only by the patient; completed by the erasure job."""

    access_log_patient_field = "patient_id"

    list_display = ("id", "patient_id", "status", "requested_at", "completed_at")
    list_filter = ("status",)
    readonly_fields = (
        "id",
        "user",
        "patient_id",
        "status",
        "requested_at",
        "sessions_revoked",
        "completed_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
