"""fhirlink fixtures: a consenting patient, a registered health system, a fake Cerner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.utils import timezone

from fhirlink.models import Connection, HealthSystem
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_register
from patientportal.accounts.models import Patient
from patientportal.consent.models import ConsentDocument, Purpose
from patientportal.consent.services import consent_grant
from tests.factories import PatientFactory
from tests.fhirlink import fake_cerner
from tests.fhirlink.fake_cerner import FakeCerner
from tests.fixtures.launch import deep_link, launch_begin, launch_return

RETURN_URI = "org.patientportal.app:/connections/result"
# The shared callback of registrations made before per-health-system redirect URIs (legacy).
REDIRECT_URI = "http://127.0.0.1:8000/fhirlink/callback"
# The test health system's own redirect URI (health_system_redirect_uri("test-health")).
HS_REDIRECT_URI = f"{REDIRECT_URI}/test-health"


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
    )
    assert hs.redirect_uri == HS_REDIRECT_URI
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
    """connect(patient, untick=(), deny=False) -> {api, start, launch, params, location, result}:
    the app's start, the patient's browser (signed in) through the start URL, the fake EHR, the
    callback; `result` is the deep link's {connection, outcome}."""

    def run(who: Patient, **authorize: Any) -> dict[str, Any]:
        api = api_client_for(who, scope="connections")
        launch = launch_begin(api, client, who, health_system)
        params = ehr.authorize(launch.authorize_url, **authorize)
        returned = launch_return(client, launch.redirect_uri, params)
        assert returned["location"].startswith(RETURN_URI + "?")
        return {
            "api": api,
            "start": launch.start,
            "launch": launch,
            "params": params,
            "location": returned["location"],
            "result": deep_link(returned),
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
    sandbox.register_client(SYNC_CLIENT_ID, health_system_redirect_uri("sandbox-sync"))

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
        )
        if patient is None:
            patient = PatientFactory.create()
            grant_ehr_sync(patient)
        api = api_client_for(patient, scope="connections")
        launch = launch_begin(api, client, patient, hs)
        result = launch_return(client, sandbox.login(who, launch.authorize_url))
        assert result.get("outcome") == "connected", result
        return Connection.objects.get(pk=result["connection"])

    return run
