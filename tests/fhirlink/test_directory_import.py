"""Directory import: Oracle's published bundle (read from ../shared, never copied into the repo)
and SMART User-access Brands bundles; idempotent re-import; retirement under connections."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import responses
from django.core.management import call_command
from django.core.management.base import CommandError

from fhirlink.directory.importer import bundle_parse, directory_import
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    DirectoryEntry,
    DirectoryImport,
    EntryStatus,
    HealthSystem,
)
from fhirlink.services.registry import health_system_register
from patientportal.core.errors import ValidationFailed

SHARED = Path(__file__).resolve().parents[3] / "shared" / "oracle-health-endpoints"
CURRENT = SHARED / "millennium_patient_r4_endpoints.json"
PREVIOUS = SHARED / "millennium_patient_r4_endpoints.previous.json"
needs_shared = pytest.mark.skipif(
    not CURRENT.exists() or not PREVIOUS.exists(),
    reason=f"Oracle's published endpoint files are not in {SHARED} (../shared)",
)
VCU_TENANT = "072ee25e-9ba2-4626-bd4b-17ff1ccdc763"


def brands_bundle(*, with_second: bool = True, name: str = "Acme Health") -> dict[str, Any]:
    """A small SMART App Launch 2.2 User-access Brands bundle: a brand with a logo and an
    alias, a facility that is `partOf` it, their endpoint."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "https://brands.example.org/Organization/acme",
            "resource": {
                "resourceType": "Organization",
                "id": "acme",
                "name": name,
                "alias": ["Acme Hospitals"],
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/organization-brand",
                        "extension": [
                            {"url": "brandLogo", "valueUrl": "https://brands.example.org/a.svg"}
                        ],
                    }
                ],
                "address": [{"city": "Montréal", "state": "QC", "postalCode": "H2X 1Y4"}],
                "endpoint": [{"reference": "Endpoint/acme-r4"}],
            },
        },
        {
            "fullUrl": "https://brands.example.org/Endpoint/acme-r4",
            "resource": {
                "resourceType": "Endpoint",
                "id": "acme-r4",
                "status": "active",
                "address": "https://fhir.acme.example/r4/",
            },
        },
    ]
    if with_second:
        entries.append(
            {
                "resource": {
                    "resourceType": "Organization",
                    "id": "acme-north",
                    "name": "Acme North Clinic",
                    "partOf": {"reference": "Organization/acme"},
                    "address": [{"city": "Laval", "state": "QC", "postalCode": "H7N 1A1"}],
                }
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def raw(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle).encode()


def test_brands_bundle_parsed_with_logo_alias_and_facility() -> None:
    parsed = sorted(bundle_parse(brands_bundle()), key=lambda p: p.name)
    assert [(p.name, p.city, p.state, p.postal_code) for p in parsed] == [
        ("Acme Health", "Montréal", "QC", "H2X 1Y4"),
        ("Acme North Clinic", "Laval", "QC", "H7N 1A1"),
    ]
    assert parsed[0].aliases == ["Acme Hospitals"]
    assert {p.logo_url for p in parsed} == {"https://brands.example.org/a.svg"}
    assert {p.fhir_base_url for p in parsed} == {"https://fhir.acme.example/r4"}
    assert parsed[0].external_id == "acme@acme-r4"
    assert parsed[1].external_id == "acme-north@acme-r4"


def test_reimport_is_idempotent_and_reports_changes(db: None) -> None:
    first = directory_import(raw=raw(brands_bundle()), source="acme", origin="a.json")
    assert (first.total, first.added, first.changed, first.renamed, first.retired) == (
        2,
        2,
        0,
        0,
        0,
    )
    again = directory_import(raw=raw(brands_bundle()), source="acme", origin="a.json")
    assert (again.added, again.changed, again.renamed, again.retired) == (0, 0, 0, 0)
    renamed = directory_import(
        raw=raw(brands_bundle(with_second=False, name="Acme Health System")),
        source="acme",
        origin="b.json",
    )
    assert (renamed.added, renamed.changed, renamed.renamed, renamed.retired) == (0, 1, 1, 1)
    assert renamed.details["renamed"] == [["Acme Health", "Acme Health System"]]
    assert renamed.details["retired"] == ["Acme North Clinic"]
    assert DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE).count() == 1
    assert DirectoryEntry.objects.get(external_id="acme-north@acme-r4").status == "retired"
    # It comes back: counted as added again, active again.
    back = directory_import(raw=raw(brands_bundle()), source="acme", origin="a.json")
    assert (back.added, back.changed, back.renamed, back.retired) == (1, 1, 1, 0)
    assert DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE).count() == 2


def test_empty_or_foreign_file_changes_nothing(db: None) -> None:
    directory_import(raw=raw(brands_bundle()), source="acme", origin="a.json")
    for bad in (b"not json", b'{"resourceType": "Patient"}', raw({"resourceType": "Bundle"})):
        with pytest.raises(ValidationFailed) as info:
            directory_import(raw=bad, source="acme", origin="bad.json")
        assert info.value.code == "validation_failed"
    assert DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE).count() == 2
    assert DirectoryImport.objects.count() == 1


