"""The sandbox origin's URLs (ROOT_URLCONF of patientportal.settings.sandbox).

Shapes follow Cerner: the FHIR base is ``/r4/{tenant}``; the authorization server lives under
``/tenants/{tenant}/...`` with the per-host token URL; JWKS at ``/jwk``; introspection at
``/tokeninfo``; OIDC discovery under the issuer ``/tenants/{tenant}/oidc/idsps/{tenant}/``.
"""

from django.urls import URLPattern, URLResolver, path, re_path

from . import views_discovery, views_fhir, views_oauth

T = "tenants/<str:tenant>"
SMART = f"{T}/protocols/oauth2/profiles/smart-v1"

app_name = "sandbox"
urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "r4/<str:tenant>/.well-known/smart-configuration",
        views_discovery.smart_configuration,
        name="smart-configuration",
    ),
    path("r4/<str:tenant>/metadata", views_discovery.metadata, name="metadata"),
    re_path(
        r"^r4/(?P<tenant>[^/]+)/(?P<rtype>[A-Z][A-Za-z]+)$",
        views_fhir.fhir_endpoint,
        name="fhir-type",
    ),
    re_path(
        r"^r4/(?P<tenant>[^/]+)/(?P<rtype>[A-Z][A-Za-z]+)/(?P<rid>[A-Za-z0-9_\-.]{1,64})$",
        views_fhir.fhir_endpoint,
        name="fhir-instance",
    ),
    path(f"{SMART}/personas/patient/authorize", views_oauth.authorize, name="authorize"),
    path(
        f"{SMART}/personas/provider/authorize",
        views_oauth.authorize_provider,
        name="authorize-provider",
    ),
    path(
        f"{T}/hosts/<str:host>/protocols/oauth2/profiles/smart-v1/token",
        views_oauth.token,
        name="token-host",
    ),
    path(f"{SMART}/token", views_oauth.token, name="token"),
    path(f"{SMART}/token/revoke", views_oauth.revoke, name="revoke"),
    path(f"{T}/sandbox/login", views_oauth.login, name="login"),
    path(f"{T}/sandbox/pick", views_oauth.pick, name="pick"),
    path(f"{T}/sandbox/approve", views_oauth.approve, name="approve"),
    path(f"{T}/personas/patient/my-authorizations", views_oauth.manage, name="manage"),
    path(
        f"{T}/oidc/idsps/<str:idsp>/.well-known/openid-configuration",
        views_oauth.openid_configuration,
        name="openid-configuration",
    ),
    path("tokeninfo", views_oauth.tokeninfo, name="tokeninfo"),
    path("jwk", views_oauth.jwk, name="jwk"),
    path("errors/<str:urn>/instances/<str:instance>", views_oauth.error_page, name="error"),
]
