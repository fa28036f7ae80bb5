"""Consent: documents, the gate, grant, revoke, history, re-consent, handlers, API, FHIR, demo."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent

from patientportal.accesslog.models import AccessAction, AccessEvent, ActorKind, Outcome
from patientportal.consent import services
from patientportal.consent.exceptions import (
    ConsentDocumentNotCurrent,
    ConsentRequired,
    PurposeNotOffered,
)
from patientportal.consent.models import (
    ConsentAction,
    ConsentDocument,
    ConsentRecord,
    ConsentStatus,
    PatientConsent,
    Purpose,
)
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

revoked_calls: list[tuple[str, str]] = []


def record_ehr_sync_revoked(*, patient_id: str) -> None:
    revoked_calls.append(("ehr_sync", patient_id))


def record_engagement_revoked(*, patient_id: str) -> None:
    revoked_calls.append(("engagement", patient_id))


def failing_handler(*, patient_id: str) -> None:
    raise RuntimeError("handler broke")


def make_documents(*, version: int = 1, requires_reconsent: bool = False, **extra):
    """Version `version` (English) of every purpose, in effect since yesterday."""
    effective_at = extra.pop("effective_at", timezone.now() - timedelta(days=1))
    return {
        purpose: ConsentDocument.objects.create(
            purpose=purpose,
            version=version,
            language="en",
            title=f"{purpose} v{version}",
            body=f"Body of {purpose} v{version}",
            effective_at=effective_at,
            requires_reconsent=requires_reconsent,
            **extra,
        )
        for purpose in Purpose.values
    }


@pytest.fixture
def documents():
    return make_documents()


@pytest.fixture(autouse=True)
def _handlers(settings):
    revoked_calls.clear()
    settings.CONSENT_REVOCATION_HANDLERS = {
        "ehr_sync": [f"{__name__}.record_ehr_sync_revoked"],
        "engagement": [f"{__name__}.failing_handler", f"{__name__}.record_engagement_revoked"],
        "care_team_access": [],
        "ai_processing": [],
    }


# --- The gate --------------------------------------------------------------------------------


def test_no_consent_means_not_granted_and_require_raises(patient, documents):
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is False
    with pytest.raises(ConsentRequired) as excinfo:
        services.consent_require(patient=patient, purpose=Purpose.EHR_SYNC)
    assert excinfo.value.code == "consent_required"
    assert excinfo.value.status_code == 403
    assert excinfo.value.extra == {"purpose": "ehr_sync"}


def test_grant_makes_the_gate_open_for_that_purpose_and_patient_only(patient, documents):
    other = PatientFactory.create()
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)

    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is True
    assert services.consent_is_granted(patient=patient.pk, purpose="ehr_sync") is True
    assert services.consent_is_granted(patient=patient, purpose=Purpose.ENGAGEMENT) is False
    assert services.consent_is_granted(patient=other, purpose=Purpose.EHR_SYNC) is False
    services.consent_require(patient=patient, purpose=Purpose.EHR_SYNC)  # does not raise


def test_the_gate_is_one_query(patient, documents, django_assert_num_queries):
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    with django_assert_num_queries(1):
        assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is True


def test_grant_records_version_time_and_writes_one_access_log_row(patient, documents):
    before = timezone.now()
    record = services.consent_grant(patient=patient, purpose=Purpose.CARE_TEAM_ACCESS, version=1)

    record.refresh_from_db()
    assert record.action == ConsentAction.GRANT
    assert record.version == 1
    assert record.document == documents[Purpose.CARE_TEAM_ACCESS]
    assert record.language == "en"
    assert record.actor_user_id == patient.user_id
    assert record.created_at >= before
    state = PatientConsent.objects.get(patient=patient, purpose=Purpose.CARE_TEAM_ACCESS)
    assert (state.status, state.version) == (ConsentStatus.GRANTED, 1)
    event = AccessEvent.objects.get()
    assert event.action == AccessAction.CONSENT_CHANGE
    assert event.actor_kind == ActorKind.PATIENT
    assert event.patient_id == patient.pk
    assert event.purpose == "care_team_access"
    assert event.query == {"change": "grant", "version": 1}


def test_grant_of_an_old_version_is_refused_and_changes_nothing(patient, documents):
    make_documents(version=2)
    with pytest.raises(ConsentDocumentNotCurrent) as excinfo:
        services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    assert excinfo.value.extra == {"current_version": 2}
    assert PatientConsent.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert AccessEvent.objects.count() == 0


def test_a_future_version_is_not_current_yet(patient, documents):
    make_documents(version=2, effective_at=timezone.now() + timedelta(days=3))
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    with pytest.raises(ConsentDocumentNotCurrent):
        services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=2)


def test_ai_processing_is_off_unless_the_operator_enables_it(patient, documents, settings):
    with pytest.raises(PurposeNotOffered):
        services.consent_grant(patient=patient, purpose=Purpose.AI_PROCESSING, version=1)
    assert PatientConsent.objects.count() == 0

    settings.CONSENT_ENABLED_PURPOSES = [*settings.CONSENT_ENABLED_PURPOSES, "ai_processing"]
    services.consent_grant(patient=patient, purpose=Purpose.AI_PROCESSING, version=1)
    assert services.consent_is_granted(patient=patient, purpose=Purpose.AI_PROCESSING) is True

    # Switching the purpose off again closes the gate at once.
    settings.CONSENT_ENABLED_PURPOSES = ["ehr_sync", "care_team_access", "engagement"]
    assert services.consent_is_granted(patient=patient, purpose=Purpose.AI_PROCESSING) is False


# --- Revocation ----------------------------------------------------------------------------------


def test_revoke_flips_the_gate_at_once_and_calls_handlers_only_after_commit(
    patient, documents, django_capture_on_commit_callbacks
):
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record = services.consent_revoke(patient=patient, purpose=Purpose.EHR_SYNC)
        # Inside the transaction the gate is already closed, the handlers not yet called.
        assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is False
        assert revoked_calls == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert revoked_calls == [("ehr_sync", str(patient.pk))]
    assert record is not None
    assert (record.action, record.version) == (ConsentAction.REVOKE, 1)
    state = PatientConsent.objects.get(patient=patient, purpose=Purpose.EHR_SYNC)
    assert state.status == ConsentStatus.REVOKED


def test_a_rolled_back_revocation_calls_no_handler(patient, documents):
    from django.db import transaction

    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)

    def revoke_then_fail() -> None:
        with transaction.atomic():
            services.consent_revoke(patient=patient, purpose=Purpose.EHR_SYNC)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        revoke_then_fail()
    assert revoked_calls == []
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is True


def test_a_failing_handler_does_not_stop_the_others(
    patient, documents, django_capture_on_commit_callbacks
):
    services.consent_grant(patient=patient, purpose=Purpose.ENGAGEMENT, version=1)
    with django_capture_on_commit_callbacks(execute=True):
        services.consent_revoke(patient=patient, purpose=Purpose.ENGAGEMENT)
    assert revoked_calls == [("engagement", str(patient.pk))]


def test_sync_loop_checking_the_gate_per_page_stops_within_one_page(
    patient, documents, django_capture_on_commit_callbacks
):
    """What the sync engine does: ask the gate before each page. Revoked mid-run -> it stops."""
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    pages_written = []
    for page in range(5):
        if not services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC):
            break
        pages_written.append(page)
        if page == 1:
            with django_capture_on_commit_callbacks(execute=True):
                services.consent_revoke(patient=patient, purpose=Purpose.EHR_SYNC)
    assert pages_written == [0, 1]
    assert revoked_calls == [("ehr_sync", str(patient.pk))]


def test_revoking_what_is_not_granted_changes_nothing(patient, documents):
    assert services.consent_revoke(patient=patient, purpose=Purpose.EHR_SYNC) is None
    assert ConsentRecord.objects.count() == 0
    assert AccessEvent.objects.count() == 0


def test_history_is_never_edited(patient, documents):
    record = services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    record.version = 7
    with pytest.raises(TypeError):
        record.save()
    with pytest.raises(TypeError):
        record.delete()
    with pytest.raises(TypeError):
        ConsentRecord.objects.filter(pk=record.pk).update(version=9)
    with pytest.raises(TypeError):
        ConsentRecord.objects.all().delete()
    record.refresh_from_db()
    assert record.version == 1


# --- Re-consent ----------------------------------------------------------------------------------


def test_a_new_version_requiring_reconsent_moves_patients_to_consent_needed(
    patient, documents, django_capture_on_commit_callbacks
):
    other = PatientFactory.create()
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    services.consent_grant(patient=other, purpose=Purpose.ENGAGEMENT, version=1)
    ConsentDocument.objects.create(
        purpose=Purpose.EHR_SYNC,
        version=2,
        title="v2",
        body="new terms",
        effective_at=timezone.now() - timedelta(seconds=1),
        requires_reconsent=True,
    )
    # The gate refuses the old grant from the moment v2 is in effect, before any job ran.
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is False

    with django_capture_on_commit_callbacks(execute=True):
        assert services.consent_apply_reconsent() == 1
    state = PatientConsent.objects.get(patient=patient, purpose=Purpose.EHR_SYNC)
    assert (state.status, state.version) == (ConsentStatus.CONSENT_NEEDED, 1)
    assert (
        ConsentRecord.objects.filter(patient=patient).latest("created_at").action
        == "consent_needed"
    )
    assert revoked_calls == [("ehr_sync", str(patient.pk))]
    # Other purposes and patients are untouched; running again moves nobody.
    assert services.consent_is_granted(patient=other, purpose=Purpose.ENGAGEMENT) is True
    assert services.consent_apply_reconsent() == 0

    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=2)
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is True


def test_a_new_version_without_reconsent_keeps_existing_grants(patient, documents):
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    make_documents(version=2, requires_reconsent=False)
    assert services.consent_apply_reconsent() == 0
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is True


# --- API -----------------------------------------------------------------------------------------


def test_api_lists_current_documents_and_the_patients_state(patient_api, patient, documents):
    services.consent_grant(patient=patient, purpose=Purpose.ENGAGEMENT, version=1)
    AccessEvent_count = AccessEvent.objects.count()

    response = patient_api.get("/api/v1/consents")

    assert response.status_code == 200
    body = response.json()
    assert [item["purpose"] for item in body] == ["ehr_sync", "care_team_access", "engagement"]
    assert [item["status"] for item in body] == ["consent_needed", "consent_needed", "granted"]
    assert body[2]["granted_version"] == 1
    assert body[0]["document"] == {
        "purpose": "ehr_sync",
        "version": 1,
        "language": "en",
        "title": "ehr_sync v1",
        "body": "Body of ehr_sync v1",
        "effective_at": documents["ehr_sync"].effective_at.isoformat().replace("+00:00", "Z"),
        "requires_reconsent": False,
    }
    event = AccessEvent.objects.get(seq=AccessEvent_count + 1)
    assert (event.action, event.patient_id, event.actor_kind) == ("list", patient.pk, "patient")


def test_api_documents_list_is_not_logged(patient_api, documents):
    response = patient_api.get("/api/v1/consents/documents")
    assert response.status_code == 200
    assert [d["purpose"] for d in response.json()] == ["ehr_sync", "care_team_access", "engagement"]
    assert AccessEvent.objects.count() == 0


def test_api_grant_records_ip_user_agent_and_app(api_client_for, patient, documents):
    client = api_client_for(patient, scope="consent")
    response = client.post(
        "/api/v1/consents/ehr_sync/grant",
        {"version": 1},
        format="json",
        HTTP_USER_AGENT="PatientPortal/1.0 (iOS)",
        REMOTE_ADDR="203.0.113.9",
        HTTP_X_REQUEST_ID="req-grant-0001",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "granted"
    assert response.json()["granted_version"] == 1
    record = ConsentRecord.objects.get()
    assert record.ip_address == "203.0.113.9"
    assert record.user_agent == "PatientPortal/1.0 (iOS)"
    assert record.application_client_id == "mobile-app"
    assert record.request_id == "req-grant-0001"
    # One access-log row for the request (the service's), not two.
    event = AccessEvent.objects.get()
    assert event.action == "consent_change"
    assert event.request_id == "req-grant-0001"
    assert event.ip_address == "203.0.113.9"
    assert event.application_client_id == "mobile-app"


def test_api_grant_of_a_stale_version_is_409_and_changes_nothing(patient_api, documents):
    make_documents(version=2)
    response = patient_api.post("/api/v1/consents/ehr_sync/grant", {"version": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "consent_version_not_current"
    assert response.json()["extra"] == {"current_version": 2}
    assert ConsentRecord.objects.count() == 0
    assert PatientConsent.objects.count() == 0
    # The refused attempt is itself on the log, as denied-by-conflict.
    assert list(AccessEvent.objects.values_list("action", "outcome")) == [
        ("consent_change", Outcome.ERROR)
    ]


def test_api_without_the_consent_scope_is_403_and_changes_nothing(
    api_client_for, patient, documents
):
    client = api_client_for(patient, scope="records:read")
    response = client.post("/api/v1/consents/ehr_sync/grant", {"version": 1}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert ConsentRecord.objects.count() == 0
    assert PatientConsent.objects.count() == 0


def test_api_unknown_purpose_is_404(patient_api, documents):
    response = patient_api.post("/api/v1/consents/marketing/grant", {"version": 1}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "purpose_not_offered"


def test_api_revoke_then_history(patient_api, patient, documents):
    assert patient_api.post("/api/v1/consents/ehr_sync/grant", {"version": 1}).status_code == 200
    response = patient_api.post("/api/v1/consents/ehr_sync/revoke")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert services.consent_is_granted(patient=patient, purpose=Purpose.EHR_SYNC) is False

    history = patient_api.get("/api/v1/consents/history")
    assert history.status_code == 200
    results = history.json()["results"]
    assert [(r["purpose"], r["action"], r["version"]) for r in results] == [
        ("ehr_sync", "revoke", 1),
        ("ehr_sync", "grant", 1),
    ]
    assert results[0]["application"] == "mobile-app"
    # grant, revoke, history: one row each.
    assert list(AccessEvent.objects.order_by("seq").values_list("action", flat=True)) == [
        "consent_change",
        "consent_change",
        "list",
    ]
    assert AccessEvent.objects.latest("seq").resource_ids == [str(r["id"]) for r in results]


def test_api_history_shows_only_the_patients_own(patient_api, patient, documents):
    other = PatientFactory.create()
    services.consent_grant(patient=other, purpose=Purpose.EHR_SYNC, version=1)
    response = patient_api.get("/api/v1/consents/history")
    assert response.json()["results"] == []


def test_fhir_export_is_a_valid_bundle_of_consents(patient_api, patient, documents):
    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    services.consent_grant(patient=patient, purpose=Purpose.ENGAGEMENT, version=1)
    services.consent_revoke(patient=patient, purpose=Purpose.ENGAGEMENT)

    response = patient_api.get("/api/v1/consents/fhir")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    body = response.json()
    Bundle.model_validate(body)  # raises if not a valid R4B Bundle
    consents = [entry["resource"] for entry in body["entry"]]
    for consent in consents:
        Consent.model_validate(consent)
    by_purpose = {c["provision"]["purpose"][0]["code"]: c for c in consents}
    assert set(by_purpose) == {"ehr_sync", "engagement"}
    assert by_purpose["ehr_sync"]["status"] == "active"
    assert by_purpose["ehr_sync"]["provision"]["type"] == "permit"
    assert by_purpose["engagement"]["status"] == "inactive"
    assert by_purpose["engagement"]["provision"]["type"] == "deny"
    assert by_purpose["ehr_sync"]["patient"] == {"reference": f"Patient/{patient.pk}"}
    assert by_purpose["ehr_sync"]["policy"] == [
        {"uri": "urn:patientportal:consent-policy:ehr_sync:v1"}
    ]
    assert AccessEvent.objects.latest("seq").action == "export"


# --- Admin ---------------------------------------------------------------------------------------


def test_an_effective_document_cannot_be_edited_in_the_admin(client, documents):
    from tests.factories import StaffFactory

    operator = StaffFactory.create(role="Operator")
    client.force_login(operator)
    document = documents[Purpose.EHR_SYNC]
    response = client.post(
        f"/admin/consent/consentdocument/{document.pk}/change/",
        {"title": "changed", "body": "changed", "requires_reconsent": "on"},
    )
    assert (
        response.status_code == 302
    )  # saved, but every field of an effective version is read-only
    document.refresh_from_db()
    assert (document.title, document.body) == ("ehr_sync v1", "Body of ehr_sync v1")


def test_operator_adds_a_reconsent_version_in_the_admin(
    client, patient, documents, django_capture_on_commit_callbacks
):
    from tests.factories import StaffFactory

    services.consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    client.force_login(StaffFactory.create(role="Operator"))
    now = timezone.now() - timedelta(minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/consent/consentdocument/add/",
            {
                "purpose": "ehr_sync",
                "version": "2",
                "language": "en",
                "title": "Sync v2",
                "body": "New terms",
                "effective_at_0": now.strftime("%Y-%m-%d"),
                "effective_at_1": now.strftime("%H:%M:%S"),
                "requires_reconsent": "on",
            },
        )
    assert response.status_code == 302
    state = PatientConsent.objects.get(patient=patient, purpose=Purpose.EHR_SYNC)
    assert state.status == ConsentStatus.CONSENT_NEEDED
    assert revoked_calls == [("ehr_sync", str(patient.pk))]


# --- Demo ----------------------------------------------------------------------------------------


def test_demo_seed_is_idempotent(db):
    from patientportal.accounts import demo as accounts_demo
    from patientportal.consent import demo

    accounts_demo.seed(io.StringIO())
    demo.seed(io.StringIO())
    demo.seed(io.StringIO())

    assert ConsentDocument.objects.count() == 4
    demo_patient = PatientConsent.objects.filter(
        patient__user__email=accounts_demo.DEMO_PATIENT_EMAIL
    )
    assert sorted(demo_patient.values_list("purpose", "status")) == [
        ("care_team_access", "granted"),
        ("ehr_sync", "granted"),
        ("engagement", "granted"),
    ]
    assert ConsentRecord.objects.count() == 3
