"""The outbox: expansion, dispatch, consent, retries, cancellation, concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from engagement import channels, services
from engagement.channels.base import RetryableSendError, SendResult, TerminalSendError
from engagement.models import (
    Audience,
    Campaign,
    Delivery,
    Device,
    Occurrence,
    ReminderPreference,
)
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_revoke
from tests.factories import PatientFactory


def due_now_campaign(make_campaign, **fields):
    """A one-off campaign whose local time has passed everywhere a few minutes ago."""
    local = datetime.now(UTC) - timedelta(minutes=5)
    campaign = make_campaign(
        starts_on=local.date(),
        send_time=local.time().replace(second=0, microsecond=0),
        **fields,
    )
    return campaign


def run_pipeline() -> None:
    services.occurrences_plan()
    for occurrence_id in Occurrence.objects.filter(status="pending").values_list("pk", flat=True):
        services.occurrence_expand(occurrence_id=occurrence_id)
    services.deliveries_dispatch(max_seconds=30)


class RecordingChannel:
    """A channel backend that records what it is asked to send, and can fail on demand."""

    def __init__(self, *, failures: list[Exception] | None = None) -> None:
        self.sent: list[str] = []
        self.failures = list(failures or [])

    def available_for(self, *, patient_ids):
        return set(patient_ids)

    def send(self, message):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message.idempotency_key)
        return SendResult(delivered=False, provider_message_id="provider-1")


@pytest.fixture
def utc_patients(grant_engagement):
    patients = [PatientFactory.create(time_zone="UTC") for _ in range(3)]
    for patient in patients:
        grant_engagement(patient)
    return patients


def test_each_patient_gets_one_inbox_delivery(make_campaign, utc_patients):
    campaign = due_now_campaign(make_campaign)
    run_pipeline()
    rows = list(Delivery.objects.filter(campaign=campaign).values_list("patient_id", "status"))
    assert sorted(rows) == sorted((p.pk, "delivered") for p in utc_patients)
    run_pipeline()  # a second beat run changes nothing
    assert Delivery.objects.filter(campaign=campaign).count() == 3


def test_nothing_is_sent_without_consent(make_campaign, utc_patients):
    stranger = PatientFactory.create(time_zone="UTC")  # never consented
    campaign = due_now_campaign(make_campaign)
    run_pipeline()
    assert not Delivery.objects.filter(patient=stranger).exists()
    assert Delivery.objects.filter(campaign=campaign, status="delivered").count() == 3


def test_consent_revoked_after_scheduling_cancels_pending_deliveries(
    make_campaign, utc_patients, django_capture_on_commit_callbacks
):
    revoking = utc_patients[0]
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    assert Delivery.objects.filter(patient=revoking, status="scheduled").count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        consent_revoke(patient=revoking, purpose=Purpose.ENGAGEMENT)

    row = Delivery.objects.get(patient=revoking)
    assert (row.status, row.error_code) == ("cancelled", "no_consent")
    services.deliveries_dispatch(max_seconds=30)
    row.refresh_from_db()
    assert (row.status, row.sent_at, row.delivered_at) == ("cancelled", None, None)
    assert Delivery.objects.filter(status="delivered").count() == 2


def test_revocation_between_claim_and_send_still_sends_nothing(make_campaign, utc_patients):
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    token, ids = services.deliveries_claim(limit=10)
    consent_revoke(patient=utc_patients[0], purpose=Purpose.ENGAGEMENT)  # gate flips at once
    stats = services.deliveries_send_claimed(claim_token=token, ids=ids)
    assert (stats.delivered, stats.cancelled) == (2, 1)
    assert Delivery.objects.get(patient=utc_patients[0]).status == "cancelled"


def test_opting_out_cancels_and_prevents(make_campaign, utc_patients):
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    ReminderPreference.objects.create(patient=utc_patients[1], opted_out_at=timezone.now())
    services.deliveries_dispatch(max_seconds=30)
    row = Delivery.objects.get(patient=utc_patients[1])
    assert (row.status, row.error_code) == ("cancelled", "opted_out")


def test_channel_preferences_decide_the_rows(make_campaign, utc_patients, monkeypatch):
    push = RecordingChannel()
    monkeypatch.setitem(channels._BACKENDS, "push", push)
    ReminderPreference.objects.create(patient=utc_patients[0], push=False, inbox=True)
    ReminderPreference.objects.create(patient=utc_patients[1], push=True, inbox=False)
    campaign = due_now_campaign(make_campaign, send_push=True, send_inbox=True)
    run_pipeline()
    rows = set(Delivery.objects.filter(campaign=campaign).values_list("patient_id", "channel"))
    assert rows == {
        (utc_patients[0].pk, "inbox"),
        (utc_patients[1].pk, "push"),
        (utc_patients[2].pk, "inbox"),
        (utc_patients[2].pk, "push"),
    }
    assert len(push.sent) == 2


def test_retryable_failures_back_off_then_succeed(make_campaign, utc_patients, monkeypatch):
    push = RecordingChannel(failures=[RetryableSendError("fcm_unavailable")])
    monkeypatch.setitem(channels._BACKENDS, "push", push)
    campaign = due_now_campaign(
        make_campaign,
        send_push=True,
        send_inbox=False,
        audience=Audience.PATIENT,
        patient=utc_patients[0],
    )
    before = timezone.now()
    run_pipeline()
    row = Delivery.objects.get(campaign=campaign)
    assert (row.status, row.attempts, row.error_code) == ("scheduled", 1, "fcm_unavailable")
    # First retry after 60 s ± 20 % jitter.
    assert before + timedelta(seconds=47) < row.due_at < timezone.now() + timedelta(seconds=73)
    Delivery.objects.filter(pk=row.pk).update(due_at=timezone.now())
    services.deliveries_dispatch(max_seconds=30)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.error_code) == ("sent", 2, "")
    assert push.sent == [row.idempotency_key]


def test_retries_are_bounded(make_campaign, utc_patients, monkeypatch, settings):
    settings.ENGAGEMENT_MAX_ATTEMPTS = 3
    push = RecordingChannel(failures=[RetryableSendError("apns_503")] * 5)
    monkeypatch.setitem(channels._BACKENDS, "push", push)
    campaign = due_now_campaign(
        make_campaign,
        send_push=True,
        send_inbox=False,
        audience=Audience.PATIENT,
        patient=utc_patients[0],
    )
    run_pipeline()
    for _ in range(2):
        Delivery.objects.filter(campaign=campaign, status="scheduled").update(due_at=timezone.now())
        services.deliveries_dispatch(max_seconds=30)
    row = Delivery.objects.get(campaign=campaign)
    assert (row.status, row.attempts, row.error_code) == ("failed", 3, "apns_503")
    assert push.sent == []


def test_terminal_failures_are_recorded_at_once(make_campaign, utc_patients, monkeypatch):
    push = RecordingChannel(failures=[TerminalSendError("no_device")])
    monkeypatch.setitem(channels._BACKENDS, "push", push)
    campaign = due_now_campaign(
        make_campaign,
        send_push=True,
        send_inbox=False,
        audience=Audience.PATIENT,
        patient=utc_patients[0],
    )
    run_pipeline()
    row = Delivery.objects.get(campaign=campaign)
    assert (row.status, row.attempts, row.error_code) == ("failed", 1, "no_device")


def test_a_dead_workers_claim_is_released_after_the_lease(make_campaign, utc_patients, settings):
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    _token, ids = services.deliveries_claim(limit=10)  # ... and the worker dies here
    assert len(ids) == 3
    assert services.deliveries_release_expired_claims() == 0  # lease still running
    later = timezone.now() + timedelta(seconds=settings.ENGAGEMENT_CLAIM_LEASE_SECONDS + 1)
    assert services.deliveries_release_expired_claims(now=later) == 3
    services.deliveries_dispatch(max_seconds=30)
    assert list(Delivery.objects.values_list("status", "attempts").distinct()) == [("delivered", 2)]


def test_reminders_too_late_expire_instead_of_arriving(make_campaign, utc_patients):
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    Delivery.objects.update(due_at=timezone.now() - timedelta(hours=7))
    services.deliveries_dispatch(max_seconds=30)
    assert list(Delivery.objects.values_list("status", flat=True).distinct()) == ["expired"]


def test_an_occurrence_already_past_when_scheduled_is_skipped(
    make_campaign, utc_patients, grant_engagement
):
    """Scheduling at 10:00 UTC a reminder for 09:00 local today: UTC patients do not get a
    late one; a patient west of UTC still gets theirs at 09:00 local."""
    west = PatientFactory.create(time_zone="America/Los_Angeles")
    grant_engagement(west)
    now = timezone.now()
    local_nine = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    campaign = make_campaign(
        starts_on=local_nine.date(), send_time=local_nine.time(), activated_at=now
    )
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    assert list(Delivery.objects.values_list("patient_id", flat=True)) == [west.pk]


def test_cancelling_a_campaign_cancels_what_is_pending(make_campaign, utc_patients):
    campaign = make_campaign(starts_on=date.today() + timedelta(days=1), send_time=time(9))
    services.occurrences_plan(now=timezone.now() + timedelta(days=1))
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    assert services.campaign_cancel(campaign_id=campaign.pk) == 3
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"
    assert list(Delivery.objects.values_list("status", flat=True).distinct()) == ["cancelled"]
    assert services.occurrences_plan(now=timezone.now() + timedelta(days=5)) == 0


def test_cohort_of_one_patient(make_campaign, utc_patients):
    campaign = due_now_campaign(make_campaign, audience=Audience.PATIENT, patient=utc_patients[2])
    assert services.campaign_audience_size(campaign=campaign) == 1
    run_pipeline()
    assert list(Delivery.objects.values_list("patient_id", flat=True)) == [utc_patients[2].pk]


def test_expansion_resumes_from_its_cursor(make_campaign, grant_engagement):
    patients = [PatientFactory.create(time_zone="UTC") for _ in range(5)]
    for patient in patients:
        grant_engagement(patient)
    campaign = due_now_campaign(make_campaign)
    services.occurrences_plan()
    occurrence = Occurrence.objects.get(campaign=campaign)
    first = services.occurrence_expand(occurrence_id=occurrence.pk, batch_size=2, max_batches=1)
    assert (first.patients, first.deliveries, first.finished) == (2, 2, False)
    rest = services.occurrence_expand(occurrence_id=occurrence.pk, batch_size=2)
    assert (rest.patients, rest.deliveries, rest.finished) == (3, 3, True)
    assert sorted(Delivery.objects.values_list("patient_id", flat=True)) == sorted(
        p.pk for p in patients
    )


@pytest.mark.django_db(transaction=True)
def test_two_beat_runs_at_once_produce_no_duplicates(make_campaign, grant_engagement):
    """Four concurrent pipelines (plan, expand, dispatch) on the same due occurrence."""
    patients = [PatientFactory.create(time_zone="UTC") for _ in range(60)]
    for patient in patients:
        grant_engagement(patient)
    campaign = due_now_campaign(make_campaign)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(timeout=10)
            services.occurrences_plan()
            for occurrence_id in Occurrence.objects.values_list("pk", flat=True):
                services.occurrence_expand(occurrence_id=occurrence_id, batch_size=7)
            services.deliveries_dispatch(batch_size=5, max_seconds=60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    # Whatever a racing expander left for later is picked up by the next beat.
    run_pipeline()
    assert Occurrence.objects.filter(campaign=campaign).count() == 1
    rows = list(
        Delivery.objects.filter(campaign=campaign).values_list("patient_id", "status", "attempts")
    )
    assert len(rows) == 60
    assert {patient_id for patient_id, _, _ in rows} == {p.pk for p in patients}
    assert {(status, attempts) for _, status, attempts in rows} == {("delivered", 1)}


def test_reconnect_event_goes_through_the_outbox_once(grant_engagement, monkeypatch):
    from fhirlink.models import Connection

    patient = PatientFactory.create(time_zone="UTC")
    grant_engagement(patient)
    connection_id = _needs_reauth_connection(patient)
    monkeypatch.setattr("engagement.tasks.dispatch.delay", lambda: None)
    first = services.reconnect_reminder_send(connection_id=str(connection_id))
    again = services.reconnect_reminder_send(connection_id=str(connection_id))
    assert first is not None
    assert again is not None
    assert first.pk == again.pk
    services.deliveries_dispatch(max_seconds=30)
    rows = list(Delivery.objects.filter(patient=patient).values_list("channel", "status"))
    assert rows == [("inbox", "delivered")]  # no device, e-mail off by default
    assert Campaign.objects.get(slug="connection-needs-reauth").kind == "system"
    assert Connection.objects.filter(pk=connection_id).exists()


def _needs_reauth_connection(patient):
    from fhirlink.models import Connection, HealthSystem

    fields = {f.name for f in HealthSystem._meta.get_fields()}
    values = {"name": "Demo health system"} if "name" in fields else {}
    required = [
        f
        for f in HealthSystem._meta.concrete_fields
        if not f.null
        and not f.has_default()
        and not f.blank
        and not f.primary_key
        and f.name not in values
    ]
    for field in required:
        values[field.name] = (
            "https://fhir.example.test/r4" if "url" in field.name else f"test-{field.name}"
        )
    system = HealthSystem.objects.create(**values)
    return Connection.objects.create(
        patient=patient,
        health_system=system,
        status="needs_reauth",
        needs_reauth_at=timezone.now(),
    ).pk


def test_push_rows_only_for_patients_with_a_device_on_a_configured_platform(
    make_campaign, utc_patients
):
    from engagement.channels.push import PushChannel

    class FakeClient:
        def send(self, *, device_token, message):
            raise AssertionError("not sent in this test")

    channels._BACKENDS["push"] = PushChannel(fcm=FakeClient(), configure=False)  # type: ignore[arg-type]
    Device.objects.create(
        patient=utc_patients[0],
        platform="fcm",
        token="t" * 20,
        token_hash="h1",
        registered_at=timezone.now(),
    )
    Device.objects.create(
        patient=utc_patients[1],
        platform="apns",
        token="a" * 64,
        token_hash="h2",
        registered_at=timezone.now(),
    )
    campaign = due_now_campaign(make_campaign, send_push=True, send_inbox=False)
    services.occurrences_plan()
    services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    assert list(Delivery.objects.values_list("patient_id", "channel")) == [
        (utc_patients[0].pk, "push")
    ]


def test_campaign_status_constraints(template):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Campaign.objects.create(
            name="x",
            template=template,
            audience=Audience.PATIENT,
            starts_on=date(2026, 1, 1),
            send_time=time(9),
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Campaign.objects.create(
            name="x",
            template=template,
            audience=Audience.ALL_PATIENTS,
            starts_on=date(2026, 1, 2),
            ends_on=date(2026, 1, 1),
            send_time=time(9),
        )
