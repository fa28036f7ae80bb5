"""Browser-facing views: the SMART redirect URI."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from fhirlink.services.launch import app_return_uris, callback_complete
from fhirlink.services.registry import client_jwks
from patientportal.accesslog.logged import no_patient_data


class AppRedirect(HttpResponseRedirect):
    """A redirect to the app's registered deep link (custom schemes allowed: the target comes
    from the server's allow-list, never from the request)."""

    def __init__(self, redirect_to: str) -> None:
        self.allowed_schemes = sorted({"https", *(urlsplit(u).scheme for u in app_return_uris())})
        super().__init__(redirect_to)


@no_patient_data  # the launch service writes the access-log rows itself (no signed-in user)
@never_cache
@require_GET
def smart_callback(request: HttpRequest) -> HttpResponse:
    """/fhirlink/callback: the EHR sends the browser here; it leaves for the app's deep link."""
    params = {key: request.GET.get(key, "") for key in ("state", "code", "error", "iss")}
    if "iss" not in request.GET:
        params.pop("iss")
    result = callback_complete(params=params, request=request)
    response = AppRedirect(result.redirect_to)
    response["Referrer-Policy"] = "no-referrer"
    return response


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
