"""Users, patients, deletion requests, groups and second factors in the admin.

Least privilege (issue #19; OWASP ASVS 5.0 V8, HIPAA 164.312(a)(1) and (d)): whatever
permissions a role or a user is given, only a superuser

- sets another user's password (`<id>/password/`; everyone else changes their own password at
  `admin:password_change`, which asks for the current one), or changes a user's e-mail address
  (the address password resets go to);
- changes privilege fields (superuser, staff, groups, permissions), adds or deletes users, and
  changes or deletes a superuser;
- adds, changes or deletes groups (the roles' permission sets);
- sees, enrols, replaces or deletes second factors (TOTP and static devices);
- lets an OAuth application skip the patient's approval page (`skip_authorization`).

No page shows a secret: the password only through Django's masked widget (and not at all to
non-superusers), no TOTP seed anywhere (`OTP_ADMIN_HIDE_SENSITIVE_DATA`: django-otp's key and QR
views answer 403 to everyone; a hardware token's seed is typed into a write-only field).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Field
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django_otp.plugins.otp_static.admin import StaticDeviceAdmin as OtpStaticDeviceAdmin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin as OtpTOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.admin import ApplicationAdmin as DotApplicationAdmin
from oauth2_provider.models import get_application_model

from patientportal.accesslog.logged import AccessLoggedAdminMixin
from patientportal.careteams import admin_actions as careteam_actions

from .models import AccountDeletionRequest, Patient, User
from .services import oauth_tokens_revoke_for_user

# Fields only a superuser may change: privileges, and the address password resets go to.
_SUPERUSER_ONLY_FIELDS = ("email", "is_staff", "is_superuser", "groups", "user_permissions")


def _is_superuser(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_superuser)


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

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or _is_superuser(request):
            return fieldsets
        # No "set password" link: only a superuser sets another user's password.
        return tuple(
            (name, {**options, "fields": tuple(f for f in options["fields"] if f != "password")})
            for name, options in fieldsets
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if not _is_superuser(request):
            fields += tuple(f for f in _SUPERUSER_ONLY_FIELDS if f not in fields)
        return fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A new account comes with a password chosen by whoever adds it.
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not _is_superuser(request):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request) and super().has_delete_permission(request, obj)

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        """Setting someone's password is signing in as them: superusers only. Others change
        their own password in the normal flow, which asks for the current one."""
        if not _is_superuser(request):
            if str(request.user.pk) == str(id):
                return redirect("admin:password_change")
            raise PermissionDenied
        target = self.get_object(request, id)
        before = target.password if target is not None else None
        response = super().user_change_password(request, id, form_url)
        if target is not None:
            target.refresh_from_db(fields=["password"])
            if target.password != before:
                # As after a password reset: the account's app sessions end with the password.
                oauth_tokens_revoke_for_user(user=target)
        return response

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


# --- Groups (the roles) ---------------------------------------------------------------------------


class GroupAdmin(DjangoGroupAdmin):
    """Roles' permission sets: visible to whoever may view groups, changed by superusers only
    (a group that could be edited by its own members would let them grant themselves anything)."""

    serves_patient_data = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)


# --- Second factors -------------------------------------------------------------------------------


class SuperuserOnlyAdminMixin:
    """Every page of this admin is for active superusers only, whatever permissions a role or a
    user holds: who may enrol, replace or remove a second factor may sign in as its owner."""

    serves_patient_data = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)


class TOTPDeviceAdmin(SuperuserOnlyAdminMixin, OtpTOTPDeviceAdmin):
    """django-otp's admin, superusers only. With OTP_ADMIN_HIDE_SENSITIVE_DATA the change page,
    the list and the key/QR views never show the seed; on the add page the key is write-only
    (a hardware token's seed is typed in; nothing is pre-filled, nothing echoed back)."""

    def formfield_for_dbfield(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name == "key":
            field.widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"})
            field.initial = None
            field.show_hidden_initial = False
            field.help_text = (
                "The device's secret in hex (e.g. from a hardware token's seed file). "
                "Write-only: never shown, here or anywhere else."
            )
        return field


class StaticDeviceAdmin(SuperuserOnlyAdminMixin, OtpStaticDeviceAdmin):
    """django-otp's admin of backup codes, superusers only; the codes of a saved device are
    never shown (OTP_ADMIN_HIDE_SENSITIVE_DATA hides the inline)."""


# --- OAuth applications ---------------------------------------------------------------------------


class ApplicationAdmin(DotApplicationAdmin):
    """Operators register the apps; only a superuser lets one skip the patient's approval page
    (an app that skips it is handed a patient's code by any link the patient follows)."""

    serves_patient_data = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if not _is_superuser(request):
            fields += ("skip_authorization",)
        return fields


for _model, _model_admin in (
    (get_application_model(), ApplicationAdmin),
    (Group, GroupAdmin),
    (TOTPDevice, TOTPDeviceAdmin),
    (StaticDevice, StaticDeviceAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
