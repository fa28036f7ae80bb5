"""The client against the sandbox's generic SMART App Launch 2.x profile (issue #20), and the
same journeys against both profiles: a standards-only server with its issuer on another origin,
wildcard-only ``scopes_supported``, RFC 9207 ``iss``, refresh-token rotation, scopes enforced on
every read (references included) and Observation categories chosen at consent."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from fhirlink.exceptions import ReauthRequired
from fhirlink.models import Connection, ConnectionStatus, SyncedResource, SyncRun
from fhirlink.records.sharing import sharing_build
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_register
from fhirlink.services.tokens import connection_refresh, token_open
from fhirlink.sync.inline import sync_connection_run
from tests.factories import PatientFactory
from tests.fhirlink.conftest import grant_ehr_sync
from tests.fixtures.launch import launch_begin, launch_return

pytestmark = pytest.mark.integration

CLIENT_ID = "portal-generic-tests"
RESOURCES = ["Patient", "Observation", "Condition", "Encounter", "Immunization"]
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
# Nancy's record as both profiles serve it (the same generated data): live rows per type after
# a full sync of RESOURCES, and the references they name.
NANCY = {
    "Patient": 1,
    "Observation": 180,
    "Condition": 12,
    "Encounter": 20,
    "Immunization": 10,
}


def connect(
    sandbox: Any,
    api_client_for: Any,
    client: Any,
    *,
    slug: str = "sandbox-generic",
    who: str = "nancy",
    resources: list[str] | None = None,
    **authorize: Any,
) -> tuple[dict[str, str], dict[str, str], Connection]:
    """A real launch through the app's API, the browser and the sandbox's pages: (the callback's
    parameters from the sandbox, the app's deep link, the connection)."""
    sandbox.register_client(CLIENT_ID, health_system_redirect_uri(slug))
    hs, _ = health_system_register(
        slug=slug,
        name="Sandbox Generic",
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id=CLIENT_ID,
        client_auth="public",
        scope_syntax="v2",
        resources=resources or RESOURCES,
    )
    patient = PatientFactory.create()
    grant_ehr_sync(patient)
    api = api_client_for(patient, scope="connections")
    launch = launch_begin(api, client, patient, hs)
    location = sandbox.login(who, launch.authorize_url, **authorize)
    params = dict(parse_qsl(urlsplit(location).query))
    result = launch_return(client, location)
    return params, result, Connection.objects.get(pk=result["connection"])


def stored(connection: Connection, *, references: bool = False) -> dict[str, int]:
    rows = SyncedResource.objects.filter(
        connection=connection, is_reference=references, deleted_at__isnull=True
    )
    return dict(Counter(rows.values_list("resource_type", flat=True)))


def test_launch_against_the_generic_server_wildcards_iss_and_issuer_on_another_origin(
    generic_sandbox, api_client_for, client
):
    config = requests.get(generic_sandbox.smart_configuration_url, timeout=10).json()
    assert urlsplit(config["issuer"]).netloc != urlsplit(generic_sandbox.fhir_base).netloc
    assert [s for s in config["scopes_supported"] if "/" in s and "*" in s] == [
        "patient/*.rs",
        "patient/*.read",
    ]

    params, result, connection = connect(generic_sandbox, api_client_for, client)

    assert params["iss"] == generic_sandbox.issuer  # RFC 9207
    assert result["outcome"] == "connected", result
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.fhir_patient_id == "12800101"
    assert connection.oidc_issuer == generic_sandbox.issuer
    requested = connection.requested_scopes.split()
    # A wildcard-only list is a hint: every type is asked for, per type, in v2 syntax.
    for rtype in [*RESOURCES, "Practitioner", "Organization", "Location"]:
        assert f"patient/{rtype}.rs" in requested, rtype
    assert not any("*" in s for s in requested)
    assert connection.granted_resources == [*RESOURCES, "Practitioner", "Organization", "Location"]
    assert connection.declined_resources == []


@pytest.mark.parametrize("profile", ["cerner", "generic"])
def test_full_and_incremental_sync_succeed_with_exact_counts_and_references_read(
    request, profile, transactional_db, api_client_for, client
):
    sandbox = request.getfixturevalue("sandbox" if profile == "cerner" else "generic_sandbox")
    _params, result, connection = connect(sandbox, api_client_for, client)
    assert result["outcome"] == "connected", result

    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.get(connection=connection)
    assert (run.errors, run.skipped) == ([], [])
    assert stored(connection) == NANCY
    # The references the records name were read, each with its own scope.
    references = stored(connection, references=True)
    assert set(references) == {"Practitioner", "Organization", "Location"}
    named = {r for r in run.references if r.partition("/")[0] in references}
    assert references == dict(Counter(r.partition("/")[0] for r in named))

    # Incremental: succeeded, nothing new, the same rows.
    assert sync_connection_run(connection_id=connection.pk, trigger="schedule") == "succeeded"
    latest = SyncRun.objects.filter(connection=connection).first()  # newest first
    assert latest is not None
    assert latest.pk != run.pk
    assert (latest.status, latest.errors, latest.skipped) == ("succeeded", [], [])
    assert stored(connection) == NANCY
    assert stored(connection, references=True) == references


def test_a_category_limited_grant_stores_only_those_categories_and_says_not_shared(
    generic_sandbox, api_client_for, client
):
    _params, result, connection = connect(
        generic_sandbox,
        api_client_for,
        client,
        untick_categories=("vital-signs", "social-history"),
    )
    assert result["outcome"] == "connected", result
    assert f"patient/Observation.rs?category={LAB}" in connection.granted_scopes.split()
    assert "patient/Observation.rs" not in connection.granted_scopes.split()

    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.get(connection=connection)
    assert run.errors == []
    observations = SyncedResource.objects.filter(
        connection=connection, resource_type="Observation", is_reference=False
    )
    assert observations.count() > 0
    assert observations.exclude(category="laboratory").count() == 0

    api = api_client_for(connection.patient, scope="records:read")
    summary = api.get("/api/v1/records/summary")
    assert summary.status_code == 200
    sharing = {e["record_type"]: e for e in summary.json()["sharing"]}
    assert sharing["observations"]["sharing"] == "partly_shared"
    assert {c["category"]: c["sharing"] for c in sharing["observations"]["categories"]} == {
        "laboratory": "shared",
        "vital-signs": "not_shared",
        "social-history": "not_shared",
        "imaging": "not_shared",
        "survey": "not_shared",
        "exam": "not_shared",
        "procedure": "not_shared",
        "therapy": "not_shared",
        "activity": "not_shared",
    }
    assert sharing["conditions"]["sharing"] == "shared"
    assert sharing["allergies"]["sharing"] == "not_available"  # never asked for
    # A category not shared is an empty list, not an error.
    vitals = api.get("/api/v1/records/observations?category=vital-signs")
    assert vitals.status_code == 200
    assert vitals.json()["results"] == []


def test_an_unticked_type_is_not_shared_in_the_summary(generic_sandbox, api_client_for, client):
    _params, result, connection = connect(
        generic_sandbox, api_client_for, client, untick=("patient/Condition.rs",)
    )
    assert result["outcome"] == "connected_partial"
    assert connection.declined_resources == ["Condition"]
    by_type = {e["resource_type"]: e["sharing"] for e in sharing_build(patient=connection.patient)}
    assert by_type["Condition"] == "not_shared"
    assert by_type["Observation"] == "shared"
    assert by_type["AllergyIntolerance"] == "not_available"


def test_refresh_rotation_stores_the_new_refresh_token_and_the_old_one_is_dead(
    generic_sandbox, api_client_for, client, settings
):
    # The client's own once-a-minute guard (Cerner's throttle) would hold the second refresh.
    settings.FHIRLINK_REFRESH_MIN_INTERVAL_SECONDS = 0
    _params, _result, connection = connect(generic_sandbox, api_client_for, client)
    first = token_open(connection, "refresh_token")

    assert connection_refresh(connection_id=connection.pk, force=True) == "refreshed"
    connection.refresh_from_db()
    second = token_open(connection, "refresh_token")
    assert second
    assert second != first
    # The new one works, and rotates again.
    assert connection_refresh(connection_id=connection.pk, force=True) == "refreshed"
    connection.refresh_from_db()
    third = token_open(connection, "refresh_token")
    assert third not in {first, second}

    # The old one is dead: presenting it fails, and (reuse detection) ends the whole grant.
    token_url = generic_sandbox.token_url
    reused = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": first, "client_id": CLIENT_ID},
        timeout=10,
    )
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    with pytest.raises(ReauthRequired):
        connection_refresh(connection_id=connection.pk, force=True)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH


def test_binaries_not_granted_are_skipped_and_said_so(generic_sandbox, api_client_for, client):
    _params, result, connection = connect(
        generic_sandbox,
        api_client_for,
        client,
        resources=["Patient", "DocumentReference", "Binary"],
        untick=("patient/Binary.rs",),
    )
    # Binary is read by reference (the documents' attachments): not a declined record type.
    assert result["outcome"] == "connected"
    assert connection.declined_resources == []
    assert "Binary" not in connection.granted_resources
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.get(connection=connection)
    assert run.errors == []
    # Nancy's 8 served DocumentReferences (a ninth is suppressed) name one attachment each.
    documents = SyncedResource.objects.filter(
        connection=connection, resource_type="DocumentReference"
    )
    assert documents.count() == 8
    assert run.skipped == [{"type": "Binary", "reason": "not_granted", "references": 8}]
    assert not SyncedResource.objects.filter(connection=connection, resource_type="Binary").exists()
