"""Find your hospital in a real headless Chromium, through the /demo/ reference client (issue #22).

The directory is the demo's: `fhirlink.demo.seed` (two connectable sandbox tenants, "Sandbox
Community Hospital" in Kansas City and in Liberty, MO, under one platform app registration,
beside the hand-registered demo tenant) and, when `../shared` holds it, Oracle's published list
of 1,359 Millennium endpoints (not connectable from here: no app registration covers them). A
signed-in patient types their town in the search box, tells the two same-named hospitals apart
by town, connects the Kansas City one (the directory entry becomes a health system only now),
logs in at that sandbox tenant, comes back to /demo/ connected, and the first sync (a real Celery
worker) reads that tenant. A phone-sized screenshot of each step goes to `screenshot_dir`.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from fhirlink.demo import DEMO_CLIENT_ID as SANDBOX_CLIENT_ID
from fhirlink.demo import DIRECTORY_SOURCE, DIRECTORY_TENANTS, seed
from fhirlink.directory.importer import directory_import
from fhirlink.directory.search import directory_search
from fhirlink.models import Connection, ConnectionStatus, DirectoryEntry, HealthSystem
from patientportal.accounts.models import Patient
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_grant
from tests.factories import TEST_PASSWORD, PatientFactory
from tests.fhirlink.test_directory_import import CURRENT
from tests.fixtures.demo_pages import demo_client_at, phone_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

TOWN = "Kansas City"
KANSAS_CITY, LIBERTY = (tenant for tenant, *_ in DIRECTORY_TENANTS)
SYNC_TIMEOUT_MS = 180_000


@pytest.fixture
def demo_directory(live_server: Any, settings: Any, sandbox: Any) -> bool:
    """The demo's seed at this live server and the test's sandbox; Oracle's list when present.
    Returns whether Oracle's list was imported."""
    demo_client_at(settings, live_server.url)
    settings.SANDBOX_BASE_URL = sandbox.origin
    seed(io.StringIO())  # fhirlink's demo data, as `make demo` seeds it
    if CURRENT.exists():
        directory_import(raw=CURRENT.read_bytes(), source="oracle-millennium", origin=CURRENT.name)
        return True
    return False


