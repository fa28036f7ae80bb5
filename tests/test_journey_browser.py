"""The whole patient journey in a real headless Chromium, through the /demo/ reference client,
against each sandbox profile (Cerner's, and the generic SMART App Launch 2.x server: issuer on
another origin, wildcard-only scopes_supported, iss on the redirect, scopes enforced on every read).

Sign up (the verification link comes from Django's locmem outbox), sign in through this
server's /o/authorize/ with PKCE from the page, give the consents, connect the sandbox health
system, log in at the sandbox and untick one scope on its approval page, come back to /demo/,
wait for the first sync in a real Celery worker process, check the summary against what the
sandbox serves for that patient and the granted types, find the access-log entries, and
disconnect with purge. A phone-sized screenshot of each step goes to `screenshot_dir`
(`journey-<profile>-NN-<step>.png`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core import mail

from fhirlink.models import Connection, ConnectionStatus, HealthSystem, SyncedResource
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_register
from patientportal.accesslog.models import AccessEvent
from patientportal.accounts.models import Patient
from tests.fhirlink.test_sync_engine import download_all
from tests.fixtures.demo_pages import demo_client_at, phone_page
from tests.patientportal.accounts_helpers import run_account_emails_inline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

SMART_CLIENT_ID = "portal-journey"
RESOURCES = [
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
]
UNTICKED = "Immunization"
EMAIL = "journey.patient@example.test"
PASSWORD = "lantern-meadow-quartz-71"
SYNC_TIMEOUT_MS = 180_000


def _code(concept: dict[str, Any] | None) -> str:
    codings = (concept or {}).get("coding") or [{}]
    return str(codings[0].get("code") or "")


def _entered_in_error(resource: dict[str, Any]) -> bool:
    return "entered-in-error" in {
        resource.get("status"),
        _code(resource.get("verificationStatus")),
        _code(resource.get("clinicalStatus")),
    }


def _categories(resource: dict[str, Any]) -> set[str]:
    cats = resource.get("category") or []
    if isinstance(cats, dict):
        cats = [cats]
    return {c.get("code") for cat in cats for c in (cat.get("coding") or [])}


def expected_counts(served: dict[tuple[str, str], dict[str, Any]]) -> dict[str, int]:
    """The summary's counts, computed from the raw FHIR the sandbox serves for the connection."""
    counts: Counter[str] = Counter()
    for (rtype, _id), resource in served.items():
        if _entered_in_error(resource):
            continue
        if rtype == "Condition" and _code(resource.get("clinicalStatus")) in {
            "active",
            "recurrence",
            "relapse",
        }:
            counts["active_conditions"] += 1
        elif rtype == "MedicationRequest" and resource.get("status") in {"active", "on-hold"}:
            counts["active_medications"] += 1
        elif rtype == "AllergyIntolerance" and _code(resource.get("clinicalStatus")) not in {
            "inactive",
            "resolved",
        }:
            counts["allergies"] += 1
        elif rtype == "Observation" and "vital-signs" in _categories(resource):
            counts["vital_signs"] += 1
        elif rtype == "Observation" and "laboratory" in _categories(resource):
            counts["lab_results"] += 1
        elif rtype == "Immunization":
            counts["immunizations"] += 1
        elif rtype == "Encounter":
            counts["encounters"] += 1
        elif rtype == "DocumentReference":
            counts["documents"] += 1
    names = (
        "active_conditions",
        "active_medications",
        "allergies",
        "vital_signs",
        "lab_results",
        "immunizations",
        "encounters",
        "documents",
    )
    return {name: counts[name] for name in names}


def world_setup(
    live_server: Any,
    settings: Any,
    sandbox: Any,
    *,
    slug: str = "sandbox-journey",
    name: str = "Sandbox Health",
) -> HealthSystem:
    """This server at live_server.url (its PUBLIC_BASE_URL), the reference client registered at
    it, and `sandbox` (either profile) as the EHR of a health system `slug`."""
    demo_client_at(settings, live_server.url)
    # The health system's own redirect URI (/fhirlink/callback/<slug>), at the sandbox.
    sandbox.register_client(SMART_CLIENT_ID, health_system_redirect_uri(slug))
    hs, _ = health_system_register(
        slug=slug,
        name=name,
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id=SMART_CLIENT_ID,
        client_auth="public",
        scope_syntax="v2",
        resources=RESOURCES,
        enabled=True,
    )
    return hs


@pytest.fixture
def world(live_server: Any, settings: Any, any_sandbox: Any) -> HealthSystem:
    """The journey's world against each sandbox profile in turn."""
    return world_setup(live_server, settings, any_sandbox)


