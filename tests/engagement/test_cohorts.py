"""Cohorts: one selector class each; clinical-data cohorts write an access-log entry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement import cohorts, services
from engagement.models import Audience
from patientportal.accesslog.models import AccessEvent
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


def connection_for(patient, status, last_synced_at=None):
    from fhirlink.models import Connection, HealthSystem

    values = {}
    for field in HealthSystem._meta.concrete_fields:
        if field.null or field.has_default() or field.blank or field.primary_key:
            continue
        values[field.name] = (
            "https://fhir.example.test/r4" if "url" in field.name else f"test-{field.name}"
        )
    system = HealthSystem.objects.first() or HealthSystem.objects.create(**values)
    return Connection.objects.create(
        patient=patient, health_system=system, status=status, last_synced_at=last_synced_at
    )


def test_connection_cohorts(make_campaign):
    now = timezone.now()
    fresh = PatientFactory.create()
    connection_for(fresh, "active", now - timedelta(hours=1))
    stale = PatientFactory.create()
    connection_for(stale, "active", now - timedelta(days=40))
    never = PatientFactory.create()
    connection_for(never, "syncing")
    reauth = PatientFactory.create()
    connection_for(reauth, "needs_reauth", now - timedelta(days=2))
    PatientFactory.create()  # not connected

    def members(audience, **fields):
        campaign = make_campaign(audience=audience, **fields)
        return set(cohorts.cohort_patients(campaign=campaign, purpose="test"))

    assert members(Audience.ALL_CONNECTED) == {fresh, stale, never}
    assert members(Audience.STALE_DATA, stale_after_days=30) == {stale, never}
    assert members(Audience.NEEDS_RECONNECTION) == {reauth}
    assert services.campaign_audience_size(campaign=make_campaign(audience="all_patients")) == 5


def test_a_clinical_cohort_is_one_more_selector_and_is_access_logged(make_campaign, monkeypatch):
    """What a condition-code cohort will look like once the synced-record store exists."""

    class FakeConditionCohort(cohorts.CohortSelector):
        audience = Audience.CONDITION_CODE
        uses_clinical_data = True

        def patients(self, campaign):
            from patientportal.accounts.models import Patient

            return Patient.objects.all()

    monkeypatch.setitem(cohorts.SELECTORS, Audience.CONDITION_CODE, FakeConditionCohort())
    PatientFactory.create()
    campaign = make_campaign(audience=Audience.CONDITION_CODE, cohort_code="sct|44054006")
    before = AccessEvent.objects.count()
    assert services.campaign_audience_size(campaign=campaign) == 1
    event = AccessEvent.objects.order_by("-seq").first()
    assert AccessEvent.objects.count() == before + 1
    assert event is not None
    assert (event.actor_kind, event.action, event.purpose, event.patient_id) == (
        "system",
        "search",
        "engagement",
        None,
    )
    assert event.query["cohort"] == "condition_code"
    assert event.query["campaign"] == campaign.pk
