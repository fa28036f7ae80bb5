"""The reference client page. It serves no patient data itself: it is one static template and
its script, which signs in with OAuth 2.0 + PKCE and then reads everything through the
(access-logged) /api/v1/ endpoints, exactly as the mobile app does."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from patientportal.accesslog.logged import no_patient_data
from patientportal.accounts.demo import DEMO_CLIENT_ID, demo_client_redirect_uri

# What the page asks for at sign-in (the mobile app's scopes, minus exports and reminders).
DEMO_SCOPES = "account consent connections records:read audit:read"

# The page's only script and style sheet are static files of this origin; the API is same-origin.
# The authorize URLs (this server's and the EHR's) are top-level navigations, which CSP does not
# restrict.
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@no_patient_data
@never_cache
@require_GET
def demo_page(request: HttpRequest) -> HttpResponse:
    context = {
        "client_id": DEMO_CLIENT_ID,
        "redirect_uri": demo_client_redirect_uri(),
        "public_base_url": settings.PUBLIC_BASE_URL,
        "scopes": DEMO_SCOPES,
    }
    response = render(request, "demo_client/index.html", context)
    response["Content-Security-Policy"] = DEMO_CSP
    # The page is reached with ?code=... (OAuth) and ?connection=...&outcome=... (the SMART
    # callback's return); the script removes them at once, and no Referer ever carries them.
    response["Referrer-Policy"] = "no-referrer"
    return response
