"""PHI never cacheable, and a strict Content-Security-Policy on every HTML page (issue 19, item 7).

Each test is an attack from the outside assessment, named after it, citing the OWASP ASVS 5.0
requirement it checks (V3 web frontend security, V14 data protection).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.test import APIClient

from patientportal.accounts.models import Patient
from tests.factories import StaffFactory
from tests.fhirlink.conftest import grant_ehr_sync
from tests.fhirlink.test_records_api import seed_chart
from tests.patientportal.accounts_helpers import (
    CLIENT_ID,
    MOBILE_REDIRECT_URI,
    authorize_query,
    make_pkce,
    redirect_params,
    token_request,
    verified_patient,
)

pytestmark = pytest.mark.django_db

PATIENT_DATA_GETS = [
    "/api/v1/me",
    "/api/v1/me/sessions",
    "/api/v1/consents",
    "/api/v1/consents/history",
    "/api/v1/access-log",
    "/api/v1/connections",
    "/api/v1/records/summary",
    "/api/v1/records/conditions",
    "/api/v1/records/timeline",
    "/api/v1/records/changes",
    "/api/v1/records/trends",
    "/api/v1/reminders",
    "/api/v1/reminders/preferences",
    "/api/v1/health-systems",
    "/api/v1/records/conditions/00000000-0000-0000-0000-000000000000",  # a 404 too
]


def assert_no_store(response: Any) -> None:
    """Cache-Control forbids storing (`no-store`, whatever else a view adds) and is not public."""
    directives = {d.strip() for d in response["Cache-Control"].split(",")}
    assert "no-store" in directives, response["Cache-Control"]
    assert "public" not in directives


def policy(response: Any) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [sources]}."""
    header = response["Content-Security-Policy"]
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def assert_strict_policy(response: Any) -> None:
    csp = policy(response)
    assert csp["script-src"] == ["'self'"]
    assert csp["default-src"] in (["'self'"], ["'none'"])  # /demo/ sets its own, stricter
    assert csp.get("object-src", csp["default-src"]) == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


def assert_no_inline_script(html: str) -> None:
    assert not INLINE_SCRIPT.findall(html), INLINE_SCRIPT.findall(html)
    assert not INLINE_HANDLER.findall(html), INLINE_HANDLER.findall(html)
    assert not re.search(r"=\s*[\"']?\s*javascript:", html, re.I)  # no javascript: URLs


@pytest.fixture
def me(patient: Patient, api_client_for: Callable[..., APIClient]) -> APIClient:
    grant_ehr_sync(patient)
    seed_chart(patient)
    return api_client_for(patient)


# --- Cache-Control: no-store ------------------------------------------------------------------


@pytest.mark.parametrize("path", PATIENT_DATA_GETS)
def test_patient_and_account_data_is_never_stored_by_a_cache(me, path):
    """OWASP ASVS 5.0 V14.3.2 (sensitive data is not cached): every API answer carrying patient
    or account data, errors included, is `Cache-Control: no-store` (before: `private,
    no-cache` or nothing, so a shared device's browser cache or a proxy could keep it)."""
    response = me.get(path)
    assert response.status_code in (200, 404), response.content
    assert_no_store(response)


def test_export_and_consent_writes_are_never_stored_by_a_cache(me):
    """OWASP ASVS 5.0 V14.3.2: the export's state and a consent change answer no-store too."""
    created = me.post("/api/v1/records/exports", {"format": "bundle"}, format="json")
    assert_no_store(created)
    state = me.get(f"/api/v1/records/exports/{created.json()['id']}")
    assert state.status_code == 200
    assert_no_store(state)
    revoked = me.post("/api/v1/consents/ehr_sync/revoke", {}, format="json")
    assert_no_store(revoked)


def test_oauth_approval_page_and_token_response_are_never_stored_by_a_cache(mobile_app):
    """OWASP ASVS 5.0 V14.3.2 / RFC 6749 §5.1 (token responses carry no-store): the signed-in
    approval page, the redirect carrying the code and the token response are all no-store."""
    patient = verified_patient()
    browser = Client()
    browser.force_login(patient.user)
    pkce = make_pkce()
    url = authorize_query(pkce=pkce)
    page = browser.get(url)
    assert page.status_code == 200
    assert_no_store(page)
    assert_strict_policy(page)
    assert_no_inline_script(page.content.decode())
    data = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    approved = browser.post(url, {**data, "allow": "Allow"})
    assert_no_store(approved)
    _, params = redirect_params(approved)
    tokens = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=MOBILE_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    )
    assert tokens.status_code == 200, tokens.content
    assert_no_store(tokens)


