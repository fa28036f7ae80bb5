"""The main origin's URLs: API, OAuth, sign-in pages, admin, health probes, API docs."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from oauth2_provider import views as oauth2_views

from patientportal.accounts.views import PatientAuthorizationView
from patientportal.core import health

if settings.STAFF_OTP_REQUIRED:
    # TOTP two-factor for every staff login (django-otp's documented way to swap the site).
    from django_otp.admin import OTPAdminSite

    admin.site.__class__ = OTPAdminSite

admin.site.site_header = "Patient Portal administration"
admin.site.site_title = "Patient Portal"

# Only the endpoints the mobile app needs; django-oauth-toolkit's application-management views
# stay unmounted (operators register apps in the admin).
oauth2_patterns: list[URLPattern | URLResolver] = [
    # DOT's view plus our rules: patients only, verified e-mail, PKCE S256 (accounts.views).
    path("authorize/", PatientAuthorizationView.as_view(), name="authorize"),
    path("token/", oauth2_views.TokenView.as_view(), name="token"),
    path("revoke_token/", oauth2_views.RevokeTokenView.as_view(), name="revoke-token"),
]

api_v1_patterns: list[URLPattern | URLResolver] = [
    path("", include("patientportal.accounts.api.urls")),
    path("", include("patientportal.consent.api.urls")),
    path("", include("patientportal.accesslog.api.urls")),
    path("", include("fhirlink.api.urls")),
    path("", include("engagement.api.urls")),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("o/", include((oauth2_patterns, "oauth2_provider"))),
    path(
        ".well-known/oauth-authorization-server",
        oauth2_views.OAuthServerMetadataView.as_view(),
        name="oauth-server-metadata",
    ),
    path("accounts/", include("patientportal.accounts.urls")),
    path("fhirlink/", include("fhirlink.urls")),
    path("api/v1/", include(api_v1_patterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script from a URL of its own (no inline script,
    # so the Content-Security-Policy needs no 'unsafe-inline').
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
if settings.DEMO_ENABLED:  # the /demo/ reference client: dev and demo only, never in production
    urlpatterns.append(path("demo/", include("patientportal.demo_client.urls")))

handler400 = "patientportal.core.errors.handler400"
handler403 = "patientportal.core.errors.handler403"
handler404 = "patientportal.core.errors.handler404"
handler500 = "patientportal.core.errors.handler500"
