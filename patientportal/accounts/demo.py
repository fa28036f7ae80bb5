"""Demo users: one patient and one staff user per role. Dev and demo only."""

from __future__ import annotations

from typing import TextIO

from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone
from oauth2_provider.models import Application

from . import roles
from .models import Patient, User

DEMO_PATIENT_EMAIL = "patient@demo.test"
DEMO_PATIENT_PASSWORD = "demo-patient-2026"
DEMO_STAFF_PASSWORD = "demo-staff-2026"
DEMO_STAFF = {
    "admin@demo.test": None,  # superuser
    "careteam@demo.test": roles.CARE_TEAM,
    "careteam2@demo.test": roles.CARE_TEAM,  # a member of another care team
    "engagement@demo.test": roles.ENGAGEMENT,
    "auditor@demo.test": roles.AUDITOR,
    "operator@demo.test": roles.OPERATOR,
}
# The /demo/ reference client, registered like the mobile app: public client, PKCE, exact URIs.
DEMO_CLIENT_ID = "demo-reference-client"
MOBILE_CLIENT_ID = "patientportal-mobile"


def demo_client_redirect_uri() -> str:
    return f"{settings.PUBLIC_BASE_URL}/demo/"


def seed(stdout: TextIO) -> None:
    patient_user, created = User.objects.get_or_create(
        email=DEMO_PATIENT_EMAIL, defaults={"first_name": "Nancy", "last_name": "Smart"}
    )
    if created:
        patient_user.set_password(DEMO_PATIENT_PASSWORD)
        patient_user.save(update_fields=["password"])
    if patient_user.email_verified_at is None:
        # Only verified addresses may authorize the app (accounts.views.PatientAuthorizationView).
        patient_user.email_verified_at = timezone.now()
        patient_user.save(update_fields=["email_verified_at"])
    Patient.objects.get_or_create(user=patient_user, defaults={"time_zone": "America/Chicago"})

    for email, role in DEMO_STAFF.items():
        user, created = User.objects.get_or_create(
            email=email,
            defaults={"is_staff": True, "is_superuser": role is None},
        )
        if created:
            user.set_password(DEMO_STAFF_PASSWORD)
            user.save(update_fields=["password"])
        if role:
            user.groups.add(Group.objects.get(name=role))

    Application.objects.update_or_create(
        client_id=DEMO_CLIENT_ID,
        defaults={
            "name": "Demo reference client (/demo/)",
            "client_type": Application.CLIENT_PUBLIC,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": demo_client_redirect_uri(),
            "skip_authorization": False,
            "algorithm": "",
        },
    )
    Application.objects.update_or_create(
        client_id=MOBILE_CLIENT_ID,
        defaults={
            "name": "Patient Portal mobile app",
            "client_type": Application.CLIENT_PUBLIC,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": "org.patientportal.app:/oauth/callback",
            "skip_authorization": False,
            "algorithm": "",
        },
    )
    stdout.write("Seeded demo users and OAuth client registrations.\n")
