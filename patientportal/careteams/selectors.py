"""Who may see which patient in the admin (row-level scoping of care-team staff)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from patientportal.accesslog.logged import AdminPatientScope
from patientportal.accounts import roles
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.selectors import patients_with_consent

from .models import PURPOSE_EMERGENCY, PURPOSE_TREATMENT, BreakGlassGrant, CareTeamAssignment


def user_is_care_team_scoped(*, user: Any) -> bool:
    """Every user in the Care team role, in a care team, or allowed to view patients at all
    (`accounts.view_patient`), except superusers: a staff user who may see patients sees
    only their teams' patients."""
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return False
    cached = getattr(user, "_careteams_scoped", None)
    if cached is None:
        cached = (
            user.groups.filter(name=roles.CARE_TEAM).exists()
            or user.care_teams.exists()
            or user.has_perm("accounts.view_patient")
        )
        user._careteams_scoped = cached
    return bool(cached)


def assigned_patient_ids(*, user: Any) -> QuerySet[Any]:
    """Subquery: patients assigned to the user's teams who hold `care_team_access` now."""
    return (
        CareTeamAssignment.objects.filter(team__members=user)
        .filter(patient_id__in=patients_with_consent(purpose=Purpose.CARE_TEAM_ACCESS))
        .values("patient_id")
    )


def admin_patient_scope(*, user: Any) -> AdminPatientScope | None:
    """settings.ADMIN_PATIENT_SCOPE: None (not scoped) or the patients a care-team user sees."""
    if not user_is_care_team_scoped(user=user):
        return None
    return AdminPatientScope(patient_ids=assigned_patient_ids(user=user), purpose=PURPOSE_TREATMENT)


def break_glass_active(*, user: Any, patient_id: Any) -> BreakGlassGrant | None:
    return (
        BreakGlassGrant.objects.filter(
            user=user, patient_id=patient_id, expires_at__gt=timezone.now()
        )
        .order_by("-expires_at")
        .first()
    )


def chart_purpose_for(*, user: Any, patient_id: Any) -> str | None:
    """Why this user may open this patient's chart ("treatment", "emergency"), or None.

    The chart needs the `care_team_access` consent in every case (break-glass overrides the
    assignment, not the patient's consent)."""
    try:
        pid = uuid.UUID(str(patient_id))
    except ValueError:
        return None
    if not getattr(user, "is_authenticated", False) or not user.is_staff:
        return None
    if not user.has_perm("accounts.view_patient"):
        return None
    consenting = Patient.objects.filter(
        pk=pid, pk__in=patients_with_consent(purpose=Purpose.CARE_TEAM_ACCESS)
    )
    if not consenting.exists():
        return None
    if not user_is_care_team_scoped(user=user):
        return PURPOSE_TREATMENT
    if CareTeamAssignment.objects.filter(team__members=user, patient_id=pid).exists():
        return PURPOSE_TREATMENT
    if break_glass_active(user=user, patient_id=pid) is not None:
        return PURPOSE_EMERGENCY
    return None
