"""The generic SMART App Launch 2.x profile's URLs (a second sandbox server, its own port).

A different layout from Cerner's (``urls.py``), Keycloak-like: the FHIR server at
``/fhir/{tenant}`` on ``127.0.0.1:{port}``, the authorization server (issuer
``/auth/realms/{tenant}``, endpoints under ``{issuer}/protocol/openid-connect/``) on
``localhost:{port}``: another origin (``state.generic_origins``). Only tenants whose profile is
``generic`` answer here (the built-in ``generic`` tenant, or one made with
``sandbox_tenant --switch profile=generic``).
"""

from typing import Any

from django.urls import URLPattern, URLResolver, path, re_path

from . import views_discovery, views_fhir, views_oauth
from .conf import PROFILE_GENERIC

F = "fhir/<str:tenant>"
R = "auth/realms/<str:tenant>"
OIDC = f"{R}/protocol/openid-connect"
G: dict[str, Any] = {"profile": PROFILE_GENERIC}

app_name = "sandbox_generic"
urlpatterns: list[URLPattern | URLResolver] = [
    path(
        f"{F}/.well-known/smart-configuration",
        views_discovery.smart_configuration,
        G,
        name="smart-configuration",
    ),
    path(f"{F}/metadata", views_discovery.metadata, G, name="metadata"),
    re_path(
        r"^fhir/(?P<tenant>[^/]+)/(?P<rtype>[A-Z][A-Za-z]+)$",
        views_fhir.fhir_endpoint,
        G,
        name="fhir-type",
    ),
    re_path(
        r"^fhir/(?P<tenant>[^/]+)/(?P<rtype>[A-Z][A-Za-z]+)/(?P<rid>[A-Za-z0-9_\-.]{1,64})$",
        views_fhir.fhir_endpoint,
        G,
        name="fhir-instance",
    ),
    path(
        f"{R}/.well-known/openid-configuration",
        views_oauth.openid_configuration,
        G,
        name="openid-configuration",
    ),
    path(f"{OIDC}/auth", views_oauth.authorize, G, name="authorize"),
    path(f"{OIDC}/token", views_oauth.token, G, name="token"),
    path(f"{OIDC}/revoke", views_oauth.revoke, G, name="revoke"),
    path(f"{OIDC}/token/introspect", views_oauth.tokeninfo, G, name="introspect"),
    path(f"{OIDC}/certs", views_oauth.jwk, G, name="jwks"),
    path(f"{R}/login-actions/login", views_oauth.login, G, name="login"),
    path(f"{R}/login-actions/pick", views_oauth.pick, G, name="pick"),
    path(f"{R}/login-actions/approve", views_oauth.approve, G, name="approve"),
    path(f"{R}/account", views_oauth.manage, G, name="manage"),
]
