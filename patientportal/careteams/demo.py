"""Demo care teams: careteam@demo.test in "Team A" with the demo patient assigned,
careteam2@demo.test in "Team B" with no patients. Dev and demo only; idempotent."""

from __future__ import annotations

from typing import TextIO

from patientportal.accounts.demo import DEMO_PATIENT_EMAIL
from patientportal.accounts.models import Patient, User

from .models import CareTeam
from .services import care_team_assign

TEAMS = {
    "Team A (demo)": "careteam@demo.test",
    "Team B (demo)": "careteam2@demo.test",
}


def seed(stdout: TextIO) -> None:
    for name, email in TEAMS.items():
        team, _ = CareTeam.objects.get_or_create(
            name=name, defaults={"description": "Demo care team"}
        )
        member = User.objects.filter(email=email).first()
        if member is not None:
            team.members.add(member)
    patient = Patient.objects.filter(user__email=DEMO_PATIENT_EMAIL).first()
    if patient is not None:
        care_team_assign(team=CareTeam.objects.get(name="Team A (demo)"), patient_ids=[patient.pk])
    stdout.write(
        "Care teams: careteam@demo.test (Team A) sees the demo patient; "
        "careteam2@demo.test (Team B) does not.\n"
    )
