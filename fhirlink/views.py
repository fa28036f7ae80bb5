"""Browser-facing views: the launch's start URL and the SMART redirect URIs."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from fhirlink.services.launch import (
    app_return_uris,
    binding_cookie_name,
    binding_cookie_salt,
    callback_complete,
    launch_browser_start,
    launch_ttl,
)
from fhirlink.services.registry import client_jwks
from patientportal.accesslog.logged import no_patient_data

BINDING_COOKIE_PATH = "/fhirlink/"


class AppRedirect(HttpResponseRedirect):
    """A redirect to the app's registered deep link (custom schemes allowed: the target comes
    from the server's allow-list, never from the request)."""

    def __init__(self, redirect_to: str) -> None:
        self.allowed_schemes = sorted({"https", *(urlsplit(u).scheme for u in app_return_uris())})
        super().__init__(redirect_to)


def _no_referrer(response: HttpResponse) -> HttpResponse:
    response["Referrer-Policy"] = "no-referrer"
    return response


@no_patient_data  # the launch service writes the access-log rows itself
@never_cache
@require_GET
def launch_start(request: HttpRequest, token: str) -> HttpResponse:
    """/fhirlink/launch/<token>: the app opens this start URL in the system browser. Signed in
    as the account that created the launch (else the sign-in page, then back here), it binds
    the launch to this browser with a short-lived signed cookie and goes to the EHR."""
    if not request.user.is_authenticated:
        return _no_referrer(redirect_to_login(request.get_full_path()))
    started = launch_browser_start(start_token=token, user=request.user, request=request)
    if started.outcome == "invalid_start":
        raise Http404("No such launch.")
    if started.outcome != "started":
        return _no_referrer(AppRedirect(started.redirect_to))
    response = HttpResponseRedirect(started.redirect_to)
    response.set_signed_cookie(
        binding_cookie_name(started.attempt_id),
        started.binding,
        salt=binding_cookie_salt(started.attempt_id),
        max_age=launch_ttl(),
        path=BINDING_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=True,
        samesite="Lax",  # sent on the EHR's top-level redirect back to us, not on subrequests
    )
    return _no_referrer(response)


@no_patient_data  # the launch service writes the access-log rows itself
@never_cache
@require_GET
def smart_callback(request: HttpRequest, key: str | None = None) -> HttpResponse:
    """/fhirlink/callback/<slug> (one per health system; /fhirlink/callback for registrations
    made before): the EHR sends the browser here; it leaves for the app's deep link."""
    params = {key_: request.GET.get(key_, "") for key_ in ("state", "code", "error", "iss")}
    if "iss" not in request.GET:
        params.pop("iss")

    def binding_for(attempt_id: str) -> str | None:
        value = request.get_signed_cookie(
            binding_cookie_name(attempt_id),
            default=None,
            salt=binding_cookie_salt(attempt_id),
            max_age=launch_ttl(),
        )
        return str(value) if value else None

    result = callback_complete(
        params=params,
        binding_for=binding_for,
        arrival_key=key,
        user=request.user,
        request=request,
    )
    response = AppRedirect(result.redirect_to)
    if result.attempt_id:
        response.delete_cookie(
            binding_cookie_name(result.attempt_id), path=BINDING_COOKIE_PATH, samesite="Lax"
        )
    return _no_referrer(response)


@no_patient_data
@require_GET
def jwks(request: HttpRequest) -> HttpResponse:
    """/fhirlink/jwks.json: the public keys of our private_key_jwt clients (register this URL
    at the EHR). Public material only; cached for five minutes."""
    body = cache.get("fhirlink:client-jwks")
    if body is None:
        body = client_jwks()
        cache.set("fhirlink:client-jwks", body, timeout=300)
    response = JsonResponse(body)
    response["Cache-Control"] = "public, max-age=300"
    return response