def test_signed_in_html_pages_are_never_stored_by_a_cache(patient):
    """OWASP ASVS 5.0 V14.3.2: the staff admin (PHI) and the patient's own pages are no-store."""
    staff = StaffFactory.create(is_superuser=True)
    admin = Client()
    admin.force_login(staff)
    index = admin.get("/admin/")
    assert index.status_code == 200
    assert_no_store(index)
    signed_in = Client()
    signed_in.force_login(patient.user)
    welcome = signed_in.get("/accounts/welcome/")
    assert welcome.status_code == 200
    assert_no_store(welcome)


def test_static_files_keep_their_caching():
    """Public static files are served by WhiteNoise above the no-store middleware and stay
    cacheable (the no-store rule is for what Django renders)."""
    order = settings.MIDDLEWARE
    assert order.index("whitenoise.middleware.WhiteNoiseMiddleware") < order.index(
        "patientportal.core.middleware.NoStoreMiddleware"
    )
    with override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True):
        response = Client().get("/static/demo_client/app.js")
        assert response.status_code == 200
        assert "public" in response["Cache-Control"]
        assert "no-store" not in response["Cache-Control"]


# --- Content-Security-Policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/accounts/login/", "/accounts/signup/", "/admin/login/", "/api/docs/", "/demo/"],
)
def test_every_html_page_has_a_strict_csp_and_no_inline_script(client, path):
    """OWASP ASVS 5.0 V3.4.3 (a CSP that stops injected script): sign-in, sign-up, the admin,
    the API docs and the /demo/ client send a Content-Security-Policy allowing script only
    from this origin (no 'unsafe-inline', no 'unsafe-eval'), and contain no inline script or
    inline event handler for it to block (before: no CSP at all)."""
    response = client.get(path)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/html")
    assert_strict_policy(response)
    assert_no_inline_script(response.content.decode())


def test_swagger_ui_start_up_script_is_a_file_of_its_own(client):
    """OWASP ASVS 5.0 V3.4.3: the API docs' start-up script is served from a URL (the split
    view), as JavaScript, so the page needs no inline script."""
    page = client.get("/api/docs/").content.decode()
    assert '<script src="/api/docs/?script="></script>' in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_staff_admin_pages_have_a_strict_csp_and_no_inline_script():
    """OWASP ASVS 5.0 V3.4.3: the admin's signed-in pages (index, a change list, a form)."""
    staff = StaffFactory.create(is_superuser=True)
    admin = Client()
    admin.force_login(staff)
    for path in ("/admin/", "/admin/accounts/user/", "/admin/accounts/user/add/"):
        response = admin.get(path)
        assert response.status_code == 200, path
        assert_strict_policy(response)
        assert_no_inline_script(response.content.decode())


def test_form_action_allows_only_this_origin_and_the_app_redirects():
    """OWASP ASVS 5.0 V3.4.x: forms post here; after the OAuth approval the browser may go on
    only to an https or the app's own scheme redirect URI (the approval's 302), nothing else."""
    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    assert directives["form-action"] == [
        "'self'",
        "https:",
        *(f"{scheme}:" for scheme in settings.MOBILE_REDIRECT_SCHEMES),
        settings.PUBLIC_BASE_URL,
        # dev and tests only (patientportal/settings/dev.py): the sandbox and /demo/ on loopback
        "http://127.0.0.1:*",
        "http://localhost:*",
    ]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pages_run_under_the_csp_in_chromium_without_a_violation(live_server, page):
    """OWASP ASVS 5.0 V3.4.3: the policy is strict and the pages still work in a real browser:
    sign-in, the admin login, Swagger UI (rendered from its own script) and the /demo/ client
    load with no Content-Security-Policy violation reported by Chromium."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    for path, ready in (
        ("/accounts/login/", "form"),
        ("/admin/login/", "#login-form"),
        ("/api/docs/", ".swagger-ui .info"),
        ("/demo/", "#signed-out"),
    ):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector(ready, state="attached", timeout=15000)
    assert violations == []
