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
from .conf import PATIENTS_BY_KEY
from .keys import jwks
from .oauth import (
    OAuthError,
    Throttled,
    auth_request_complete,
    auth_request_get,
    authenticate_client,
    authorize_start,
    client_get,
    introspect,
    patient_login,
    token_exchange_code,
    token_refresh,
    token_revoke,
)
from .responses import json_response, oauth_json
from .scopes import untickable
from .state import issuer, oauth_urls, origin_of, tenant_exists

BINDING_COOKIE = "sbx_auth"


def _flat(query: QueryDict) -> dict[str, str]:
    """One value per parameter (the last), as strings."""
    return {key: str(query.get(key, "")) for key in query}


def _redirect_to_client(redirect_uri: str, params: dict[str, str]) -> HttpResponse:
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
    request: HttpRequest, tenant: str, request_id: str, client_id: str, error: str = ""
) -> HttpResponse:
    context = {
        "tenant": tenant,
        "request_id": request_id,
        "client_id": client_id,
        "error": error,
        "login_url": f"/tenants/{tenant}/sandbox/login",
    }
    return render(request, "sandbox/login.html", context, status=200)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest, tenant: str) -> HttpResponse:
    """GET, or POST (``authorize-post``): check the request, then show the login page."""
    if not tenant_exists(tenant):
        return _error_page(request, tenant, "Tenant not valid or accessible.", 403)
    params = _flat(request.POST if request.method == "POST" else request.GET)
    client, outcome = authorize_start(tenant=tenant, origin=origin_of(request), params=params)
    if outcome.page_error:
        return _error_page(request, tenant, outcome.page_error)
    if outcome.redirect_error is not None:
        body = outcome.redirect_error.body(
            origin=origin_of(request), tenant=tenant, client_id=params.get("client_id", "")
        )
        if params.get("state"):
            body["state"] = params["state"]
        return _redirect_to_client(params["redirect_uri"], body)
    assert client is not None
    response = _login_page(request, tenant, outcome.request_id, client.client_id)
    response.set_cookie(
        BINDING_COOKIE, outcome.binding, httponly=True, samesite="Lax", path=f"/tenants/{tenant}/"
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


@csrf_exempt
@require_POST
def login(request: HttpRequest, tenant: str) -> HttpResponse:
    request_id = request.POST.get("request_id", "")
    row = auth_request_get(
        tenant=tenant, request_id=request_id, binding=request.COOKIES.get(BINDING_COOKIE, "")
    )
    if row is None:
        return _error_page(
            request, tenant, "This sign-in request has expired. Start again from the app."
        )
    patient_key = patient_login(
        username=request.POST.get("username", ""), password=request.POST.get("password", "")
    )
    if patient_key is None:
        return _login_page(
            request, tenant, request_id, row.client_id, error="Wrong username or password."
        )
    row.patient_key = patient_key
    row.save(update_fields=["patient_key"])
    offered = row.params["offered"]
    patient = PATIENTS_BY_KEY[patient_key]
    context = {
        "tenant": tenant,
        "request_id": request_id,
        "client_id": row.client_id,
        "patient_name": f"{patient.given} {patient.family}",
        "fixed": [s for s in offered if not untickable(s)],
        "choices": [s for s in offered if untickable(s)],
        "approve_url": f"/tenants/{tenant}/sandbox/approve",
    }
    return render(request, "sandbox/approve.html", context)


@csrf_exempt
@require_POST
def approve(request: HttpRequest, tenant: str) -> HttpResponse:
    row = auth_request_get(
        tenant=tenant,
        request_id=request.POST.get("request_id", ""),
        binding=request.COOKIES.get(BINDING_COOKIE, ""),
    )
    if row is None or not row.patient_key:
        return _error_page(
            request, tenant, "This sign-in request has expired. Start again from the app."
        )
    try:
        result = auth_request_complete(
            row=row,
            approved=request.POST.get("action") == "approve",
            ticked=set(request.POST.getlist("scope")),
        )
    except OAuthError:
        return _error_page(request, tenant, "This sign-in request was already used.")
    response = _redirect_to_client(row.params["redirect_uri"], result)
    response.delete_cookie(BINDING_COOKIE, path=f"/tenants/{tenant}/")
    return response


def _oauth_error(
    request: HttpRequest, tenant: str, error: OAuthError, client_id: str = ""
) -> HttpResponse:
    response = oauth_json(
        error.body(origin=origin_of(request), tenant=tenant, client_id=client_id),
        status=error.status,
    )
    if error.status == 401 and request.headers.get("Authorization", "").lower().startswith("basic"):
        response["WWW-Authenticate"] = 'Basic realm="authorization.cerner.com"'
    return response


@csrf_exempt
@require_POST
def token(request: HttpRequest, tenant: str, host: str | None = None) -> HttpResponse:
    if not tenant_exists(tenant):
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
        return _oauth_error(request, tenant, error, form.get("client_id", ""))
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
def revoke(request: HttpRequest, tenant: str) -> HttpResponse:
    form = _flat(request.POST)
    try:
        client = authenticate_client(
            tenant=tenant,
            form=form,
            authorization=request.headers.get("Authorization", ""),
            token_url=request.build_absolute_uri(request.path),
        )
    except OAuthError as error:
        return _oauth_error(request, tenant, error, form.get("client_id", ""))
    if not form.get("token"):
        return _oauth_error(request, tenant, OAuthError("invalid_request", "revoke:token-missing"))
    token_revoke(client=client, token=form["token"])
    return HttpResponse(status=200)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def tokeninfo(request: HttpRequest) -> HttpResponse:
    value = request.POST.get("token") or request.GET.get("token") or ""
    if not value and request.headers.get("Authorization", "").startswith("Bearer "):
        value = request.headers["Authorization"][7:].strip()
    return oauth_json(introspect(token=value))


@require_GET
def jwk(request: HttpRequest) -> HttpResponse:
    return json_response(jwks())


@require_GET
def openid_configuration(request: HttpRequest, tenant: str, idsp: str) -> HttpResponse:
    if not tenant_exists(tenant) or idsp != tenant:
        return json_response({"error": "not_found"}, status=404)
    origin = origin_of(request)
    urls = oauth_urls(origin, tenant)
    body: dict[str, Any] = {
        "issuer": issuer(origin, tenant),
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
    return json_response(body)


@require_GET
def error_page(request: HttpRequest, urn: str, instance: str) -> HttpResponse:
    return HttpResponse(
        f"Cerner sandbox error {urn} (instance {instance}).", content_type="text/plain"
    )


@require_GET
def manage(request: HttpRequest, tenant: str) -> HttpResponse:
    return _error_page(
        request,
        tenant,
        "Managing authorizations is done from the test tools (sandbox fixture revoke_grant, "
        "or the token revocation endpoint).",
        200,
    )
