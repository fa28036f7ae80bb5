"""Care-team writes: assignments (single and bulk) and break-glass grants."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from patientportal.accesslog.models import AccessAction, ActorKind, Outcome
from patientportal.accesslog.services import access_log_record
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.selectors import patients_with_consent
from patientportal.core.errors import NotFound, ValidationFailed

from .models import PURPOSE_EMERGENCY, BreakGlassGrant, CareTeam, CareTeamAssignment


def parse_patient_ids(text: str) -> tuple[list[uuid.UUID], list[str]]:
    """Patient ids from free text (commas, whitespace, CSV cells): (valid, invalid)."""
    valid: list[uuid.UUID] = []
    invalid: list[str] = []
    for token in text.replace(",", " ").replace(";", " ").split():
        token = token.strip().strip('"')
        if not token or token.lower() in ("patient_id", "id", "patient"):
            continue
        try:
            valid.append(uuid.UUID(token))
        except ValueError:
            invalid.append(token[:40])
    return valid, invalid


@transaction.atomic
def care_team_assign(
    *, team: CareTeam, patient_ids: Iterable[Any], actor: Any = None
) -> tuple[int, list[str]]:
    """Assign patients to `team` (idempotent). Returns (newly assigned, unknown ids)."""
    wanted = {str(p) for p in patient_ids}
    known = {str(p) for p in Patient.objects.filter(pk__in=wanted).values_list("pk", flat=True)}
    before = CareTeamAssignment.objects.filter(team=team, patient_id__in=known).count()
    CareTeamAssignment.objects.bulk_create(
        [CareTeamAssignment(team=team, patient_id=pid, assigned_by=actor) for pid in sorted(known)],
        ignore_conflicts=True,
    )
    after = CareTeamAssignment.objects.filter(team=team, patient_id__in=known).count()
    return after - before, sorted(wanted - known)


def care_team_unassign(*, team: CareTeam, patient_ids: Iterable[Any]) -> int:
    deleted, _ = CareTeamAssignment.objects.filter(
        team=team, patient_id__in=[str(p) for p in patient_ids]
    ).delete()
    return deleted


def break_glass_grant(
    *, user: Any, patient_id: Any, reason: str, request: Any = None
) -> BreakGlassGrant:
    """Open one patient's chart to `user` for BREAK_GLASS_MINUTES. Logged (purpose "emergency")
    whether or not it succeeds; a patient who does not exist or has not given the
    `care_team_access` consent answers NotFound, like any other unknown patient."""
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise ValidationFailed("Give the reason for emergency access (at least 10 characters).")
    try:
        pid: uuid.UUID | None = uuid.UUID(str(patient_id))
    except ValueError:
        pid = None
    exists = (
        pid is not None
        and Patient.objects.filter(
            pk=pid, pk__in=patients_with_consent(purpose=Purpose.CARE_TEAM_ACCESS)
        ).exists()
    )
    if pid is None or not exists or not user.has_perm("accounts.view_patient"):
        access_log_record(
            actor_kind=ActorKind.STAFF,
            actor_user=user,
            action=AccessAction.READ,
            patient=None,
            purpose=PURPOSE_EMERGENCY,
            outcome=Outcome.NOT_FOUND,
            resource_type="BreakGlassGrant",
            request=request,
        )
        raise NotFound("No such patient.")
    now = timezone.now()
    minutes = settings.CARETEAMS_BREAK_GLASS_MINUTES
    with transaction.atomic():
        grant = BreakGlassGrant.objects.create(
            user=user,
            patient_id=pid,
            reason=reason[:2000],
            granted_at=now,
            expires_at=now + timedelta(minutes=minutes),
        )
        access_log_record(
            actor_kind=ActorKind.STAFF,
            actor_user=user,
            action=AccessAction.READ,
            patient=pid,
            purpose=PURPOSE_EMERGENCY,
            resource_type="BreakGlassGrant",
            resource_ids=[grant.pk],
            query={"break_glass": True, "minutes": minutes},
            request=request,
        )
    return grant
