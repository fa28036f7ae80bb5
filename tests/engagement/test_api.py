"""The patient's reminder API: devices, inbox, open/acknowledge/snooze, preferences, isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
from django.utils import timezone

from engagement import services
from engagement.models import Delivery, Device, Occurrence, ReminderPreference
from patientportal.accounts.models import Patient
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox_for(make_campaign, grant_engagement):
    """inbox_for(*patients) -> each patient's delivered inbox reminder for one occurrence."""

    def make(*patients: Patient) -> dict[Patient, Delivery]:
        for patient in patients:
            grant_engagement(patient)
        local = datetime.now(UTC) - timedelta(minutes=1)
        campaign = make_campaign(
            starts_on=local.date(), send_time=local.time().replace(second=0, microsecond=0)
        )
        services.occurrences_plan()
        services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
        services.deliveries_dispatch(max_seconds=30)
        return {p: Delivery.objects.get(patient=p, campaign=campaign) for p in patients}

    return make


def test_inbox_lists_only_my_delivered_reminders(patient, patient_api, inbox_for):
    other = PatientFactory.create()
    patient.user.first_name = "Nancy"
    patient.user.save()
    patient.time_zone = "UTC"
    patient.save()
    mine = inbox_for(patient, other)[patient]
    response = patient_api.get("/api/v1/reminders")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["id"] for item in results] == [str(mine.pk)]
    assert results[0]["title"] == "Hello Nancy"
    assert results[0]["status"] == "delivered"
    assert set(results[0]) == {
        "id",
        "title",
        "body",
        "status",
        "due_at",
        "delivered_at",
        "opened_at",
        "acknowledged_at",
        "snoozed_until",
    }


def test_open_then_acknowledge(patient, patient_api, inbox_for):
    item = inbox_for(patient)[patient]
    response = patient_api.post(f"/api/v1/reminders/{item.pk}/open")
    assert (response.status_code, response.json()["status"]) == (200, "opened")
    response = patient_api.post(f"/api/v1/reminders/{item.pk}/acknowledge")
    assert (response.status_code, response.json()["status"]) == (200, "acknowledged")
    again = patient_api.post(f"/api/v1/reminders/{item.pk}/acknowledge")
    assert again.status_code == 200  # idempotent
    item.refresh_from_db()
    assert item.status == "acknowledged"
    assert item.acknowledged_at is not None


def test_patient_a_cannot_see_or_act_on_patient_bs_reminder(
    patient, patient_api, inbox_for, api_client_for
):
    other = PatientFactory.create()
    items = inbox_for(patient, other)
    theirs = items[other]
    for action, body in (("open", None), ("acknowledge", None), ("snooze", {"minutes": 30})):
        response = patient_api.post(f"/api/v1/reminders/{theirs.pk}/{action}", body)
        assert response.status_code == 404
        assert response.json()["code"] == "reminder_not_found"
    theirs.refresh_from_db()
    assert (theirs.status, theirs.opened_at, theirs.acknowledged_at, theirs.snoozed_until) == (
        "delivered",
        None,
        None,
        None,
    )
    other_view = api_client_for(other).get("/api/v1/reminders").json()["results"]
    assert [item["id"] for item in other_view] == [str(theirs.pk)]


def test_snooze_hides_until_the_time(patient, patient_api, inbox_for):
    item = inbox_for(patient)[patient]
    response = patient_api.post(f"/api/v1/reminders/{item.pk}/snooze", {"minutes": 30})
    assert response.status_code == 200
    item.refresh_from_db()
    assert timedelta(minutes=29) < item.snoozed_until - timezone.now() <= timedelta(minutes=30)
    assert patient_api.get("/api/v1/reminders").json()["results"] == []
    Delivery.objects.filter(pk=item.pk).update(snoozed_until=timezone.now() - timedelta(seconds=1))
    assert len(patient_api.get("/api/v1/reminders").json()["results"]) == 1


def test_snooze_refuses_nonsense(patient, patient_api, inbox_for):
    item = inbox_for(patient)[patient]
    for body in ({}, {"minutes": 0}, {"minutes": 30, "until": "2030-01-01T00:00:00Z"}):
        response = patient_api.post(f"/api/v1/reminders/{item.pk}/snooze", body)
        assert (response.status_code, response.json()["code"]) == (400, "validation_failed")
    item.refresh_from_db()
    assert item.snoozed_until is None


