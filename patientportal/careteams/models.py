"""Care teams: staff members, assigned patients, and break-glass (emergency) grants.

A care-team staff user sees a patient in the admin only if the patient is assigned to one of
their teams and holds the `care_team_access` consent (`selectors.admin_patient_scope`). A
break-glass grant opens one unassigned patient's chart to one user for a short time; every view
under it is logged with the purpose "emergency".
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from patientportal.accesslog.models import AccessPurpose

# Access-log purposes of staff views (the consent purposes say what the patient allowed; these
# say why the staff user looked).
PURPOSE_TREATMENT = AccessPurpose.TREATMENT.value
PURPOSE_EMERGENCY = AccessPurpose.EMERGENCY.value


class CareTeam(models.Model):
    name = models.CharField(max_length=120, unique=True)
    description = models.CharField(max_length=300, blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        related_name="care_teams",
        blank=True,
        limit_choices_to={"is_staff": True},
        help_text="Staff users of this team (they also need the 'Care team' role).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CareTeamAssignment(models.Model):
    """One patient assigned to one care team."""

    team = models.ForeignKey(CareTeam, on_delete=models.CASCADE, related_name="assignments")
    patient = models.ForeignKey(
        "accounts.Patient", on_delete=models.CASCADE, related_name="care_team_assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "assigned_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "patient"], name="careteam_assignment_unique")
        ]
        indexes = [models.Index(fields=["patient", "team"], name="careteam_assign_patient")]

    def __str__(self) -> str:
        return f"{self.patient} in {self.team_id}"


class BreakGlassGrant(models.Model):
    """Emergency access by one staff user to one patient's chart, until `expires_at`."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="break_glass_grants"
    )
    patient = models.ForeignKey(
        "accounts.Patient", on_delete=models.CASCADE, related_name="break_glass_grants"
    )
    reason = models.TextField()
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["user", "patient", "expires_at"], name="breakglass_active")]
        verbose_name = "break-glass grant"

    def __str__(self) -> str:
        return f"break-glass #{self.pk}"
