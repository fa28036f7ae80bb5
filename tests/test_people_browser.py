"""Whose record, in a real headless Chromium through the /demo/ reference client (issue #20).

A parent with a portal account connects her own record at the generic SMART 2.x sandbox
(`parentsandbox` picks herself in the server's patient picker), then connects again and picks
her child. The reference client lists two connections, the child's as "Someone you manage"; she
names it "Emma" (her child) and saves; the "Whose record" picker switches the summary between
her record and Emma's, each with exactly the demographics and counts the sandbox serves for that
patient, never the two mixed; disconnecting Emma's record while it is on show leaves her own
on show and whole. Phone-sized screenshots go to `screenshot_dir` (`people-NN-*.png`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.utils import timezone

from fhirlink.models import Connection, ConnectionStatus, HealthSystem, SyncedResource
from fhirlink.services.people import connection_label
from patientportal.accesslog.models import AccessEvent
from patientportal.accounts.models import Patient, User
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_grant
from tests.fhirlink.test_sync_engine import download_all
from tests.fixtures.demo_pages import phone_page
from tests.test_journey_browser import expected_counts, sandbox_origin, world_setup

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

EMAIL = "paula.parent@example.test"
PASSWORD = "harbour-lilac-compass-48"
HEALTH_SYSTEM = "Generic Health"
SYNC_TIMEOUT_MS = 180_000
# What the sandbox serves for the two patients (fhirlink/sandbox/conf.py), as the summary shows a
# Patient's official name.
PARENT = {"fhir_id": "12800105", "name": "PROXY, PAULA", "born": "1984-03-09"}
CHILD = {"fhir_id": "12800106", "name": "PROXY, PENNY", "born": "2015-07-21"}
COUNTS = (
    "active_conditions",
    "active_medications",
    "allergies",
    "vital_signs",
    "lab_results",
    "immunizations",
    "encounters",
    "documents",
)


@pytest.fixture
def world(live_server: Any, settings: Any, generic_sandbox: Any) -> HealthSystem:
    return world_setup(
        live_server, settings, generic_sandbox, slug="generic-people", name=HEALTH_SYSTEM
    )


@pytest.fixture
def parent_account(world: HealthSystem) -> Patient:
    """Paula's portal account (e-mail confirmed), who has agreed to syncing her records."""
    user = User.objects.create_user(
        email=EMAIL, password=PASSWORD, first_name="Paula", email_verified_at=timezone.now()
    )
    patient = Patient.objects.create(user=user)
    consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    return patient


