"""The /demo/ reference client page: served in dev/test only, static, strict CSP, no PHI."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from patientportal.accounts.demo import DEMO_CLIENT_ID
from patientportal.demo_client.views import DEMO_CSP, demo_page


def test_the_page_is_a_static_shell_with_a_strict_policy(settings):
    response = Client().get("/demo/?code=abc&state=xyz")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == DEMO_CSP
    assert "script-src 'self';" in DEMO_CSP
    assert "'unsafe-inline'" not in DEMO_CSP
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert f'data-client-id="{DEMO_CLIENT_ID}"' in html
    assert f'data-redirect-uri="{settings.PUBLIC_BASE_URL}/demo/"' in html
    assert '<script src="/static/demo_client/app.js" defer></script>' in html
    # No inline script or style: everything is a static file of this origin.
    assert "<script>" not in html
    assert "<style" not in html
    assert " style=" not in html
    # The query (an OAuth code) is never echoed into the page.
    assert "abc" not in html
    assert "xyz" not in html


def test_the_page_declares_it_serves_no_patient_data():
    assert demo_page.serves_patient_data is False  # type: ignore[attr-defined]
    assert reverse("demo_client:index") == "/demo/"


def test_the_page_is_a_registered_app_return_uri(settings):
    assert f"{settings.PUBLIC_BASE_URL}/demo/" in settings.FHIRLINK_APP_RETURN_URIS


def test_only_get(client):
    assert client.post("/demo/").status_code == 405
