"""Demo reminders: a daily 09:00-local check-in to a cohort that contains the demo patient, and a
one-off welcome reminder to the demo patient a few minutes after the first seeding. Idempotent."""

from __future__ import annotations

from datetime import time, timedelta
from typing import TextIO

from django.utils import timezone

from engagement import scheduling, services
from engagement.models import Audience, Campaign, MessageTemplate
from patientportal.accounts.models import Patient

CHECK_IN = "Daily check-in (demo)"
WELCOME = "Welcome to reminders (demo)"


def seed(stdout: TextIO) -> None:
    from patientportal.accounts.demo import DEMO_PATIENT_EMAIL

    check_in_template, _ = MessageTemplate.objects.get_or_create(
        name="Daily check-in",
        defaults={
            "title": "Good morning, {first_name}",
            "body": "Take a minute today to check in with your care plan in {app_name}.",
        },
    )
    welcome_template, _ = MessageTemplate.objects.get_or_create(
        name="Welcome",
        defaults={
            "title": "Welcome, {first_name}",
            "body": "Reminders from your care team will appear here. You can choose quiet "
            "hours and channels in the app's settings.",
        },
    )
    today = timezone.now().date()
    check_in, _ = Campaign.objects.get_or_create(
        name=CHECK_IN,
        defaults={
            "template": check_in_template,
            "audience": Audience.ALL_PATIENTS,
            "starts_on": today,
            "send_time": time(9, 0),
            "rrule": "FREQ=DAILY",
            "ends_on": today + timedelta(days=90),
            "send_push": True,
            "send_email": False,
            "send_inbox": True,
        },
    )
    if check_in.status == Campaign.Status.DRAFT:
        services.campaign_schedule(campaign=check_in)
    patient = Patient.objects.filter(user__email=DEMO_PATIENT_EMAIL).first()
    if patient is not None and not Campaign.objects.filter(name=WELCOME).exists():
        local = scheduling.to_local(timezone.now() + timedelta(minutes=2), patient.time_zone)
        welcome = Campaign.objects.create(
            name=WELCOME,
            template=welcome_template,
            audience=Audience.PATIENT,
            patient=patient,
            starts_on=local.date(),
            send_time=local.time().replace(second=0, microsecond=0),
            send_push=True,
            send_inbox=True,
        )
        services.campaign_schedule(campaign=welcome)
    stdout.write(
        f"Seeded engagement: '{CHECK_IN}' (daily 09:00 local, all patients) and a welcome "
        "reminder for the demo patient.\n"
    )
