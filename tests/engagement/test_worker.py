"""A real Celery worker, killed mid-dispatch and restarted: every reminder arrives exactly once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from engagement import services
from engagement.models import Delivery, Occurrence
from engagement.tasks import dispatch, tick
from patientportal.accounts.models import Patient, User
from patientportal.consent.models import ConsentStatus, PatientConsent

pytestmark = pytest.mark.integration

PATIENTS = 1500


def wait_for(predicate, timeout: float = 90.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def bulk_patients(count: int, grant_engagement) -> list[Patient]:
    users = User.objects.bulk_create(
        [User(email=f"worker-{i}@example.test", password="!") for i in range(count)]
    )
    patients = Patient.objects.bulk_create([Patient(user=user, time_zone="UTC") for user in users])
    grant_engagement(patients[0])  # creates the consent document and one grant
    version = PatientConsent.objects.get(patient=patients[0]).version
    now = timezone.now()
    PatientConsent.objects.bulk_create(
        [
            PatientConsent(
                patient=p,
                purpose="engagement",
                status=ConsentStatus.GRANTED,
                version=version,
                updated_at=now,
            )
            for p in patients[1:]
        ]
    )
    return patients


def test_worker_killed_mid_dispatch_delivers_each_exactly_once(
    celery_worker_process, make_campaign, grant_engagement, monkeypatch
):
    # Small batches and a short claim lease, so the kill lands mid-dispatch and the dead
    # worker's claims come back quickly. The worker reads these from its environment.
    monkeypatch.setenv("ENGAGEMENT_DISPATCH_BATCH_SIZE", "10")
    monkeypatch.setenv("ENGAGEMENT_CLAIM_LEASE_SECONDS", "3")
    celery_worker_process.kill()
    celery_worker_process.start()

    patients = bulk_patients(PATIENTS, grant_engagement)
    local = datetime.now(UTC) - timedelta(minutes=2)
    campaign = make_campaign(
        starts_on=local.date(), send_time=local.time().replace(second=0, microsecond=0)
    )
    services.occurrences_plan()
    occurrence = Occurrence.objects.get(campaign=campaign)
    services.occurrence_expand(occurrence_id=occurrence.pk)
    assert Delivery.objects.filter(campaign=campaign, status="scheduled").count() == PATIENTS

    for _ in range(3):
        dispatch.delay()
    delivered = Delivery.objects.filter(campaign=campaign, status="delivered")
    assert wait_for(lambda: delivered.count() >= 50)
    celery_worker_process.kill()
    at_kill = delivered.count()
    assert at_kill < PATIENTS, "the worker finished before it could be killed"

    time.sleep(3.5)  # the dead worker's claims expire
    celery_worker_process.start()
    tick.delay()  # beat: releases expired claims and fans out dispatchers

    def all_delivered() -> bool:
        if delivered.count() == PATIENTS:
            return True
        tick.delay()
        time.sleep(0.5)
        return False

    assert wait_for(all_delivered, timeout=180, interval=0.5)
    rows = Delivery.objects.filter(campaign=campaign)
    assert rows.count() == PATIENTS
    assert rows.values("patient_id").distinct().count() == PATIENTS
    assert set(rows.values_list("status", flat=True)) == {"delivered"}
    dupes = rows.values("patient_id", "channel").annotate(n=Count("id")).filter(n__gt=1)
    assert list(dupes) == []
    assert {p.pk for p in patients} == set(rows.values_list("patient_id", flat=True))
