"""Request ids, request limits, no-store caching and the staff idle timeout."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from .errors import PayloadTooLarge, error_response
from .logging import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives every request an id (kept from a well-formed X-Request-ID, else a new UUID).

    The id goes on `request.request_id`, into every log line of the request and into the
    `X-Request-ID` response header, so a patient's support call can be traced without PHI.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class StaffSessionTimeoutMiddleware:
    """Logs staff out after STAFF_SESSION_IDLE_TIMEOUT seconds without a request."""

    session_key = "_staff_last_seen"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            now = int(time.time())
            last_seen = request.session.get(self.session_key)
            if last_seen is not None and now - int(last_seen) > settings.STAFF_SESSION_IDLE_TIMEOUT:
                logout(request)
            else:
                request.session[self.session_key] = now
        return self.get_response(request)


class RequestLimitsMiddleware:
    """Refuses a body declared larger than DATA_UPLOAD_MAX_MEMORY_SIZE with 413, before any of it
    is read (the API's bodies are small JSON documents; nothing uploads files).

    Without this, the first reader of the body decides the answer: DRF's parser, Django's form
    parsing or django-oauth-toolkit's authentication, and some of them answered 400. A body
    sent without a Content-Length is still capped when read (`handler400` maps Django's
    RequestDataTooBig to 413). The TLS front end applies the same limit (deploy/nginx).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return error_response(
                request, 413, PayloadTooLarge.default_code, PayloadTooLarge.default_message
            )
        return self.get_response(request)


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every response Django itself renders.

    API and OAuth responses carry patient or account data (records, the access log, tokens),
    HTML pages carry a signed-in user's (or staff's) view: no browser, proxy or shared cache may
    keep any of it. Static files are served by WhiteNoise, above this middleware, and keep their
    long-lived caching. A view that already says no-store (e.g. "private, no-store"), or means
    to be cached publicly (`Cache-Control: public, ...`), is left alone.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        current = response.get("Cache-Control", "")
        if "no-store" not in current and "public" not in current:
            response["Cache-Control"] = "no-store"
            if "Expires" in response:
                del response["Expires"]
        return response
