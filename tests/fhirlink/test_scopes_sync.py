"""Against the sandbox, which (like the strictest real server) enforces scopes on every read,
references included (issue #20): the launch asks for the references' scopes, a sync with them
ends `succeeded`, and a reference type the patient unticked is skipped and said so."""

from __future__ import annotations

from typing import Any

import pytest

from fhirlink.models import Connection, SyncedResource, SyncRun
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_register
from fhirlink.sync.inline import sync_connection_run
from tests.factories import PatientFactory
from tests.fhirlink.conftest import SYNC_CLIENT_ID, grant_ehr_sync
from tests.fixtures.launch import launch_begin, launch_return

pytestmark = pytest.mark.integration

RESOURCES = ["Patient", "Condition", "Encounter", "Immunization"]


def connect(sandbox: Any, api_client_for: Any, client: Any, *, untick: tuple[str, ...] = ()):
    sandbox.register_client(SYNC_CLIENT_ID, health_system_redirect_uri("sandbox-scopes"))
    hs, _ = health_system_register(
        slug="sandbox-scopes",
        name="Sandbox Scopes",
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id=SYNC_CLIENT_ID,
        client_auth="public",
        scope_syntax="v2",
        resources=RESOURCES,
    )
    patient = PatientFactory.create()
    grant_ehr_sync(patient)
    api = api_client_for(patient, scope="connections")
    launch = launch_begin(api, client, patient, hs)
    result = launch_return(client, sandbox.login("nancy", launch.authorize_url, untick=untick))
    return launch, result, Connection.objects.get(pk=result["connection"])


def test_references_are_requested_granted_and_read_so_the_run_succeeds(
    sandbox, api_client_for, client
):
    _launch, result, connection = connect(sandbox, api_client_for, client)
    requested = connection.requested_scopes.split()
    for scope in ("user/Practitioner.rs", "user/Organization.rs", "user/Location.rs"):
        assert scope in requested
    assert not any("*" in s for s in requested)  # Cerner: no wildcards
    assert result["outcome"] == "connected"
    assert connection.granted_resources == [*RESOURCES, "Practitioner", "Organization", "Location"]
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.get(connection=connection)
    assert run.errors == []
    assert run.skipped == []
    refs = SyncedResource.objects.filter(connection=connection, is_reference=True)
    assert refs.filter(resource_type="Practitioner").count() > 0
    # Incremental: still succeeded, nothing new.
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"


def test_an_unticked_reference_type_is_skipped_and_said_so_not_an_error(
    sandbox, api_client_for, client
):
    _launch, result, connection = connect(
        sandbox, api_client_for, client, untick=("user/Practitioner.rs",)
    )
    # A reference type unticked is not a declined record type: the outcome stays "connected".
    assert result["outcome"] == "connected"
    assert "Practitioner" not in connection.granted_resources
    assert connection.declined_resources == []
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    run = SyncRun.objects.get(connection=connection)
    assert run.errors == []
    named = [r for r in run.references if r.startswith("Practitioner/")]
    assert named  # the pages named practitioners...
    assert run.skipped == [
        {"type": "Practitioner", "reason": "not_granted", "references": len(named)}
    ]
    # ...none was read (the sandbox would have answered 403), the other references were.
    assert not SyncedResource.objects.filter(
        connection=connection, resource_type="Practitioner"
    ).exists()
    assert SyncedResource.objects.filter(
        connection=connection, resource_type="Organization", is_reference=True
    ).exists()
