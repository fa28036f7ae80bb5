"""The sandbox clock and the changes it makes, for incremental sync."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from fhirlink.sandbox.fhir.data import iso

pytestmark = pytest.mark.integration


def _all(launch, url):
    entries = []
    while url:
        bundle = launch.get(url).json()
        entries += bundle["entry"]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return entries


def test_changes_show_up_in_a_last_updated_search(sandbox, smart):
    before = iso(int(sandbox.now().timestamp()) - 1)
    sandbox.advance_clock(days=1)
    hugo = smart.launch(patient="hugo")  # after moving the clock: tokens live 570 s

    changes = sandbox.make_changes("hugo", new=3, updated=2, entered_in_error=1)
    entries = _all(
        hugo,
        f"{sandbox.fhir_base}/Observation?patient={hugo.token['patient']}&_lastUpdated=gt{before}&_count=200",
    )

    ids = sorted(e["resource"]["id"] for e in entries)
    assert ids == sorted(c.id for c in changes)
    by_id = {e["resource"]["id"]: e["resource"] for e in entries}
    for change in changes:
        resource = by_id[change.id]
        if change.kind == "entered-in-error":
            assert resource["status"] == "entered-in-error"
            assert resource["dataAbsentReason"]["coding"][0]["code"] == "masked"
        else:
            assert resource["meta"]["lastUpdated"] == change.last_updated
            assert resource["meta"]["versionId"] == ("1" if change.kind == "new" else "2")


def test_new_observations_come_first_in_the_default_search(sandbox, smart):
    sandbox.advance_clock(days=2)
    hugo = smart.launch(patient="hugo")
    changes = sandbox.make_changes("hugo", new=2)

    bundle = hugo.get(
        f"{sandbox.fhir_base}/Observation?patient={hugo.token['patient']}&_count=5"
    ).json()

    non_social = [
        e["resource"]["id"] for e in bundle["entry"] if not e["resource"]["id"].startswith("SH-")
    ]
    assert set(non_social[:2]) == {c.id for c in changes}


def test_changes_are_per_tenant(sandbox, smart):
    nancy = smart.launch(patient="nancy")
    sandbox.create_tenant("11111111-2222-3333-4444-555555555555")
    before = iso(int(sandbox.now().timestamp()) - 1)

    sandbox.make_changes(
        "nancy", new=1, tenant="11111111-2222-3333-4444-555555555555", types=["Condition"]
    )

    bundle = nancy.get(
        f"{sandbox.fhir_base}/Condition?patient={nancy.token['patient']}&_lastUpdated=gt{before}"
    ).json()
    assert bundle["entry"] == []


def test_advance_command(sandbox, smart, capsys):
    start = sandbox.now()

    call_command(
        "sandbox_advance",
        "--days",
        "3",
        "--patient",
        "nancy",
        "--new",
        "1",
        "--types",
        "Condition,Immunization",
    )

    out = capsys.readouterr().out.splitlines()
    assert (sandbox.now() - start).days == 3
    assert out[1].startswith("new")
    assert "Condition/" in out[1]
    assert out[2].startswith("new")
    assert "Immunization/" in out[2]
    nancy = smart.launch(patient="nancy")
    rid = out[1].split("Condition/")[1]
    assert nancy.get(f"{sandbox.fhir_base}/Condition/{rid}").status_code == 200
