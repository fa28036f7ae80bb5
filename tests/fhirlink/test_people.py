"""Whose record (issue #20): one portal account holds the records of several people (the
account holder's own and the people they manage), each separate in the records API, the export
and disconnect; a proxy launch (fhirUser is not the record's patient) links a managed record.
Isolation: one person's reads never return another's rows, and another account cannot name them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from fhirlink.models import Connection, Relationship, SyncedResource
from fhirlink.records import export as records_export
from tests.factories import PatientFactory
from tests.fhirlink import fake_cerner
from tests.fhirlink.conftest import connection_of
from tests.fhirlink.test_records_api import condition, make_connection, patient_resource, upsert

pytestmark = pytest.mark.django_db


@pytest.fixture
def family(api_client_for):
    """A parent's account: their own record at two health systems and their child's record."""
    parent = PatientFactory.create()
    own = make_connection(parent, slug="north", name="North")
    own_south = make_connection(parent, slug="south", name="South")
    child = make_connection(parent, slug="north-child", name="North")
    Connection.objects.filter(pk=child.pk).update(relationship=Relationship.CHILD)
    upsert(own, [patient_resource("P-PARENT", "Parent"), condition("C-PARENT", "Asthma")])
    upsert(own_south, [condition("C-PARENT-S", "Hypertension")])
    upsert(child, [patient_resource("P-CHILD", "Child"), condition("C-CHILD", "Otitis media")])
    return {
        "parent": parent,
        "api": api_client_for(parent, scope="records:read records:export connections"),
        "own": own,
        "child": child,
    }


def _conditions(api, **params: str) -> Any:
    url = reverse("fhirlink-records-list", kwargs={"record_type": "conditions"})
    return api.get(url, params)


def test_default_is_the_account_holders_own_record_from_every_health_system(family):
    response = _conditions(family["api"])
    assert response.status_code == 200, response.content
    assert sorted(r["fhir_id"] for r in response.json()["results"]) == ["C-PARENT", "C-PARENT-S"]
    summary = family["api"].get(reverse("fhirlink-records-summary")).json()
    assert summary["demographics"]["name"].endswith("Parent")
    assert summary["counts"]["active_conditions"] == 2


def test_a_managed_record_is_read_on_its_own(family):
    child = str(family["child"].pk)
    response = _conditions(family["api"], person=child)
    assert response.status_code == 200
    assert [r["fhir_id"] for r in response.json()["results"]] == ["C-CHILD"]
    summary = family["api"].get(reverse("fhirlink-records-summary"), {"person": child}).json()
    assert summary["demographics"]["name"].endswith("Child")
    assert summary["counts"]["active_conditions"] == 1
    assert _conditions(family["api"], person="self").json()["results"][0]["fhir_id"] != "C-CHILD"


def test_person_malformed_is_400_and_not_a_managed_record_is_404(family):
    bad = _conditions(family["api"], person="not-a-uuid")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_person"
    # The account holder's own connection is not "a person they manage": `self` names it.
    own = _conditions(family["api"], person=str(family["own"].pk))
    assert own.status_code == 404
    assert own.json()["code"] == "person_not_found"


def test_idor_another_account_cannot_read_a_managed_record_by_its_id(family, api_client_for):
    """OWASP ASVS 5.0 V8.2 (object-level authorization): another account naming the parent's
    child record gets exactly what a missing id gets, and no row of it."""
    stranger = api_client_for(PatientFactory.create(), scope="records:read")
    child = str(family["child"].pk)
    for name in ("fhirlink-records-summary", "fhirlink-records-timeline"):
        response = stranger.get(reverse(name), {"person": child})
        assert response.status_code == 404
        assert response.json()["code"] == "person_not_found"
        assert "C-CHILD" not in response.content.decode()
    response = _conditions(stranger, person=child)
    assert response.status_code == 404


def test_export_of_one_person_holds_only_their_resources(
    family, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = family["api"].post(
            reverse("fhirlink-records-exports") + f"?person={family['child'].pk}",
            {"format": "bundle"},
            format="json",
        )
    assert response.status_code == 202, response.content
    assert "person" not in response.json()
    records_export.export_build(response.json()["id"])
    download = family["api"].get(
        reverse("fhirlink-records-export-download", kwargs={"export_id": response.json()["id"]})
    )
    assert download.status_code == 200
    ids = sorted(e["resource"]["id"] for e in json.loads(download.content)["entry"])
    assert ids == ["C-CHILD", "P-CHILD"]


def test_disconnecting_a_managed_record_leaves_the_account_holders_own(family):
    response = family["api"].delete(
        reverse("fhirlink-connection-detail", kwargs={"connection_id": family["child"].pk})
        + "?purge=true"
    )
    assert response.status_code in (200, 202), response.content
    assert not SyncedResource.objects.filter(connection=family["child"]).exists()
    own = _conditions(family["api"])
    assert sorted(r["fhir_id"] for r in own.json()["results"]) == ["C-PARENT", "C-PARENT-S"]


@pytest.mark.parametrize(
    "fhir_user",
    [
        f"{fake_cerner.FHIR_BASE}/Patient/99999",  # a parent's own login picked their child
        f"{fake_cerner.FHIR_BASE}/RelatedPerson/4242",  # Cerner's proxy representation
        f"{fake_cerner.FHIR_BASE}/Person/777",
    ],
)
def test_proxy_launch_links_a_managed_record(fhir_user, consenting_patient, connect, ehr):
    """SMART App Launch 2.x: fhirUser need not be the patient in context (a proxy picks the
    patient in the server's picker); the record is linked as one the account manages."""
    ehr.fhir_user = fhir_user
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "connected"
    connection = connection_of(run)
    assert connection.relationship == Relationship.MANAGED
    assert connection.fhir_patient_id == fake_cerner.FHIR_PATIENT
    assert connection.has_tokens


def test_own_launch_links_the_account_holders_record(consenting_patient, connect, ehr):
    run = connect(consenting_patient)
    assert connection_of(run).relationship == Relationship.SELF


def _connection_url(connection: Connection) -> str:
    return reverse("fhirlink-connection-detail", kwargs={"connection_id": connection.pk})


def test_account_holder_labels_a_managed_record_and_says_who_it_is(family):
    child = family["child"]
    Connection.objects.filter(pk=child.pk).update(relationship=Relationship.MANAGED)
    response = family["api"].patch(
        _connection_url(child), {"label": "  Emma  ", "relationship": "child"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["person"] == {"relationship": "child", "label": "Emma"}
    child.refresh_from_db()
    assert b"Emma" not in bytes(child.label_blob)  # encrypted with the account's data key
    listed = family["api"].get(reverse("fhirlink-connections")).json()["results"]
    people = {c["id"]: c["person"] for c in listed}
    assert people[str(child.pk)] == {"relationship": "child", "label": "Emma"}
    assert people[str(family["own"].pk)] == {"relationship": "self", "label": None}
    cleared = family["api"].patch(_connection_url(child), {"label": ""}, format="json")
    assert cleared.json()["person"] == {"relationship": "child", "label": None}


def test_own_record_cannot_be_relabelled_as_someone_elses(family):
    own = family["own"]
    response = family["api"].patch(_connection_url(own), {"relationship": "child"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "relationship_fixed"
    own.refresh_from_db()
    assert own.relationship == Relationship.SELF
    bad = family["api"].patch(_connection_url(own), {"relationship": "self"}, format="json")
    assert bad.status_code == 400
    long = family["api"].patch(_connection_url(own), {"label": "x" * 61}, format="json")
    assert long.status_code == 400
    own.refresh_from_db()
    assert own.label_blob is None


def test_idor_another_account_cannot_label_a_connection(family, api_client_for):
    """OWASP ASVS 5.0 V8.2: another account's PATCH on the parent's connection is a 404 and
    changes nothing."""
    stranger = api_client_for(PatientFactory.create(), scope="connections")
    response = stranger.patch(
        _connection_url(family["child"]), {"label": "Mine now"}, format="json"
    )
    assert response.status_code == 404
    family["child"].refresh_from_db()
    assert family["child"].label_blob is None
    assert family["child"].relationship == Relationship.CHILD


def test_access_log_reads_per_person(family, api_client_for):
    """The access log says whose record each read was of, and can be read per person."""
    child = str(family["child"].pk)
    family["api"].get(reverse("fhirlink-records-summary"))
    family["api"].get(reverse("fhirlink-records-summary"), {"person": child})
    family["api"].get(reverse("fhirlink-records-timeline"), {"person": child})
    log = api_client_for(family["parent"], scope="audit:read")
    url = "/api/v1/access-log"
    mine = log.get(url, {"person": "self"}).json()["results"]
    theirs = log.get(url, {"person": child}).json()["results"]
    assert [e["resource_type"] for e in mine] == ["summary"]
    assert sorted(e["resource_type"] for e in theirs) == ["summary", "timeline"]
    bad = log.get(url, {"person": "nope"})
    assert bad.status_code == 400
