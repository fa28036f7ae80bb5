"""One error hierarchy and one rendering for every error the API returns.

Every error body has the same shape::

    {"code": "not_found", "message": "Not found.", "status": 404, "request_id": "…",
     "errors": {"field": [{"code": "required", "message": "This field is required."}]}}

`code` is stable and machine-readable; `message` is for humans and never holds PHI, tokens or
secrets; `errors` appears only for field validation failures.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of every error the application raises on purpose.

    Subclasses set `status_code`, `default_code` and `default_message`. `extra` carries
    machine-readable details for the client (never PHI).
    """

    status_code: int = 400
    default_code: str = "error"
    default_message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.extra = extra or {}
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r})"


class ValidationFailed(ApplicationError):
    status_code = 400
    default_code = "validation_failed"
    default_message = "The request is not valid."


class NotAuthenticated(ApplicationError):
    status_code = 401
    default_code = "not_authenticated"
    default_message = "Authentication credentials were not provided or are not valid."


class PermissionDenied(ApplicationError):
    status_code = 403
    default_code = "permission_denied"
    default_message = "You do not have permission to perform this action."


class NotFound(ApplicationError):
    status_code = 404
    default_code = "not_found"
    default_message = "Not found."


class Conflict(ApplicationError):
    status_code = 409
    default_code = "conflict"
    default_message = "The request conflicts with the current state."


class Gone(ApplicationError):
    status_code = 410
    default_code = "gone"
    default_message = "This resource is no longer available."


class PayloadTooLarge(ApplicationError):
    status_code = 413
    default_code = "payload_too_large"
    default_message = "The request body is too large."


class RateLimited(ApplicationError):
    status_code = 429
    default_code = "rate_limited"
    default_message = "Too many requests. Try again later."


class ServiceUnavailable(ApplicationError):
    status_code = 503
    default_code = "service_unavailable"
    default_message = "The service is temporarily unavailable."


# DRF's own exceptions, mapped to our stable codes.
_DRF_CODES: dict[type[drf.APIException], str] = {
    drf.ParseError: "malformed_request",
    drf.AuthenticationFailed: "authentication_failed",
    drf.NotAuthenticated: "not_authenticated",
    drf.PermissionDenied: "permission_denied",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "throttled",
    drf.ValidationError: "validation_failed",
}


def error_body(
    *,
    status: int,
    code: str,
    message: str,
    request: HttpRequest | None,
    errors: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": status,
        "request_id": getattr(request, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    if extra:
        body["extra"] = extra
    return body


def _field_errors(detail: Any) -> dict[str, Any]:
    """DRF's nested ErrorDetail structure -> {field: [{code, message}]}."""
    if isinstance(detail, dict):
        return {str(key): _field_errors_list(value) for key, value in detail.items()}
    return {"non_field_errors": _field_errors_list(detail)}


def _field_errors_list(value: Any) -> Any:
    if isinstance(value, list):
        if all(isinstance(item, drf.ErrorDetail) for item in value):
            return [{"code": item.code, "message": str(item)} for item in value]
        return [_field_errors_list(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _field_errors_list(v) for k, v in value.items()}
    if isinstance(value, drf.ErrorDetail):
        return [{"code": value.code, "message": str(value)}]
    return [{"code": "invalid", "message": str(value)}]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF EXCEPTION_HANDLER: render every error in the one format."""
    request = context.get("request")
    if isinstance(exc, ApplicationError):
        response = Response(
            error_body(
                status=exc.status_code,
                code=exc.code,
                message=exc.message,
                request=request,
                extra=exc.extra,
            ),
            status=exc.status_code,
        )
        if isinstance(exc, RateLimited) and "retry_after" in exc.extra:
            response["Retry-After"] = str(int(exc.extra["retry_after"]))
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(
                status=413,
                code=PayloadTooLarge.default_code,
                message=PayloadTooLarge.default_message,
                request=request,
            ),
            status=413,
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()

    handled = drf_exception_handler(exc, context)
    if handled is None:
        # Unhandled: log the type only (a repr may hold PHI); Django answers 500 via handler500.
        logger.error("Unhandled API error: %s", type(exc).__name__, exc_info=exc)
        return None
    response = handled

    assert isinstance(exc, drf.APIException)
    code = next(
        (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)),
        exc.default_code if isinstance(exc.default_code, str) else "error",
    )
    errors = None
    if isinstance(exc, drf.ValidationError):
        message = "The request is not valid."
        errors = _field_errors(exc.detail)
    elif isinstance(exc, drf.Throttled):
        message = "Too many requests. Try again later."
    else:
        message = str(exc.detail) if not isinstance(exc.detail, (list, dict)) else str(exc)
    detail_code = getattr(exc.detail, "code", None)
    if isinstance(exc, drf.PermissionDenied) and detail_code not in (None, "permission_denied"):
        code = str(detail_code)  # e.g. insufficient_scope, consent_required
    extra = None
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf.Throttled) and wait is not None:
        extra = {"retry_after": math.ceil(wait)}  # the same value DRF puts in Retry-After
    response.data = error_body(
        status=response.status_code,
        code=code,
        message=message,
        request=request,
        errors=errors,
        extra=extra,
    )
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/o/"))


def error_response(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    """An error outside DRF: JSON in the shared shape on the API and OAuth paths, else text."""
    return _plain_error(request, status, code, message)


def _plain_error(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body(status=status, code=code, message=message, request=request), status=status
        )
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        # A body over DATA_UPLOAD_MAX_MEMORY_SIZE read outside a DRF view (or without a
        # Content-Length, which RequestLimitsMiddleware checks first) is a 413, not a 400.
        return _plain_error(
            request, 413, PayloadTooLarge.default_code, PayloadTooLarge.default_message
        )
    return _plain_error(request, 400, "bad_request", "Bad request.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _plain_error(request, 403, "permission_denied", "Permission denied.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _plain_error(request, 404, "not_found", "Not found.")


def handler500(request: HttpRequest) -> HttpResponse:
    return _plain_error(request, 500, "server_error", "An unexpected error occurred.")