def test_patient_finds_their_hospital_by_town_and_connects(
    demo_directory: bool,
    live_server: Any,
    sandbox: Any,
    browser: Any,
    screenshot_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    base = live_server.url
    demo = f"{base}/demo/"
    monkeypatch.setenv("PUBLIC_BASE_URL", base)  # the worker runs the first sync
    worker = request.getfixturevalue("celery_worker_process")
    assert worker.proc is not None
    patient: Patient = PatientFactory.create(user__email_verified_at=timezone.now())
    consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=1)
    entries = {e.tenant: e for e in DirectoryEntry.objects.filter(source=DIRECTORY_SOURCE)}
    assert {t: (e.name, e.city, e.state) for t, e in entries.items()} == {
        KANSAS_CITY: ("Sandbox Community Hospital", "Kansas City", "MO"),
        LIBERTY: ("Sandbox Community Hospital", "Liberty", "MO"),
    }
    assert DirectoryEntry.objects.count() == (1361 if demo_directory else 2)
    assert HealthSystem.objects.filter(pk__in=[e.pk for e in entries.values()]).count() == 0

    view = phone_page(browser, screenshot_dir, "directory")
    page, errors, shots, shot = view.page, view.errors, view.shots, view.shot

    def search(text: str) -> list[str]:
        """Type into the search box; wait until the list shows the API's first page for it
        (the box searches as the patient types, so an earlier page may be on show first)."""
        ids = [item.key for item in directory_search(text=text, limit=20)]
        page.get_by_label("Find your hospital (name or town)").fill(text)
        page.wait_for_function(
            """ids => JSON.stringify(Array.from(
                document.querySelectorAll('#hs-list li[data-health-system]'),
                li => li.dataset.healthSystem)) === JSON.stringify(ids)""",
            arg=ids,
        )
        return ids

    def listed() -> list[tuple[str, str, str]]:
        """The search results as shown: name, the place line, and Connect or the badge."""
        rows = []
        for item in page.locator("#hs-list li[data-health-system]").all():
            place = item.locator("p.muted").first
            action = item.locator("button, .badge").first
            rows.append(
                (
                    item.locator(".row-title").inner_text(),
                    place.inner_text() if place.count() else "",
                    action.inner_text(),
                )
            )
        return rows

    try:
        # 1. Sign in (PKCE from the page) and approve the reference client.
        page.goto(demo)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/accounts/login/.*"))
        page.get_by_label("E-mail address").fill(patient.user.email)
        page.get_by_label("Password").fill(TEST_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=It will be able to:")
        page.get_by_role("button", name="Allow").click()
        page.wait_for_selector(f"#me-email:has-text('{patient.user.email}')")
        page.wait_for_selector("#consent-list li[data-purpose=ehr_sync][data-status=granted]")

        # 2. Search by town: the first page of matches, each with its place; only the sandbox
        # tenant there offers Connect (Oracle's entries say they are not available here).
        ids = search(TOWN)
        shown = listed()
        assert [name for name, _, _ in shown] == [
            DirectoryEntry.objects.get(pk=pk).name for pk in ids
        ]
        connectable = [row for row in shown if row[2] == "Connect"]
        assert connectable == [("Sandbox Community Hospital", "Kansas City, MO, 64108", "Connect")]
        assert {action for _, _, action in shown} == (
            {"Connect", "Not available here"} if demo_directory else {"Connect"}
        )
        if demo_directory:
            assert len(shown) == 20
        shot("search-by-town")

        # Same name, two towns: the patient tells them apart by the place line.
        assert search("sandbox community") == [str(entries[t].pk) for t in (KANSAS_CITY, LIBERTY)]
        assert listed() == [
            ("Sandbox Community Hospital", "Kansas City, MO, 64108", "Connect"),
            ("Sandbox Community Hospital", "Liberty, MO, 64068", "Connect"),
        ]
        shot("same-name-two-towns", "#health-systems")

        # 3. Connect the Kansas City one: its own tenant's login page at the sandbox.
        page.get_by_role("button", name="Connect Sandbox Community Hospital, Kansas City").click()
        page.wait_for_url(re.compile(re.escape(f"{sandbox.origin}/") + r".*"))
        assert KANSAS_CITY in page.url
        assert LIBERTY not in page.url
        nancy = sandbox.patients["nancy"]
        page.fill("input[name=username]", nancy.username)
        page.fill("input[name=password]", nancy.password)
        shot("sandbox-login")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#approve-form")
        shot("sandbox-approve")
        page.get_by_role("button", name="Allow").click()

        # 4. Back on /demo/, connected to that tenant; the entry became a health system now,
        # with the platform app's registration; the other town's entry did not.
        page.wait_for_url(demo, timeout=30_000)
        page.wait_for_selector("#connection-list li[data-connection]")
        assert page.url == demo
        assert page.inner_text("#status") == "Connected. Your first sync has started."
        connection = Connection.objects.select_related("health_system").get(patient=patient)
        kansas_city = entries[KANSAS_CITY]
        assert connection.health_system.pk == kansas_city.pk
        assert connection.health_system.fhir_base_url == sandbox.fhir_base_for(KANSAS_CITY)
        assert connection.health_system.client_id == SANDBOX_CLIENT_ID  # the platform app's
        assert connection.last_outcome == "connected"
        kansas_city.refresh_from_db()
        assert kansas_city.health_system_id == kansas_city.pk
        assert not HealthSystem.objects.filter(pk=entries[LIBERTY].pk).exists()
        assert page.inner_text("#connection-list .row-title") == "Sandbox Community Hospital"
        shot("connected")

        # 5. The first sync reads that tenant and succeeds.
        page.wait_for_selector(
            "#connection-list li[data-status=active] [data-sync-status=succeeded]",
            timeout=SYNC_TIMEOUT_MS,
        )
        connection.refresh_from_db()
        assert connection.status == ConnectionStatus.ACTIVE
        assert connection.fhir_patient_id == nancy.fhir_id
        page.wait_for_selector("#summary-body [data-count=vital_signs]")
        shot("synced")

        assert urlsplit(page.url).query == ""
        assert errors == []
    finally:
        page.context.close()
    assert len(shots) == 6
    for name in shots:
        assert (screenshot_dir / name).stat().st_size > 3_000
