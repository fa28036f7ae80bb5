"""Operators manage care teams (members, assigned patients); auditors see break-glass grants.

Patients appear as opaque short ids ("patient 1a2b3c4d"); assigning in bulk takes patient ids
(pasted here, `manage.py careteam_assign`, or the patient list's action)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from patientportal.accesslog.logged import AccessLoggedAdminMixin, ReadOnlyAdminMixin

from .models import BreakGlassGrant, CareTeam, CareTeamAssignment
from .services import care_team_assign, parse_patient_ids


class CareTeamForm(forms.ModelForm[CareTeam]):
    add_patient_ids = forms.CharField(
        required=False,
        label="Assign patients (bulk)",
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Patient ids, separated by commas, spaces or new lines.",
    )

    class Meta:
        model = CareTeam
        fields = ["name", "description", "members"]

    def clean_add_patient_ids(self) -> str:
        text: str = self.cleaned_data.get("add_patient_ids") or ""
        _, invalid = parse_patient_ids(text)
        if invalid:
            raise forms.ValidationError(f"Not patient ids: {', '.join(invalid[:5])}")
        return text


class CareTeamAssignmentInline(admin.TabularInline[CareTeamAssignment, CareTeam]):
    model = CareTeamAssignment
    extra = 0
    raw_id_fields = ["patient"]
    fields = ["patient", "assigned_by", "assigned_at"]
    readonly_fields = ["assigned_by", "assigned_at"]


@admin.register(CareTeam)
class CareTeamAdmin(admin.ModelAdmin[CareTeam]):
    serves_patient_data = False
    patient_data_exempt_reason = (
        "Team names and staff members; the assigned patients appear only as opaque short ids "
        "(the inline), never a name, contact detail or record."
    )
    form = CareTeamForm
    list_display = ["name", "description", "member_count", "patient_count"]
    search_fields = ["name"]
    filter_horizontal = ["members"]
    inlines = [CareTeamAssignmentInline]

    @admin.display(description="members")
    def member_count(self, obj: CareTeam) -> int:
        return obj.members.count()

    @admin.display(description="patients")
    def patient_count(self, obj: CareTeam) -> int:
        return obj.assignments.count()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        ids, _ = parse_patient_ids(form.cleaned_data.get("add_patient_ids") or "")
        if ids:
            added, unknown = care_team_assign(
                team=form.instance, patient_ids=ids, actor=request.user
            )
            self.message_user(request, f"{added} patient(s) assigned.", messages.SUCCESS)
            if unknown:
                self.message_user(
                    request, f"{len(unknown)} id(s) matched no patient.", messages.WARNING
                )


@admin.register(CareTeamAssignment)
class CareTeamAssignmentAdmin(AccessLoggedAdminMixin, admin.ModelAdmin[CareTeamAssignment]):
    access_log_patient_field = "patient"
    access_log_resource_type = "CareTeamAssignment"
    list_display = ["id", "team", "patient", "assigned_by", "assigned_at"]
    list_filter = ["team"]
    list_select_related = ["team", "patient"]
    raw_id_fields = ["patient"]
    readonly_fields = ["assigned_by", "assigned_at"]

    def save_model(
        self, request: HttpRequest, obj: CareTeamAssignment, form: Any, change: bool
    ) -> None:
        if not change:
            obj.assigned_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


@admin.register(BreakGlassGrant)
class BreakGlassGrantAdmin(
    AccessLoggedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin[BreakGlassGrant]
):
    """Auditors' list of emergency accesses (created only from the chart's break-glass form)."""

    access_log_patient_field = "patient"
    access_log_resource_type = "BreakGlassGrant"
    list_display = ["id", "staff", "patient", "granted_at", "expires_at", "active"]
    list_filter = ["granted_at"]
    list_select_related = ["user", "patient"]
    fields = readonly_fields = ("staff", "patient", "reason", "granted_at", "expires_at")

    @admin.display(description="staff user")
    def staff(self, obj: BreakGlassGrant) -> str:
        return f"{obj.user.get_full_name()} <{obj.user.email}>".strip()

    @admin.display(boolean=True)
    def active(self, obj: BreakGlassGrant) -> bool:
        from django.utils import timezone

        return obj.expires_at > timezone.now()