def sandbox_origin(sandbox: Any) -> str:
    """Where the patient logs in: the authorize endpoint's origin (the generic profile's issuer
    is on another origin than its FHIR base)."""
    parts = urlsplit(sandbox.authorize_base)
    return f"{parts.scheme}://{parts.netloc}"


def test_patient_journey_in_chromium(
    world: HealthSystem,
    live_server: Any,
    any_sandbox: Any,
    browser: Any,
    screenshot_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    sandbox = any_sandbox
    base = live_server.url
    demo = f"{base}/demo/"
    run_account_emails_inline(monkeypatch)  # the verification e-mail lands in mail.outbox
    # The worker runs this server's settings too (the first sync runs in it).
    monkeypatch.setenv("PUBLIC_BASE_URL", base)
    worker = request.getfixturevalue("celery_worker_process")
    assert worker.proc is not None

    view = phone_page(browser, screenshot_dir, f"journey-{sandbox.profile}")
    page, errors, shots, shot = view.page, view.errors, view.shots, view.shot

    try:
        # 1. The page, signed out.
        page.goto(demo)
        page.wait_for_selector("#sign-in:visible")
        shot("signed-out")

        # 2. Sign up from the sign-in page (the authorize step sends us there).
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/accounts/login/.*"))
        page.get_by_role("link", name="New here? Create an account").click()
        page.wait_for_url(re.compile(r".*/accounts/signup/.*"))
        page.get_by_label("E-mail address").fill(EMAIL)
        page.get_by_label("First name (optional)").fill("Journey")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        shot("signup")
        page.get_by_role("button", name="Create account").click()
        page.wait_for_selector("text=Check your e-mail")
        shot("signup-done")

        # 3. Open the verification link from the e-mail.
        assert [m.to for m in mail.outbox] == [[EMAIL]]
        link = re.search(r"(https?://\S+/accounts/verify/\S+/)", str(mail.outbox[0].body))
        assert link is not None
        assert link.group(1).startswith(base)
        page.goto(link.group(1))
        page.wait_for_selector("text=your e-mail address is confirmed")
        shot("email-verified")

        # 4. Sign in with PKCE from the page, approve, come back with a code, exchange it.
        page.goto(demo)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/accounts/login/.*"))
        authorize_next = page.url
        assert "code_challenge_method%3DS256" in authorize_next
        assert "code_challenge%3D" in authorize_next
        page.get_by_label("E-mail address").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=It will be able to:")
        shot("authorize")
        page.get_by_role("button", name="Allow").click()
        page.wait_for_selector("#me-email:has-text('journey.patient@example.test')")
        # The code is gone from the address bar; the tokens are in this tab's session storage.
        assert page.url == demo
        stored = page.evaluate("window.sessionStorage.getItem('demo.tokens')")
        assert stored
        assert '"access"' in stored
        assert page.evaluate("window.sessionStorage.getItem('demo.pkce')") is None
        patient = Patient.objects.get(user__email=EMAIL)
        shot("signed-in")

        # 5. Consents. Connecting first is refused: the page shows the API error's code/message.
        page.wait_for_selector("#consent-list li[data-purpose=ehr_sync]")
        page.get_by_role("button", name="Connect Sandbox Health").click()
        page.wait_for_selector("#error:visible .error-code")
        assert page.inner_text("#error .error-code") == "consent_required"
        assert not Connection.objects.filter(patient=patient).exists()
        # Chromium reports the refused request itself on the console; nothing else is there.
        assert [e for e in errors if "/api/v1/connections" not in e] == []
        errors.clear()
        for purpose in ("ehr_sync", "care_team_access"):
            page.click(f"#consent-list li[data-purpose={purpose}] button")
            page.wait_for_selector(f"#consent-list li[data-purpose={purpose}][data-status=granted]")
        assert page.locator("#error").is_hidden()
        shot("consents")

        # 6. Connect: the sandbox's login page, then its approval page with one scope unticked.
        page.get_by_role("button", name="Connect Sandbox Health").click()
        page.wait_for_url(re.compile(re.escape(sandbox_origin(sandbox)) + r"/.*"))
        nancy = sandbox.patients["nancy"]
        page.fill("input[name=username]", nancy.username)
        page.fill("input[name=password]", nancy.password)
        shot("sandbox-login")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#approve-form")
        # Only the generic server asks which Observation categories to share (granular v2
        # scopes); Cerner's approval page lists the scopes alone. All stay ticked here.
        categories = page.locator("#approve-form input[name^='category:']")
        if sandbox.profile == "generic":
            assert categories.count() == 3
        else:
            assert categories.count() == 0
        boxes = page.locator(f"#approve-form input[name=scope][value^='patient/{UNTICKED}.']")
        assert boxes.count() >= 1
        for index in range(boxes.count()):
            boxes.nth(index).uncheck()
        shot("sandbox-approve-unticked")
        page.get_by_role("button", name="Allow").click()

        # 7. Back on /demo/ (via /fhirlink/callback/sandbox-journey; the start URL bound the
        # launch to this browser): the URL is cleaned, the outcome confirmed with the API.
        page.wait_for_url(demo, timeout=30_000)
        page.wait_for_selector("#connection-list li[data-connection]")
        assert page.url == demo
        assert "Connected, with some record types not shared" in page.inner_text("#status")
        connection = Connection.objects.get(patient=patient)
        assert connection.fhir_patient_id == sandbox.patients["nancy"].fhir_id
        assert connection.relationship == "self"
        assert connection.oidc_issuer == sandbox.issuer
        if sandbox.profile == "generic":
            # Its scopes_supported lists wildcards only: still asked per type, never a wildcard.
            assert not any("*" in s for s in connection.requested_scopes.split())
            assert "patient/Practitioner.rs" in connection.requested_scopes.split()
        assert UNTICKED in connection.declined_resources
        assert UNTICKED not in connection.granted_resources
        assert page.inner_text("#connection-list .declined") == ", ".join(
            connection.declined_resources
        )
        shot("syncing")
        page.wait_for_selector(
            "#connection-list li[data-status=active] [data-sync-status=succeeded]",
            timeout=SYNC_TIMEOUT_MS,
        )
        page.wait_for_selector("#summary-body [data-count=vital_signs]")
        page.wait_for_selector("#log-rows li[data-action=sync_write]")
        shot("synced-summary")

        # 8. The summary's counts equal what the sandbox serves for the granted types.
        served = download_all(connection)
        assert served
        assert {rtype for rtype, _ in served} <= set(connection.granted_resources)
        expected = expected_counts(served)
        assert expected["immunizations"] == 0  # unticked: never requested, never synced
        assert expected["vital_signs"] > 0
        assert expected["encounters"] > 0
        shown = {
            name: int(page.inner_text(f"#summary-body [data-count={name}] .n")) for name in expected
        }
        assert shown == expected
        assert not SyncedResource.objects.filter(patient_id=patient.pk, resource_type=UNTICKED)
        assert page.inner_text("#summary-body [data-field=name]").strip()

        # The trend chart is drawn (inline SVG) and the timeline is filled.
        page.wait_for_selector("#trend-chart svg.chart path")
        assert page.locator("#trend-chart svg.chart circle").count() > 1
        assert page.locator("#timeline-list li[data-type]").count() > 0
        shot("trend-chart", "#trend")
        shot("timeline", "#timeline")

        # 9. The access log shows the sync and the patient's own reads.
        page.locator("#access-log").scroll_into_view_if_needed()
        page.click("#log-refresh")
        page.wait_for_selector("#log-rows li[data-action=read][data-actor-kind=patient]")
        assert page.locator("#log-rows li[data-action=sync_write]").count() >= 1
        events = AccessEvent.objects.filter(patient_id=patient.pk)
        assert events.filter(action="sync_write", actor_kind="system").exists()
        assert events.filter(action="connect").exists()
        assert events.filter(action="read", actor_kind="patient").exists()
        shot("access-log", "#access-log")

        # 10. Disconnect with purge: the receipt.
        before = SyncedResource.objects.filter(connection=connection).count()
        assert before > 0
        item = page.locator(f"#connection-list li[data-connection='{connection.pk}']")
        item.get_by_role("button", name="Disconnect…").click()
        item.get_by_role("button", name="Yes, disconnect and erase").click()
        page.wait_for_selector("#receipt:visible")
        receipt = page.locator("#receipt")
        assert receipt.locator("[data-field=tokens]").inner_text() == "yes"
        assert receipt.locator("[data-field=key]").inner_text() == "yes"
        assert receipt.locator("[data-field=revocation]").inner_text() == "revoked"
        assert int(receipt.locator("[data-field=erased]").inner_text()) > 0
        page.wait_for_selector("#summary-empty:visible")
        shot("disconnected-receipt", "#connections")
        shot("disconnected")
        connection.refresh_from_db()
        assert connection.status == ConnectionStatus.DISCONNECTED
        assert not SyncedResource.objects.filter(patient_id=patient.pk).exists()
        assert AccessEvent.objects.filter(patient_id=patient.pk, action="disconnect").exists()

        # No token, code or connection result ever stayed in the address bar.
        assert urlsplit(page.url).query == ""
        assert errors == []
    finally:
        page.context.close()
    assert len(shots) == 16
    for name in shots:
        assert (screenshot_dir / name).stat().st_size > 3_000
