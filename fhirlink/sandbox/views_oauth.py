"""Authorization server views: authorize (login + approval pages), token, revoke, introspect,
JWKS, OIDC discovery, the error_uri target and the patient's management page."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import faults
from .conf import (
    OBSERVATION_CATEGORIES,
    PATIENTS_BY_KEY,
    PROFILE_CERNER,
    PROFILE_GENERIC,
    TenantSwitches,
)
from .keys import jwks
from .models import SandboxAuthRequest
from .oauth import (
    OAuthError,
    Throttled,
    auth_request_complete,
    auth_request_get,
    auth_request_pick,
    authenticate_client,
    authorize_start,
    client_get,
    introspect,
    patient_login,
    patients_pickable,
    token_exchange_code,
    token_refresh,
    token_revoke,
)
from .responses import json_response, oauth_json
from .scopes import category_choosable, untickable
from .state import (
    auth_path,
    issuer,
    oauth_urls,
    origin_of,
    page_urls,
    tenant_exists,
    tenant_switches,
)

BINDING_COOKIE = "sbx_auth"


def _flat(query: QueryDict) -> dict[str, str]:
    """One value per parameter (the last), as strings."""
    return {key: str(query.get(key, "")) for key in query}


def _redirect_to_client(
    redirect_uri: str,
    params: dict[str, str],
    *,
    switches: TenantSwitches | None = None,
    origin: str = "",
    tenant: str = "",
) -> HttpResponse:
    """To the client's redirect_uri; with ``iss`` (RFC 9207) when the tenant sends it, on every
    response, errors included."""
    if switches is not None and switches.iss_parameter:
        params = {**params, "iss": issuer(origin, tenant, switches.profile)}
    parts = urlsplit(redirect_uri)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    response = HttpResponseRedirect(urlunsplit(parts._replace(query=query)))
    response["Cache-Control"] = "no-store"
    return response


def _error_page(request: HttpRequest, tenant: str, message: str, status: int = 400) -> HttpResponse:
    return render(
        request, "sandbox/error.html", {"tenant": tenant, "message": message}, status=status
    )


def _login_page(
    request: HttpRequest,
    tenant: str,
    request_id: str,
    client_id: str,
    error: str = "",
    profile: str = PROFILE_CERNER,
) -> HttpResponse:
    context = {
        "tenant": tenant,
        "request_id": request_id,
        "client_id": client_id,
        "error": error,
        "login_url": page_urls(tenant, profile)["login"],
    }
    return render(request, "sandbox/login.html", context, status=200)


def _approve_page(
    request: HttpRequest, tenant: str, row: SandboxAuthRequest, switches: TenantSwitches
) -> HttpResponse:
    offered = row.params["offered"]
    patient = PATIENTS_BY_KEY[row.patient_key]
    choices = [s for s in offered if untickable(s)]
    context = {
        "tenant": tenant,
        "request_id": row.id,
        "client_id": row.client_id,
        "patient_name": f"{patient.given} {patient.family}",
        "acting_for": row.user_key != row.patient_key,
        "fixed": [s for s in offered if not untickable(s)],
        "choices": choices,
        # The generic profile's granular consent: which Observation categories to share.
        "category_scopes": [s for s in choices if category_choosable(s)]
        if switches.category_consent
        else [],
        "categories": OBSERVATION_CATEGORIES,
        "approve_url": page_urls(tenant, switches.profile)["approve"],
    }
    return render(request, "sandbox/approve.html", context)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    """GET, or POST (``authorize-post``): check the request, then show the login page."""
    if not tenant_exists(tenant, profile):
        return _error_page(request, tenant, "Tenant not valid or accessible.", 403)
    switches = tenant_switches(tenant)
    origin = origin_of(request)
    params = _flat(request.POST if request.method == "POST" else request.GET)
    client, outcome = authorize_start(tenant=tenant, origin=origin, params=params)
    if outcome.page_error:
        return _error_page(request, tenant, outcome.page_error)
    if outcome.redirect_error is not None:
        body = outcome.redirect_error.body(
            origin=origin,
            tenant=tenant,
            client_id=params.get("client_id", ""),
            generic=switches.generic,
        )
        if params.get("state"):
            body["state"] = params["state"]
        return _redirect_to_client(
            params["redirect_uri"], body, switches=switches, origin=origin, tenant=tenant
        )
    assert client is not None
    response = _login_page(request, tenant, outcome.request_id, client.client_id, profile=profile)
    response.set_cookie(
        BINDING_COOKIE,
        outcome.binding,
        httponly=True,
        samesite="Lax",
        path=auth_path(tenant, profile),
    )
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
def authorize_provider(request: HttpRequest, tenant: str) -> HttpResponse:
    """A patient app sent to the provider persona fails with unauthorized_client."""
    params = _flat(request.POST if request.method == "POST" else request.GET)
    client = client_get(tenant, params.get("client_id", "")) if tenant_exists(tenant) else None
    if client is None or params.get("redirect_uri") not in client.redirect_uris:
        return _error_page(request, tenant, "Unknown client or redirect_uri.")
    error = OAuthError("unauthorized_client", "grant:client-persona-mismatch?persona=provider")
    body = error.body(origin=origin_of(request), tenant=tenant, client_id=client.client_id)
    if params.get("state"):
        body["state"] = params["state"]
    return _redirect_to_client(params["redirect_uri"], body)


def _expired(request: HttpRequest, tenant: str) -> HttpResponse:
    return _error_page(
        request, tenant, "This sign-in request has expired. Start again from the app."
    )


def _pending(request: HttpRequest, tenant: str, profile: str) -> SandboxAuthRequest | None:
    if not tenant_exists(tenant, profile):
        return None
    return auth_request_get(
        tenant=tenant,
        request_id=request.POST.get("request_id", ""),
        binding=request.COOKIES.get(BINDING_COOKIE, ""),
    )


@csrf_exempt
@require_POST
def login(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    row = _pending(request, tenant, profile)
    if row is None:
        return _expired(request, tenant)
    user_key = patient_login(
        username=request.POST.get("username", ""), password=request.POST.get("password", "")
    )
    if user_key is None:
        return _login_page(
            request,
            tenant,
            row.id,
            row.client_id,
            error="Wrong username or password.",
            profile=profile,
        )
    switches = tenant_switches(tenant)
    row.user_key = user_key
    row.patient_key = user_key
    pickable = patients_pickable(user_key)
    if switches.patient_picker and len(pickable) > 1:
        # Whose record: the login's own, or one it manages. Chosen on the next page.
        row.patient_key = ""
        row.save(update_fields=["user_key", "patient_key"])
        context = {
            "tenant": tenant,
            "request_id": row.id,
            "client_id": row.client_id,
            "user_name": f"{pickable[0].given} {pickable[0].family}",
            "options": [
                {
                    "key": p.key,
                    "name": f"{p.given} {p.family}",
                    "relationship": "yourself" if p.key == user_key else p.relationship.lower(),
                }
                for p in pickable
            ],
            "pick_url": page_urls(tenant, profile)["pick"],
        }
        return render(request, "sandbox/pick.html", context)
    row.save(update_fields=["user_key", "patient_key"])
    return _approve_page(request, tenant, row, switches)


@csrf_exempt
@require_POST
def pick(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    """The patient picker's answer: then the approval page for that patient's record."""
    row = _pending(request, tenant, profile)
    if row is None or not row.user_key:
        return _expired(request, tenant)
    if not auth_request_pick(row=row, patient_key=request.POST.get("patient", "")):
        return _error_page(request, tenant, "Choose one of the records you manage.")
    return _approve_page(request, tenant, row, tenant_switches(tenant))


@csrf_exempt
@require_POST
def approve(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    row = _pending(request, tenant, profile)
    if row is None or not row.patient_key:
        return _expired(request, tenant)
    switches = tenant_switches(tenant)
    categories = None
    if switches.category_consent:
        categories = {
            key.removeprefix("category:"): set(request.POST.getlist(key))
            for key in request.POST
            if key.startswith("category:")
        }
    try:
        result = auth_request_complete(
            row=row,
            approved=request.POST.get("action") == "approve",
            ticked=set(request.POST.getlist("scope")),
            categories=categories,
        )
    except OAuthError:
        return _error_page(request, tenant, "This sign-in request was already used.")
    response = _redirect_to_client(
        row.params["redirect_uri"],
        result,
        switches=switches,
        origin=origin_of(request),
        tenant=tenant,
    )
    response.delete_cookie(BINDING_COOKIE, path=auth_path(tenant, profile))
    return response


def _oauth_error(
    request: HttpRequest,
    tenant: str,
    error: OAuthError,
    client_id: str = "",
    profile: str = PROFILE_CERNER,
) -> HttpResponse:
    generic = profile == PROFILE_GENERIC
    response = oauth_json(
        error.body(origin=origin_of(request), tenant=tenant, client_id=client_id, generic=generic),
        status=error.status,
    )
    if error.status == 401 and request.headers.get("Authorization", "").lower().startswith("basic"):
        realm = tenant if generic else "authorization.cerner.com"
        response["WWW-Authenticate"] = f'Basic realm="{realm}"'
    return response


@csrf_exempt
@require_POST
def token(
    request: HttpRequest, tenant: str, host: str | None = None, profile: str = PROFILE_CERNER
) -> HttpResponse:
    if not tenant_exists(tenant, profile):
        return oauth_json(
            {"error": "invalid_request", "error_description": "Tenant not valid or accessible"},
            status=403,
        )
    form = _flat(request.POST)
    grant_type = form.get("grant_type", "")
    try:
        client = authenticate_client(
            tenant=tenant,
            form=form,
            authorization=request.headers.get("Authorization", ""),
            token_url=request.build_absolute_uri(request.path),
        )
        if grant_type == "authorization_code":
            body = token_exchange_code(client=client, form=form, origin=origin_of(request))
        elif grant_type == "refresh_token":
            failure = faults.take(tenant, "refresh_failure")
            if failure is not None:
                if failure.get("error", "invalid_grant") == "invalid_grant":
                    raise OAuthError("invalid_grant", "token:refresh-token-invalid")
                return oauth_json({"error": "server_error"}, status=int(failure.get("status", 503)))
            body = token_refresh(client=client, form=form)
        else:
            raise OAuthError("unsupported_grant_type", "token:grant-type-unsupported")
    except OAuthError as error:
        return _oauth_error(request, tenant, error, form.get("client_id", ""), profile)
    except Throttled as throttled:
        response = oauth_json(
            {
                "error": "invalid_request",
                "error_description": "Refresh is limited to once a minute.",
            },
            status=throttled.status,
        )
        response["Retry-After"] = str(throttled.retry_after)
        return response
    return oauth_json(body)


@csrf_exempt
@require_POST
def revoke(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    if not tenant_exists(tenant, profile):
        return oauth_json({"error": "invalid_request"}, status=404)
    form = _flat(request.POST)
    try:
        client = authenticate_client(
            tenant=tenant,
            form=form,
            authorization=request.headers.get("Authorization", ""),
            token_url=request.build_absolute_uri(request.path),
        )
    except OAuthError as error:
        return _oauth_error(request, tenant, error, form.get("client_id", ""), profile)
    if not form.get("token"):
        return _oauth_error(
            request, tenant, OAuthError("invalid_request", "revoke:token-missing"), "", profile
        )
    token_revoke(client=client, token=form["token"])
    return HttpResponse(status=200)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def tokeninfo(
    request: HttpRequest, tenant: str = "", profile: str = PROFILE_CERNER
) -> HttpResponse:
    value = request.POST.get("token") or request.GET.get("token") or ""
    if not value and request.headers.get("Authorization", "").startswith("Bearer "):
        value = request.headers["Authorization"][7:].strip()
    return oauth_json(introspect(token=value))


@require_GET
def jwk(request: HttpRequest, tenant: str = "", profile: str = PROFILE_CERNER) -> HttpResponse:
    return json_response(jwks())


@require_GET
def openid_configuration(
    request: HttpRequest, tenant: str, idsp: str = "", profile: str = PROFILE_CERNER
) -> HttpResponse:
    if not tenant_exists(tenant, profile) or (profile == PROFILE_CERNER and idsp != tenant):
        return json_response({"error": "not_found"}, status=404)
    origin = origin_of(request)
    urls = oauth_urls(origin, tenant, profile)
    body: dict[str, Any] = {
        "issuer": issuer(origin, tenant, profile),
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "jwks_uri": urls["jwks"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": False,
        "claims_parameter_supported": False,
    }
    if profile == PROFILE_GENERIC:
        body["request_uri_parameter_supported"] = False
        body["revocation_endpoint"] = urls["revoke"]
        body["introspection_endpoint"] = urls["introspect"]
        body["authorization_response_iss_parameter_supported"] = True
        body["code_challenge_methods_supported"] = ["S256"]
    return json_response(body)


@require_GET
def error_page(request: HttpRequest, urn: str, instance: str) -> HttpResponse:
    return HttpResponse(
        f"Cerner sandbox error {urn} (instance {instance}).", content_type="text/plain"
    )


@require_GET
def manage(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    return _error_page(
        request,
        tenant,
        "Managing authorizations is done from the test tools (sandbox fixture revoke_grant, "
        "or the token revocation endpoint).",
        200,
    )