def test_register_and_remove_a_device(patient, patient_api):
    response = patient_api.post(
        "/api/v1/reminders/devices", {"platform": "apns", "token": "ab" * 32}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "platform", "registered_at"}  # the token is never echoed
    device = Device.objects.get(pk=body["id"])
    assert (device.patient_id, device.platform, device.token) == (patient.pk, "apns", "ab" * 32)
    again = patient_api.post("/api/v1/reminders/devices", {"platform": "apns", "token": "ab" * 32})
    assert again.json()["id"] == body["id"]  # same token: same registration
    assert patient_api.delete(f"/api/v1/reminders/devices/{body['id']}").status_code == 204
    assert Device.objects.count() == 0


def test_a_device_token_moves_to_the_patient_who_registers_it(patient, api_client_for):
    other = PatientFactory.create()
    api_client_for(other).post("/api/v1/reminders/devices", {"platform": "fcm", "token": "t" * 40})
    api_client_for(patient).post(
        "/api/v1/reminders/devices", {"platform": "fcm", "token": "t" * 40}
    )
    assert list(Device.objects.values_list("patient_id", flat=True)) == [patient.pk]


def test_cannot_remove_someone_elses_device(patient, patient_api):
    other = PatientFactory.create()
    device = services.device_register(patient=other, platform="fcm", token="x" * 40)
    response = patient_api.delete(f"/api/v1/reminders/devices/{device.pk}")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    assert Device.objects.filter(pk=device.pk, patient=other).exists()
    missing = patient_api.delete(f"/api/v1/reminders/devices/{uuid.uuid4()}")
    assert missing.status_code == 404


def test_preferences_defaults_and_update(patient, patient_api):
    response = patient_api.get("/api/v1/reminders/preferences")
    assert response.json() == {
        "time_zone": "Europe/London",
        "push": True,
        "email": False,
        "inbox": True,
        "quiet_start": None,
        "quiet_end": None,
        "opted_out": False,
    }
    response = patient_api.patch(
        "/api/v1/reminders/preferences",
        {
            "time_zone": "America/New_York",
            "email": True,
            "quiet_start": "21:30",
            "quiet_end": "07:00",
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "time_zone": "America/New_York",
        "push": True,
        "email": True,
        "inbox": True,
        "quiet_start": "21:30:00",
        "quiet_end": "07:00:00",
        "opted_out": False,
    }
    patient.refresh_from_db()
    assert patient.time_zone == "America/New_York"
    pref = ReminderPreference.objects.get(patient=patient)
    assert (pref.quiet_start, pref.quiet_end) == (time(21, 30), time(7))


def test_preferences_refuse_bad_input_and_change_nothing(patient, patient_api):
    for body in (
        {"time_zone": "Mars/Olympus"},
        {"quiet_start": "21:00"},
        {"quiet_start": "21:00", "quiet_end": None},
    ):
        response = patient_api.patch("/api/v1/reminders/preferences", body)
        assert (response.status_code, response.json()["code"]) == (400, "validation_failed")
    patient.refresh_from_db()
    assert patient.time_zone == "Europe/London"
    assert not ReminderPreference.objects.exists()


def test_opting_out_cancels_pending_reminders(
    patient, patient_api, make_campaign, grant_engagement, django_capture_on_commit_callbacks
):
    grant_engagement(patient)
    campaign = make_campaign(starts_on=timezone.now().date() + timedelta(days=2))
    services.occurrences_plan(now=timezone.now() + timedelta(days=2))
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    assert Delivery.objects.get(patient=patient).status == "scheduled"
    with django_capture_on_commit_callbacks(execute=True):
        response = patient_api.patch("/api/v1/reminders/preferences", {"opted_out": True})
    assert response.json()["opted_out"] is True
    row = Delivery.objects.get(patient=patient)
    assert (row.status, row.error_code) == ("cancelled", "opted_out")


def test_the_reminders_scope_is_required(patient, api_client_for):
    client = api_client_for(patient, scope="records:read")
    for method, url in (
        ("get", "/api/v1/reminders"),
        ("get", "/api/v1/reminders/preferences"),
        ("post", "/api/v1/reminders/devices"),
    ):
        response = getattr(client, method)(url)
        assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")
    assert not Device.objects.exists()


def test_anonymous_is_refused(client):
    response = client.get("/api/v1/reminders")
    assert response.status_code == 401
