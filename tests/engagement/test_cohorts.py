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


def _synced(patient, resources, slug):
    """Writes resources for `patient` through the store's own upsert path."""
    from fhirlink.models import Connection, HealthSystem
    from fhirlink.services.sync.store import resource_upsert_page

    system, _ = HealthSystem.objects.get_or_create(
        slug=slug,
        defaults={
            "name": slug,
            "fhir_base_url": f"https://ehr.example/{slug}",
            "client_id": "c",
            "redirect_uri": "https://portal.example/fhirlink/callback",
        },
    )
    connection = Connection.objects.create(
        patient=patient, health_system=system, status="active", fhir_patient_id=str(patient.pk)
    )
    resource_upsert_page(
        connection=connection, resources=resources, source_base_url=system.fhir_base_url
    )


def _condition(fhir_id, code, clinical="active", status=None):
    resource = {
        "resourceType": "Condition",
        "id": fhir_id,
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "subject": {"reference": "Patient/1"},
    }
    if status:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": status,
                }
            ]
        }
    return resource


def _medication(fhir_id, code, status="active"):
    return {
        "resourceType": "MedicationRequest",
        "id": fhir_id,
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]
        },
        "subject": {"reference": "Patient/1"},
    }


def test_code_cohorts_select_on_the_synced_store_and_are_access_logged(
    make_campaign, grant_engagement
):
    diabetic = PatientFactory.create()
    _synced(diabetic, [_condition("c1", "44054006")], "hs-a")
    resolved = PatientFactory.create()
    _synced(resolved, [_condition("c2", "44054006", clinical="resolved")], "hs-b")
    in_error = PatientFactory.create()
    _synced(in_error, [_condition("c3", "44054006", status="entered-in-error")], "hs-c")
    other_code = PatientFactory.create()
    _synced(other_code, [_condition("c4", "38341003")], "hs-d")
    on_metformin = PatientFactory.create()
    _synced(on_metformin, [_medication("m1", "860975")], "hs-e")
    stopped = PatientFactory.create()
    _synced(stopped, [_medication("m2", "860975", status="stopped")], "hs-f")
    grant_engagement(diabetic)
    grant_engagement(other_code)

    def members(audience, code):
        campaign = make_campaign(audience=audience, cohort_code=code)
        return set(cohorts.cohort_patients(campaign=campaign, purpose="test"))

    before = AccessEvent.objects.count()
    assert members(Audience.CONDITION_CODE, "http://snomed.info/sct|44054006") == {diabetic}
    assert members(Audience.CONDITION_CODE, "44054006") == {diabetic}
    assert members(Audience.CONDITION_CODE, "http://hl7.org/fhir/sid/icd-10-cm|44054006") == set()
    assert members(Audience.MEDICATION_CODE, "860975") == {on_metformin}
    assert AccessEvent.objects.count() == before + 4
    assert set(AccessEvent.objects.order_by("-seq")[:4].values_list("action", "purpose")) == {
        ("search", "engagement")
    }
    # One system entry per resolution, naming the cohort and the campaign, never a patient.
    size_campaign = make_campaign(audience=Audience.CONDITION_CODE, cohort_code="44054006")
    assert services.campaign_audience_size(campaign=size_campaign) == 1
    assert AccessEvent.objects.count() == before + 5
    # Reachable: in the cohort and consenting (other_code consents but is not in the cohort).
    assert services.campaign_reachable_size(campaign=size_campaign) == 1
    assert AccessEvent.objects.count() == before + 5  # the reachable count logs no second entry
    event = AccessEvent.objects.order_by("-seq").first()
    assert event is not None
    assert (
        event.actor_kind,
        event.actor_role,
        event.action,
        event.purpose,
        event.patient_id,
    ) == ("system", "engagement.cohort", "search", "engagement", None)
    assert event.query == {
        "cohort": "condition_code",
        "campaign": size_campaign.pk,
        "use": "size preview",
    }
