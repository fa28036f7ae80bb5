"""The patient list's bulk action: assign the selected patients to a care team."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import CareTeam
from .services import care_team_assign


class PatientActionForm(ActionForm):
    care_team = forms.ModelChoiceField(
        queryset=CareTeam.objects.all(), required=False, label="Care team"
    )


def has_assign_permission(request: HttpRequest) -> bool:
    return bool(request.user.has_perm("careteams.add_careteamassignment"))


@admin.action(
    description="Assign the selected patients to the chosen care team", permissions=["assign"]
)
def assign_to_care_team(model_admin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    team_id = request.POST.get("care_team")
    team = CareTeam.objects.filter(pk=team_id).first() if team_id and team_id.isdigit() else None
    if team is None:
        model_admin.message_user(request, "Choose a care team first.", messages.ERROR)
        return
    ids = list(queryset.values_list("pk", flat=True))
    added, _ = care_team_assign(team=team, patient_ids=ids, actor=request.user)
    model_admin.message_user(
        request,
        f"{added} patient(s) assigned to {team.name} ({len(ids) - added} already were).",
        messages.SUCCESS,
    )
