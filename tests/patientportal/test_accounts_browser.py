"""The sign-in pages in a real Chromium at a phone's size: login, approval, redirect, API call."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from patientportal.accounts.models import Patient
from tests.factories import TEST_PASSWORD
from tests.patientportal.accounts_helpers import (
    CLIENT_ID,
    UNIVERSAL_LINK_REDIRECT_URI,
    authorize_query,
    make_pkce,
    run_account_emails_inline,
    token_request,
    verified_patient,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def account_emails(monkeypatch):
    return run_account_emails_inline(monkeypatch)


PHONE = {"width": 390, "height": 844}


def test_patient_signs_in_and_approves_in_the_in_app_browser(
    live_server, browser, mobile_app, screenshot_dir
):
    patient = verified_patient(user__email="nancy@example.test")
    pkce = make_pkce()
    authorize = authorize_query(
        pkce=pkce, redirect_uri=UNIVERSAL_LINK_REDIRECT_URI, scope="account records:read"
    )
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    page = context.new_page()
    captured: list[str] = []

    def universal_link(route):  # the app would open here; the test just records the URL
        captured.append(route.request.url)
        route.fulfill(status=200, body="app opened")

    page.route("https://app.patientportal.example/**", universal_link)
    try:
        page.goto(f"{live_server.url}{authorize}")
        assert urlsplit(page.url).path == "/accounts/login/"
        page.screenshot(path=str(screenshot_dir / "accounts-login.png"), full_page=True)
        page.get_by_label("E-mail address").fill("nancy@example.test")
        page.get_by_label("Password").fill(TEST_PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        page.wait_for_selector("text=It will be able to:")
        heading = page.get_by_role("heading", level=1).inner_text()
        assert heading == "Allow Patient Portal mobile to use your account?"
        assert page.get_by_text("Your health records").is_visible()
        page.screenshot(path=str(screenshot_dir / "accounts-authorize.png"), full_page=True)
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url("https://app.patientportal.example/**")
    finally:
        context.close()

    assert len(captured) == 1
    params = {k: v[0] for k, v in parse_qs(urlsplit(captured[0]).query).items()}
    assert captured[0].startswith(UNIVERSAL_LINK_REDIRECT_URI + "?")
    assert params["state"] == "state-123"
    tokens = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=UNIVERSAL_LINK_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    ).json()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    me = api.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["id"] == str(patient.pk)


def test_signup_page_fits_a_phone_and_labels_every_field(live_server, browser, screenshot_dir):
    context = browser.new_context(viewport=PHONE, is_mobile=True, timezone_id="Europe/Paris")
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/signup/")
        for label in ("E-mail address", "Password", "Repeat the password"):
            assert page.get_by_label(label, exact=True).is_visible()
        # Nothing wider than the screen.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        page.get_by_label("E-mail address").fill("ada@example.test")
        page.get_by_label("Password", exact=True).fill("short")
        page.get_by_label("Repeat the password").fill("short")
        page.get_by_role("button", name="Create account").click()
        page.wait_for_selector("text=Please correct the fields marked below.")
        assert page.get_by_text("This password is too short.").first.is_visible()
        page.screenshot(path=str(screenshot_dir / "accounts-signup-errors.png"), full_page=True)

        # The device's time zone is sent along and kept.
        page.get_by_label("Password", exact=True).fill("lantern-meadow-quartz-71")
        page.get_by_label("Repeat the password").fill("lantern-meadow-quartz-71")
        page.get_by_role("button", name="Create account").click()
        page.wait_for_selector("text=Check your e-mail")
    finally:
        context.close()
    patient = Patient.objects.get(user__email="ada@example.test")
    assert patient.time_zone == "Europe/Paris"
