"""The demo: a recurring reminder to a cohort with the demo patient, received once in the inbox."""

from __future__ import annotations

import io
from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from engagement import demo, scheduling, services
from engagement.models import Campaign, Delivery, Occurrence
from patientportal.accounts import demo as accounts_demo
from patientportal.accounts.models import Patient
from patientportal.consent import demo as consent_demo

pytestmark = pytest.mark.django_db


def seed_all() -> None:
    out = io.StringIO()
    accounts_demo.seed(out)
    consent_demo.seed(out)
    demo.seed(out)


def test_seed_is_idempotent():
    seed_all()
    seed_all()
    assert sorted(Campaign.objects.values_list("name", "status", "rrule")) == [
        (demo.CHECK_IN, "scheduled", "FREQ=DAILY"),
        (demo.WELCOME, "scheduled", ""),
    ]


def test_the_demo_patient_gets_the_daily_check_in_once_at_nine_local():
    seed_all()
    patient = Patient.objects.get(user__email=accounts_demo.DEMO_PATIENT_EMAIL)
    check_in = Campaign.objects.get(name=demo.CHECK_IN)
    assert (check_in.send_time, check_in.audience) == (time(9), "all_patients")
    tomorrow = timezone.now().date() + timedelta(days=1)
    nine = scheduling.to_instant(datetime.combine(tomorrow, time(9)), patient.time_zone)
    for _ in range(2):  # two beat runs at tomorrow 09:00 local
        services.occurrences_plan(now=nine)
        for pk in Occurrence.objects.filter(status="pending").values_list("pk", flat=True):
            services.occurrence_expand(occurrence_id=pk)
    row = Delivery.objects.get(
        campaign=check_in, patient=patient, channel="inbox", occurrence__local_start__date=tomorrow
    )
    assert row.due_at == nine
    assert scheduling.to_local(row.due_at, patient.time_zone).time() == time(9)
    Delivery.objects.filter(pk=row.pk).update(due_at=timezone.now())  # let the clock arrive
    services.deliveries_dispatch(max_seconds=30)
    services.deliveries_dispatch(max_seconds=30)
    row.refresh_from_db()
    assert row.status == "delivered"
    assert (
        Delivery.objects.filter(
            campaign=check_in, patient=patient, occurrence=row.occurrence
        ).count()
        == 1
    )