def test_a_parent_connects_her_childs_record_labels_it_and_reads_each_apart(
    world: HealthSystem,
    parent_account: Patient,
    live_server: Any,
    generic_sandbox: Any,
    browser: Any,
    screenshot_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    sandbox = generic_sandbox
    patient = parent_account
    base = live_server.url
    demo = f"{base}/demo/"
    monkeypatch.setenv("PUBLIC_BASE_URL", base)  # the worker's first syncs run these settings
    worker = request.getfixturevalue("celery_worker_process")
    assert worker.proc is not None

    view = phone_page(browser, screenshot_dir, "people")
    page, errors, shots, shot = view.page, view.errors, view.shots, view.shot

    def connect(pick: str, name: str) -> None:
        """Connect at the generic sandbox as parentsandbox, choosing `pick` in its picker."""
        page.get_by_role("button", name=f"Connect {HEALTH_SYSTEM}").click()
        page.wait_for_url(re.compile(re.escape(sandbox_origin(sandbox)) + r"/.*"))
        login = sandbox.patients["parent"]
        page.fill("input[name=username]", login.username)
        page.fill("input[name=password]", login.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#pick-form")
        options = page.locator("#pick-form label")
        assert [t.strip() for t in options.all_inner_texts()] == [
            "Paula Proxy (yourself)",
            "Penny Proxy (child)",
        ]
        page.check(f"#pick-form input[name=patient][value={pick}]")
        shot(f"sandbox-pick-{name}")
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("#approve-form")
        heading = page.inner_text("h1")
        if pick == "child":
            assert heading == "Allow portal-journey to access Penny Proxy's record?"
        else:
            assert heading == "Allow portal-journey to access your record?"
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(demo, timeout=30_000)

    def wait_synced(connection: Connection) -> None:
        page.wait_for_selector(
            f"#connection-list li[data-connection='{connection.pk}'][data-status=active] "
            "[data-sync-status=succeeded]",
            timeout=SYNC_TIMEOUT_MS,
        )

    def summary() -> dict[str, Any]:
        body = page.locator("#summary-body")
        return {
            "name": body.locator("[data-field=name]").inner_text(),
            "born": body.locator("[data-field=birth_date]").inner_text(),
            "counts": {n: int(body.locator(f"[data-count={n}] .n").inner_text()) for n in COUNTS},
        }

    def show_person(value: str, name: str) -> None:
        """Pick whose record in the summary's picker; wait for the summary and the timeline of
        that person (?person=, none for her own) and the summary showing them."""

        def read_of(kind: str) -> Any:
            def match(response: Any) -> bool:
                url = urlsplit(response.url)
                person = dict(parse_qsl(url.query)).get("person", "self")
                return bool(url.path == f"/api/v1/records/{kind}" and person == value)

            return match

        with (
            page.expect_response(read_of("summary")) as summary_read,
            page.expect_response(read_of("timeline")) as timeline_read,
        ):
            page.select_option("#person-select", value)
        assert (summary_read.value.status, timeline_read.value.status) == (200, 200)
        page.wait_for_selector(f"#summary-body [data-field=name]:text-is('{name}')")

    try:
        # Signed in through this server (PKCE), with the sync consent already given.
        page.goto(demo)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/accounts/login/.*"))
        page.get_by_label("E-mail address").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Allow").click()
        page.wait_for_selector(f"#me-email:has-text('{EMAIL}')")

        # 1. Her own record: she picks herself at the health system.
        connect("parent", "herself")
        page.wait_for_selector("#connection-list li[data-connection]")
        assert page.inner_text("#status") == "Connected. Your first sync has started."
        own = Connection.objects.get(patient=patient)
        assert (own.fhir_patient_id, own.fhir_user, own.relationship) == (
            PARENT["fhir_id"],
            f"{sandbox.fhir_base}/Patient/{PARENT['fhir_id']}",
            "self",
        )
        wait_synced(own)
        # Only her own record so far: the summary has no "Whose record" picker.
        page.wait_for_selector("#summary-body [data-field=name]")
        assert page.locator("#person-picker").is_hidden()
        shot("own-record")

        # 2. Again, choosing her child in the picker: a second connection, someone she manages.
        connect("child", "child")
        page.wait_for_selector("#connection-list li[data-connection] >> nth=1")
        assert page.inner_text("#status") == (
            "Connected a record you manage. Give it a name below. Its first sync has started."
        )
        child = Connection.objects.exclude(pk=own.pk).get(patient=patient)
        # The parent signed in (fhirUser is hers); the token's patient is the child.
        assert (child.fhir_patient_id, child.fhir_user, child.relationship) == (
            CHILD["fhir_id"],
            f"{sandbox.fhir_base}/Patient/{PARENT['fhir_id']}",
            "managed",
        )
        assert child.health_system_id == own.health_system_id == world.pk
        wait_synced(child)
        items = page.locator("#connection-list li[data-connection]")
        assert items.count() == 2
        own_item = page.locator(f"#connection-list li[data-connection='{own.pk}']")
        child_item = page.locator(f"#connection-list li[data-connection='{child.pk}']")
        assert own_item.locator("[data-field=person]").inner_text() == "Your own record"
        assert child_item.locator("[data-field=person]").inner_text() == "Someone you manage"
        # A record of her own has no name or relationship to edit; the managed one has.
        assert own_item.locator(".person-edit").count() == 0
        assert child_item.locator(".person-edit").count() == 1
        shot("two-connections", "#connections")

        # 3. She names it: Emma, her child.
        child_item.get_by_label("Name", exact=True).fill("Emma")
        child_item.get_by_label("Relationship", exact=True).select_option("child")
        child_item.get_by_role("button", name="Save").click()
        child_item = page.locator(f"#connection-list li[data-connection='{child.pk}']")
        page.wait_for_selector(
            f"#connection-list li[data-connection='{child.pk}'] "
            "[data-field=person]:text-is('Emma · Your child')"
        )
        assert page.inner_text("#status") == f"Saved: Emma · Your child at {HEALTH_SYSTEM}."
        child.refresh_from_db()
        assert child.relationship == "child"
        assert connection_label(child) == "Emma"
        assert child_item.get_by_label("Name", exact=True).input_value() == "Emma"
        assert child_item.get_by_label("Relationship", exact=True).input_value() == "child"
        shot("labelled", "#connections")

        # 4. The summary's picker: her record and Emma's, each exactly as the sandbox serves it.
        served_own = download_all(own)
        served_child = download_all(child)
        assert {(t, i) for t, i in served_own if t == "Patient"} == {("Patient", PARENT["fhir_id"])}
        assert {(t, i) for t, i in served_child if t == "Patient"} == {
            ("Patient", CHILD["fhir_id"])
        }
        assert not set(served_own) & set(served_child)  # no resource belongs to both
        expected_own = expected_counts(served_own)
        expected_child = expected_counts(served_child)
        assert expected_own["vital_signs"] > 0
        assert expected_child["vital_signs"] > 0

        picker = page.locator("#person-picker")
        assert picker.is_visible()
        options = page.locator("#person-select option")
        assert options.all_inner_texts() == [
            "Your own record",
            f"Emma · Your child ({HEALTH_SYSTEM})",
        ]
        assert page.locator("#person-select option").nth(1).get_attribute("value") == str(child.pk)
        assert page.input_value("#person-select") == "self"
        assert summary() == {
            "name": PARENT["name"],
            "born": PARENT["born"],
            "counts": expected_own,
        }
        shot("summary-own", "#summary")

        show_person(str(child.pk), CHILD["name"])
        assert summary() == {
            "name": CHILD["name"],
            "born": CHILD["born"],
            "counts": expected_child,
        }
        page.wait_for_selector("#timeline-list li[data-type]")
        shot("summary-emma", "#summary")
        shot("emma-full")

        show_person("self", PARENT["name"])
        assert summary() == {
            "name": PARENT["name"],
            "born": PARENT["born"],
            "counts": expected_own,
        }

        # The store keeps each person's rows on their own connection.
        for connection, fhir_id in ((own, PARENT["fhir_id"]), (child, CHILD["fhir_id"])):
            patients = SyncedResource.objects.filter(
                connection=connection, resource_type="Patient", is_reference=False
            )
            assert list(patients.values_list("fhir_id", flat=True)) == [fhir_id]
        # Every summary and timeline the page read says whose record it was, and served rows of
        # that person's connection only (the access log names each row it served).
        connection_of = {
            str(pk): connection_id
            for pk, connection_id in SyncedResource.objects.filter(
                patient_id=patient.pk
            ).values_list("pk", "connection_id")
        }
        served_to: dict[str, set[Any]] = {}
        reads = AccessEvent.objects.filter(
            patient_id=patient.pk, actor_kind="patient", resource_type__in=["summary", "timeline"]
        ).order_by("seq")
        for event in reads:
            person = served_to.setdefault(event.query["person"], set())
            person.update(connection_of[str(row)] for row in event.resource_ids)
        assert served_to == {"self": {own.pk}, str(child.pk): {child.pk}}
        assert [e.query["person"] for e in reads if e.resource_type == "summary"][-2:] == [
            str(child.pk),
            "self",
        ]

        # 5. She disconnects Emma's record (and erases it) while it is on show: the summary goes
        # back to her own record, which stays whole; her data key stays (she has a connection).
        own_rows = SyncedResource.objects.filter(connection=own).count()
        show_person(str(child.pk), CHILD["name"])
        child_item = page.locator(f"#connection-list li[data-connection='{child.pk}']")
        child_item.get_by_role("button", name="Disconnect…").click()
        with page.expect_response(
            lambda r: (
                urlsplit(r.url).path == "/api/v1/records/summary"
                and "person=" not in urlsplit(r.url).query
            )
        ):
            child_item.get_by_role("button", name="Yes, disconnect and erase").click()
        page.wait_for_selector("#receipt:visible")
        receipt = page.locator("#receipt")
        assert receipt.locator("[data-field=person]").inner_text() == "Emma · Your child"
        assert receipt.locator("[data-field=revocation]").inner_text() == "revoked"
        assert receipt.locator("[data-field=key]").inner_text() == "no"
        assert int(receipt.locator("[data-field=erased]").inner_text()) > 0
        page.wait_for_selector("#person-picker", state="hidden")
        assert page.locator("#summary-empty").is_hidden()
        assert summary() == {
            "name": PARENT["name"],
            "born": PARENT["born"],
            "counts": expected_own,
        }
        assert page.locator("#connection-list li[data-connection]").count() == 1
        assert page.locator("#error").is_hidden()
        shot("emma-disconnected")

        own.refresh_from_db()
        child.refresh_from_db()
        assert (own.status, child.status) == (
            ConnectionStatus.ACTIVE,
            ConnectionStatus.DISCONNECTED,
        )
        assert not SyncedResource.objects.filter(connection=child).exists()
        assert SyncedResource.objects.filter(connection=own).count() == own_rows
        assert errors == []
    finally:
        page.context.close()
    assert len(shots) == 9
    for name in shots:
        assert (screenshot_dir / name).stat().st_size > 3_000