def test_retired_endpoint_keeps_its_connections_marks_them_and_tells_patients(
    db: None, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.factories import PatientFactory

    settings.FHIRLINK_NEEDS_REAUTH_HANDLERS = ["tests.fhirlink.test_directory_import.record_told"]
    RECORDED.clear()
    directory_import(raw=raw(brands_bundle()), source="acme", origin="a.json")
    entry = DirectoryEntry.objects.get(external_id="acme-north@acme-r4")
    health_system = HealthSystem.objects.create(
        pk=entry.pk,
        slug=f"dir-{entry.pk.hex}",
        name=entry.name,
        fhir_base_url=entry.fhir_base_url,
        client_id="platform",
        redirect_uri="http://127.0.0.1:8000/fhirlink/callback",
    )
    DirectoryEntry.objects.filter(pk=entry.pk).update(health_system=health_system)
    patient = PatientFactory.create()
    live = Connection.objects.create(
        patient=patient, health_system=health_system, status=ConnectionStatus.ACTIVE
    )
    gone = Connection.objects.create(
        patient=PatientFactory.create(),
        health_system=health_system,
        status=ConnectionStatus.DISCONNECTED,
        fhir_patient_id="x",
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = directory_import(
            raw=raw(brands_bundle(with_second=False)), source="acme", origin="b.json"
        )
    assert run.retired == 1
    assert run.connections_marked == 1
    live.refresh_from_db()
    gone.refresh_from_db()
    assert live.status == ConnectionStatus.NEEDS_REAUTH
    assert live.needs_reauth_at is not None
    assert gone.status == ConnectionStatus.DISCONNECTED
    assert [str(live.pk)] == RECORDED
    # Never deleted under its connections; no new launches to it.
    assert HealthSystem.objects.filter(pk=health_system.pk, enabled=False).exists()
    assert DirectoryEntry.objects.get(pk=entry.pk).health_system_id == health_system.pk


RECORDED: list[str] = []


def record_told(*, connection_id: str) -> None:
    RECORDED.append(connection_id)


def test_import_links_a_hand_registration_with_the_same_base(db: None) -> None:
    hs, _ = health_system_register(
        slug="acme",
        name="Acme (by hand)",
        fhir_base_url="https://fhir.acme.example/r4/",
        client_id="acme-client",
    )
    directory_import(raw=raw(brands_bundle(with_second=False)), source="acme", origin="a.json")
    assert DirectoryEntry.objects.get().health_system_id == hs.pk
    assert HealthSystem.objects.get(pk=hs.pk).name == "Acme (by hand)"


@needs_shared
def test_oracle_releases_report_7_removed_5_added_4_renamed(db: None) -> None:
    out = StringIO()
    call_command("healthsystem_directory_import", "--file", str(PREVIOUS), stdout=out)
    assert out.getvalue().startswith("oracle-millennium release sha256:")
    assert "1361 entries; added 1361, changed 0 (renamed 0), retired 0" in out.getvalue()
    out = StringIO()
    call_command("healthsystem_directory_import", "--file", str(CURRENT), stdout=out)
    run = DirectoryImport.objects.first()
    assert run is not None
    assert (run.total, run.added, run.renamed, run.retired) == (1359, 5, 4, 7)
    # Besides the 4 renames: 8 new identifiers (OIDs) and 1 address.
    assert run.changed == 13
    assert sorted(run.details["renamed"]) == [
        [
            "LifePoint Corporate Services, General Partnership",
            "LifePoint Corporate Services, General Partnership.",
        ],
        ["Nebraska Orthopedic Hospital", "Nebraska Orthopaedic Hospital LLC"],
        [
            "USA Health University Hospital",
            "University of South Alabama Hospitals and Clinics",
        ],
        [
            "University of Missouri Health System",
            "The Curators of the University of Missouri on behalf of University of Missouri "
            "Health Care",
        ],
    ]
    assert "added 5, changed 13 (renamed 4), retired 7" in out.getvalue()
    assert DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE).count() == 1359
    assert DirectoryEntry.objects.filter(status=EntryStatus.RETIRED).count() == 7
    vcu = DirectoryEntry.objects.get(tenant=VCU_TENANT)
    assert (vcu.name, vcu.city, vcu.state, vcu.postal_code) == (
        "VCU Health System Authority",
        "Richmond",
        "VA",
        "23298",
    )
    assert vcu.fhir_base_url == f"https://fhir-myrecord.cerner.com/r4/{VCU_TENANT}"
    assert vcu.identifier == "urn:oid:2.16.840.1.113883.3.306"
    # Idempotent: the same file again changes nothing.
    out = StringIO()
    call_command("healthsystem_directory_import", "--file", str(CURRENT), stdout=out)
    assert "added 0, changed 0 (renamed 0), retired 0" in out.getvalue()


@responses.activate
def test_command_fetches_the_published_url_through_the_http_client(db: None, settings: Any) -> None:
    settings.FHIRLINK_DIRECTORY_URL = "https://directory.example.org/endpoints.json"
    responses.get(settings.FHIRLINK_DIRECTORY_URL, body=raw(brands_bundle()))
    out = StringIO()
    call_command("healthsystem_directory_import", "--source", "acme", stdout=out)
    assert "2 entries; added 2" in out.getvalue()
    assert DirectoryImport.objects.get().origin == settings.FHIRLINK_DIRECTORY_URL
    responses.get("https://directory.example.org/down.json", status=503)
    with pytest.raises(CommandError, match="cannot fetch the directory"):
        call_command(
            "healthsystem_directory_import", "--url", "https://directory.example.org/down.json"
        )
    with pytest.raises(CommandError, match="cannot read the file"):
        call_command("healthsystem_directory_import", "--file", "/nonexistent/x.json")
