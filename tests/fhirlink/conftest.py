"""fhirlink fixtures: a consenting patient, a registered health system, a fake Cerner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from django.utils import timezone

from fhirlink.models import Connection, HealthSystem
from fhirlink.services.registry import health_system_register
from patientportal.accounts.models import Patient
from patientportal.consent.models import ConsentDocument, Purpose
from patientportal.consent.services import consent_grant
from tests.factories import PatientFactory
from tests.fhirlink import fake_cerner
from tests.fhirlink.fake_cerner import FakeCerner

RETURN_URI = "org.patientportal.app:/connections/result"
REDIRECT_URI = "http://127.0.0.1:8000/fhirlink/callback"


def grant_ehr_sync(patient: Patient) -> None:
    document, _ = ConsentDocument.objects.get_or_create(
        purpose=Purpose.EHR_SYNC,
        version=1,
        language="en",
        defaults={
            "title": "Sync my record",
            "body": "We copy your record.",
            "effective_at": timezone.now() - timedelta(days=1),
        },
    )
    consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=document.version)


@pytest.fixture
def consenting_patient(db: None) -> Patient:
    patient: Patient = PatientFactory.create()
    grant_ehr_sync(patient)
    return patient


@pytest.fixture
def other_patient(db: None) -> Patient:
    patient: Patient = PatientFactory.create()
    grant_ehr_sync(patient)
    return patient


@pytest.fixture
def health_system(db: None) -> HealthSystem:
    hs, _ = health_system_register(
        slug="test-health",
        name="Test Health",
        fhir_base_url=fake_cerner.FHIR_BASE,
        tenant=fake_cerner.TENANT,
        client_id=fake_cerner.CLIENT_ID,
        client_auth="public",
        scope_syntax="v2",
        resources=[
            "Patient",
            "Observation",
            "Condition",
            "AllergyIntolerance",
            "Communication",
            "Basic",
        ],
        redirect_uri=REDIRECT_URI,
    )
    return hs


@pytest.fixture
def ehr() -> Iterator[FakeCerner]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeCerner(rsps=rsps)
        fake.install()
        yield fake


@pytest.fixture
def connect(
    api_client_for: Callable[..., Any], client: Any, ehr: FakeCerner, health_system: HealthSystem
) -> Callable[..., dict[str, Any]]:
    """connect(patient, untick=(), deny=False) -> {start, callback params, redirect query}."""

    def run(who: Patient, **authorize: Any) -> dict[str, Any]:
        api = api_client_for(who, scope="connections")
        start = api.post(
            "/api/v1/connections", {"health_system": str(health_system.pk)}, format="json"
        )
        assert start.status_code == 201, start.content
        params = ehr.authorize(start.json()["authorize_url"], **authorize)
        response = client.get("/fhirlink/callback", params)
        assert response.status_code == 302
        location = response["Location"]
        assert location.startswith(RETURN_URI + "?")
        return {
            "api": api,
            "start": start.json(),
            "params": params,
            "location": location,
            "result": dict(parse_qsl(urlsplit(location).query)),
        }

    return run


def connection_of(result: dict[str, Any]) -> Connection:
    return Connection.objects.get(pk=result["result"]["connection"])


# --- Sync engine (issue 5): a connection to a sandbox patient, launched for real -------------

SYNC_CLIENT_ID = "portal-sync-tests"
SYNC_RESOURCES = [
    "Patient",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "Encounter",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "Goal",
    "CareTeam",
    "Device",
    "Binary",
]


@pytest.fixture
def sandbox_connect(
    sandbox: Any, api_client_for: Callable[..., Any], client: Any
) -> Callable[..., Connection]:
    """sandbox_connect("nancy", resources=None) -> an active Connection to that sandbox patient
    (a real SMART launch: the first sync is enqueued as in production)."""
    sandbox.register_client(SYNC_CLIENT_ID, REDIRECT_URI)

    def run(
        who: str = "nancy", resources: list[str] | None = None, patient: Patient | None = None
    ) -> Connection:
        hs, _ = health_system_register(
            slug="sandbox-sync",
            name="Sandbox Sync",
            fhir_base_url=sandbox.fhir_base,
            tenant=sandbox.tenant,
            client_id=SYNC_CLIENT_ID,
            client_auth="public",
            scope_syntax="v2",
            resources=resources or SYNC_RESOURCES,
            redirect_uri=REDIRECT_URI,
        )
        if patient is None:
            patient = PatientFactory.create()
            grant_ehr_sync(patient)
        api = api_client_for(patient, scope="connections")
        start = api.post("/api/v1/connections", {"health_system": str(hs.pk)}, format="json")
        assert start.status_code == 201, start.content
        location = sandbox.login(who, start.json()["authorize_url"])
        params = dict(parse_qsl(urlsplit(location).query))
        response = client.get("/fhirlink/callback", params)
        assert response.status_code == 302
        result = dict(parse_qsl(urlsplit(response["Location"]).query))
        assert result.get("outcome") == "connected", result
        return Connection.objects.get(pk=result["connection"])

    return run
