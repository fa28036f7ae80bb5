"""The engagement admin: only the Engagement role, schedule and cancel, sizes not members."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from engagement.models import Campaign, Delivery, MessageTemplate, Occurrence
from engagement.services import deliveries_dispatch, occurrence_expand, occurrences_plan
from patientportal.accounts import roles
from tests.factories import PatientFactory, StaffFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def engagement_staff(client):
    user = StaffFactory.create(role=roles.ENGAGEMENT)
    client.force_login(user)
    return client


def campaign_form(template: MessageTemplate, **overrides: str) -> dict[str, str]:
    data = {
        "name": "Flu season",
        "template": str(template.pk),
        "audience": "all_patients",
        "patient": "",
        "cohort_code": "",
        "stale_after_days": "30",
        "starts_on": "2026-10-01",
        "send_time": "09:00",
        "rrule": "FREQ=WEEKLY;BYDAY=TH",
        "ends_on": "2026-11-30",
        "send_push": "on",
        "send_inbox": "on",
    }
    data.update(overrides)
    return data


def test_only_the_engagement_role_sees_campaigns(client):
    for role in (roles.CARE_TEAM, roles.AUDITOR, roles.OPERATOR):
        client.force_login(StaffFactory.create(role=role))
        assert client.get("/admin/engagement/campaign/").status_code == 403
        assert client.get("/admin/engagement/delivery/").status_code == 403


def test_staff_schedule_a_recurring_campaign_and_see_the_cohort_size(engagement_staff, template):
    patients = [PatientFactory.create(user__first_name="Zebedee") for _ in range(3)]
    response = engagement_staff.post("/admin/engagement/campaign/add/", campaign_form(template))
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="Flu season")
    assert (campaign.status, campaign.rrule, campaign.ends_on) == (
        "draft",
        "FREQ=WEEKLY;BYDAY=TH",
        date(2026, 11, 30),
    )
    page = engagement_staff.get(f"/admin/engagement/campaign/{campaign.pk}/change/")
    text = page.content.decode()
    assert "3 patients (0 consent to reminders and have not opted out)" in text
    assert len(patients) == 3
    assert "Zebedee" not in text  # sizes, not members
    response = engagement_staff.post(
        "/admin/engagement/campaign/",
        {"action": "schedule_campaigns", "_selected_action": [str(campaign.pk)]},
    )
    assert response.status_code == 302
    shown = [
        str(m) for m in engagement_staff.get("/admin/engagement/campaign/").context["messages"]
    ]
    assert shown == ["'Flu season' scheduled; its cohort has 3 patients now (0 reachable)."]
    campaign.refresh_from_db()
    assert campaign.status == "scheduled"
    assert campaign.activated_at is not None


def test_invalid_schedules_are_refused(engagement_staff, template):
    for overrides in (
        {"rrule": "FREQ=MINUTELY"},
        {"ends_on": "2026-09-01"},
        {"audience": "patient"},
        {"audience": "condition_code", "cohort_code": ""},  # a code cohort needs its code
        {"send_push": "", "send_inbox": ""},
    ):
        data = campaign_form(template, **overrides)
        data = {k: v for k, v in data.items() if v != "" or k in ("patient", "cohort_code")}
        response = engagement_staff.post("/admin/engagement/campaign/add/", data)
        assert response.status_code == 200, overrides  # the form again, with errors
    assert not Campaign.objects.exists()


def test_template_placeholders_are_whitelisted(engagement_staff):
    response = engagement_staff.post(
        "/admin/engagement/messagetemplate/add/",
        {"name": "Bad", "title": "Hi {user.password}", "body": "{{ evil }}"},
    )
    assert response.status_code == 200
    assert "Unknown placeholder" in response.content.decode()
    assert not MessageTemplate.objects.filter(name="Bad").exists()
    response = engagement_staff.post(
        "/admin/engagement/messagetemplate/add/",
        {"name": "Good", "title": "Hi {first_name}", "body": "Use {{braces}} on {reminder_date}"},
    )
    assert response.status_code == 302
    assert MessageTemplate.objects.filter(name="Good").exists()


def test_statistics_and_cancel(engagement_staff, make_campaign, grant_engagement):
    delivered = PatientFactory.create(time_zone="UTC")
    grant_engagement(delivered)
    PatientFactory.create(time_zone="UTC")  # no consent
    now = timezone.now()
    local = now - timedelta(minutes=5)
    campaign = make_campaign(
        starts_on=local.date(),
        send_time=local.time().replace(second=0, microsecond=0),
        rrule="FREQ=DAILY",
    )
    occurrences_plan(now=now)
    occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
    deliveries_dispatch(max_seconds=30)
    occurrences_plan(now=now + timedelta(days=1))  # tomorrow's: pending
    tomorrow = Occurrence.objects.filter(campaign=campaign).order_by("-local_start")[0]
    occurrence_expand(occurrence_id=tomorrow.pk)
    page = engagement_staff.get("/admin/engagement/campaign/")
    assert page.status_code == 200
    row = page.context["cl"].result_list.get(pk=campaign.pk)
    assert (row.stat_sent, row.stat_delivered, row.stat_failed, row.stat_acknowledged) == (
        1,
        1,
        0,
        0,
    )
    assert Delivery.objects.filter(campaign=campaign, status="scheduled").count() == 1
    response = engagement_staff.post(
        "/admin/engagement/campaign/",
        {"action": "cancel_campaigns", "_selected_action": [str(campaign.pk)]},
    )
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"
    # Tomorrow's row; the patient without consent never had one.
    assert Delivery.objects.filter(campaign=campaign, status="cancelled").count() == 1
    assert not Delivery.objects.filter(campaign=campaign, status="scheduled").exists()


def test_the_outbox_is_read_only(engagement_staff):
    assert engagement_staff.get("/admin/engagement/delivery/").status_code == 200
    assert engagement_staff.get("/admin/engagement/delivery/add/").status_code == 403
