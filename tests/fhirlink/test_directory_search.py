"""`GET /api/v1/health-systems`: ranked, typo-tolerant, accent-insensitive search over the
directory and hand registrations; cursor pages; precise 400s; lazy materialisation on connect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirlink.directory.importer import directory_import
from fhirlink.directory.platform import directory_entries_hold_back, platform_app_save
from fhirlink.directory.search import directory_search
from fhirlink.models import (
    Connection,
    DirectoryEntry,
    EndpointHealth,
    EndpointState,
    HealthSystem,
    PlatformApp,
)
from tests.fhirlink import fake_cerner
from tests.fhirlink.test_directory_import import CURRENT, needs_shared

ORGS = [
    # (id, name, city, state, zip, base)
    ("vcu", "VCU Health System Authority", "Richmond", "VA", "23298"),
    ("dbhds", "Virginia Department of Behavioral Health", "Richmond", "VA", "23219"),
    ("tenet-1", "Tenet HealthSystem Medical", "Detroit", "MI", "48201"),
    ("tenet-2", "Tenet HealthSystem Medical", "El Paso", "TX", "79902"),
    ("tenet-3", "Tenet HealthSystem Medical", "Dallas", "TX", "75201"),
    ("montreal", "Hôpital Général de Montréal", "Montréal", "QC", "H3G 1A4"),
    ("stmary", "St. Mary's Hospital", "Richmond Heights", "MO", "63117"),
]


def bundle() -> bytes:
    entries: list[dict[str, Any]] = []
    for key, name, city, state, zip_code in ORGS:
        entries.append(
            {
                "resource": {
                    "resourceType": "Organization",
                    "id": f"O{key}",
                    "name": name,
                    "address": [{"city": city, "state": state, "postalCode": zip_code}],
                    "endpoint": [{"reference": f"Endpoint/{key}"}],
                }
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Endpoint",
                    "id": key,
                    "status": "active",
                    "address": f"https://fhir-myrecord.cerner.com/r4/{key}/",
                }
            }
        )
    return json.dumps({"resourceType": "Bundle", "entry": entries}).encode()


@pytest.fixture
def directory(db: None) -> dict[str, str]:
    directory_import(raw=bundle(), source="oracle-millennium", origin="test.json")
    return {e.tenant: str(e.pk) for e in DirectoryEntry.objects.all()}


def names(text: str = "", state: str = "", near: str = "") -> list[str]:
    found = directory_search(text=text, state=state, near=near)
    return [DirectoryEntry.objects.get(pk=i.pk).tenant for i in found]


def test_search_by_acronym_city_typo_and_accent(directory: dict[str, str]) -> None:
    assert names(text="VCU") == ["vcu"]
    assert names(text="Richmond") == ["stmary", "vcu", "dbhds"]
    assert names(text="richmnd") == ["stmary", "vcu", "dbhds"]  # typo
    assert names(text="vcu helth") == ["vcu"]  # typo, two words
    assert names(text="hopital montreal") == ["montreal"]  # no accents typed
    assert names(text="HÔPITAL") == ["montreal", "stmary"]  # then "hospital", one letter off
    assert names(text="rich") == ["stmary", "vcu", "dbhds"]  # still typing
    assert names(text="zzzz") == []


def test_same_name_told_apart_by_state_and_near(directory: dict[str, str]) -> None:
    assert names(text="tenet") == ["tenet-3", "tenet-1", "tenet-2"]  # then by city
    assert names(text="tenet", state="tx") == ["tenet-3", "tenet-2"]
    assert names(text="tenet", near="79905") == ["tenet-2", "tenet-3", "tenet-1"]
    assert names(state="VA") == ["vcu", "dbhds"]


def test_api_results_pages_and_availability(
    directory: dict[str, str], consenting_patient: Any, api_client_for: Any
) -> None:
    api = api_client_for(consenting_patient, scope="connections")
    response = api.get("/api/v1/health-systems", {"search": "VCU"})
    assert response.status_code == 200
    assert response.json() == {
        "next": None,
        "previous": None,
        "results": [
            {
                "id": directory["vcu"],
                "name": "VCU Health System Authority",
                "city": "Richmond",
                "state": "VA",
                "postal_code": "23298",
                "logo_url": None,
                "available": False,
                "availability": "not_configured",
                "directory": "oracle-millennium",
            }
        ],
    }
    platform_app_save(
        app=PlatformApp(source="oracle-millennium", name="Oracle Health app", client_id="pp")
    )
    EndpointHealth.objects.create(
        fhir_base_url="https://fhir-myrecord.cerner.com/r4/dbhds", state=EndpointState.DOWN
    )
    first = api.get("/api/v1/health-systems", {"search": "richmond", "page_size": 2}).json()
    assert [(r["id"], r["availability"]) for r in first["results"]] == [
        (directory["stmary"], "available"),
        (directory["vcu"], "available"),
    ]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [(r["id"], r["availability"]) for r in second["results"]] == [
        (directory["dbhds"], "down")
    ]
    assert second["next"] is None
    assert second["previous"] is not None


def test_among_equal_matches_those_connectable_here_come_first(
    directory: dict[str, str],
) -> None:
    """A second source's "Tenet HealthSystem Medical" in Detroit, covered by a platform app,
    ties with Oracle's (not connectable here: no app for its source) and comes first."""
    other = json.loads(bundle())
    other["entry"] = other["entry"][4:6]  # tenet-1: Detroit, MI
    directory_import(raw=json.dumps(other).encode(), source="other-vendor", origin="o.json")
    platform_app_save(app=PlatformApp(source="other-vendor", name="Other app", client_id="o"))
    covered = str(DirectoryEntry.objects.get(source="other-vendor").pk)

    found = directory_search(text="tenet")
    assert [i.pk for i in found] == [
        covered,
        directory["tenet-3"],
        directory["tenet-1"],
        directory["tenet-2"],
    ]
    assert [i.pk for i in directory_search(state="MI")] == [covered, directory["tenet-1"]]
    # A better match still ranks first, whether connectable or not.
    assert directory_search(text="tenet el paso", limit=1)[0].pk == directory["tenet-2"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "Virginia"}, "state"),
        ({"near": "2329"}, "near"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJvIjogLTF9"}, "cursor"),  # {"o": -1}
        ({"page_size": "0"}, "page_size"),
        ({"search": "x" * 201}, "search"),
        ({"q": "vcu"}, "q"),
    ],
)
def test_api_rejects_bad_input_precisely(
    db: None, consenting_patient: Any, api_client_for: Any, query: dict[str, str], field: str
) -> None:
    api = api_client_for(consenting_patient, scope="connections")
    response = api.get("/api/v1/health-systems", query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_failed"
    assert list(body["errors"]) == [field]


def test_api_needs_connections_scope(
    db: None, consenting_patient: Any, api_client_for: Any
) -> None:
    api = api_client_for(consenting_patient, scope="records:read")
    response = api.get("/api/v1/health-systems")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


def test_hand_registrations_are_found_and_held_back_entries_are_not(
    directory: dict[str, str], health_system: HealthSystem
) -> None:
    assert [i.key for i in directory_search(text="test health")] == [str(health_system.pk)]
    directory_entries_hold_back(entry_ids=[directory["vcu"]], held_back=True)
    assert names(text="VCU") == []
    directory_entries_hold_back(entry_ids=[directory["vcu"]], held_back=False)
    assert names(text="VCU") == ["vcu"]


def test_picking_an_entry_creates_its_health_system_once_with_the_platform_app(
    db: None, consenting_patient: Any, api_client_for: Any, ehr: Any
) -> None:
    """The fake Cerner answers at one base: an entry published with that base connects."""
    raw = json.dumps(
        {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Organization",
                        "id": "Ofake",
                        "name": "Fake Cerner Hospital",
                        "address": [{"city": "Kansas City", "state": "MO", "postalCode": "64117"}],
                        "endpoint": [{"reference": "Endpoint/fake"}],
                    }
                },
                {
                    "resource": {
                        "resourceType": "Endpoint",
                        "id": "fake",
                        "address": fake_cerner.FHIR_BASE,
                    }
                },
            ],
        }
    ).encode()
    directory_import(raw=raw, source="oracle-millennium", origin="fake.json")
    entry = DirectoryEntry.objects.get()
    api = api_client_for(consenting_patient, scope="connections")
    refused = api.post("/api/v1/connections", {"health_system": str(entry.pk)})
    assert refused.status_code == 404
    assert refused.json()["code"] == "health_system_not_found"
    assert HealthSystem.objects.count() == 0
    assert Connection.objects.count() == 0

    platform_app_save(
        app=PlatformApp(
            source="oracle-millennium",
            name="Oracle Health app",
            client_id="platform-client",
            resources=["Patient", "Observation"],
        )
    )
    for _ in range(2):
        started = api.post("/api/v1/connections", {"health_system": str(entry.pk)})
        assert started.status_code == 201, started.json()
    health_system = HealthSystem.objects.get()
    assert health_system.pk == entry.pk
    assert (health_system.client_id, health_system.resources) == (
        "platform-client",
        ["Patient", "Observation"],
    )
    assert health_system.discovery is not None  # discovery ran then, and is cached
    entry.refresh_from_db()
    assert entry.health_system_id == entry.pk
    assert Connection.objects.filter(health_system=health_system).count() == 1
    # The platform app's settings follow to the health systems created from it.
    app = PlatformApp.objects.get()
    app.client_id = "platform-client-2"
    assert platform_app_save(app=app) == 1
    assert HealthSystem.objects.get().client_id == "platform-client-2"


@needs_shared
def test_vcu_and_richmond_find_vcu_in_oracles_list(db: None) -> None:
    directory_import(raw=CURRENT.read_bytes(), source="oracle-millennium", origin=CURRENT.name)
    vcu = DirectoryEntry.objects.get(name="VCU Health System Authority")
    assert directory_search(text="VCU", limit=1)[0].pk == str(vcu.pk)
    richmond = [i.pk for i in directory_search(text="Richmond", state="VA")]
    assert str(vcu.pk) in richmond[:2]
    assert directory_search(text="vcu helth systm", limit=1)[0].pk == str(vcu.pk)
    assert len(directory_search()) == 1359
