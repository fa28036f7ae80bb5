"""Response helpers: FHIR JSON, OperationOutcome, Cerner's non-FHIR errors, OAuth JSON."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

from .conf import PROFILE_CERNER, PROFILE_GENERIC, REALM

FHIR_JSON = "application/fhir+json"


def json_response(
    body: Any, *, status: int = 200, content_type: str = "application/json"
) -> HttpResponse:
    return HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status=status,
        content_type=f"{content_type}; charset=utf-8",
    )


def fhir_response(body: Any, *, status: int = 200) -> HttpResponse:
    response = json_response(body, status=status, content_type=FHIR_JSON)
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "WWW-Authenticate, X-Request-Id, Retry-After"
    return response


def operation_outcome(
    code: str, diagnostics: str, *, severity: str = "error", location: list[str] | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if location:
        issue["location"] = location
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, code: str, diagnostics: str, **kwargs: Any) -> HttpResponse:
    return fhir_response(operation_outcome(code, diagnostics, **kwargs), status=status)


def unauthorized(description: str = "Token has expired or signature is invalid") -> HttpResponse:
    """RFC 6750 challenge plus Cerner's OperationOutcome (code login, http.Authorization)."""
    challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'
    response = outcome_response(401, "login", challenge, location=["http.Authorization"])
    response["WWW-Authenticate"] = challenge
    return response


def insufficient_scope(profile: str = PROFILE_CERNER, resource_type: str = "") -> HttpResponse:
    """403 for a missing scope: Cerner's is not an OperationOutcome; the generic profile's is
    (FHIR's shape, issue code ``forbidden``), with RFC 6750's challenge."""
    if profile == PROFILE_GENERIC:
        what = f" to read {resource_type}" if resource_type else ""
        response = outcome_response(
            403,
            "forbidden",
            f"The access token has no scope{what}.",
            location=["http.Authorization"],
        )
        response["WWW-Authenticate"] = 'Bearer realm="fhir", error="insufficient_scope"'
        return response
    body = {
        "code": 403,
        "message": (
            'code="urn:cerner:error:oauth2:resource-access:insufficient-scopes", '
            'error="insufficient_scope", subcode="no_scope_for_resource_path"'
        ),
    }
    response = json_response(body, status=403)
    response["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="insufficient_scope"'
    return response


def oauth_json(body: dict[str, Any], *, status: int = 200) -> HttpResponse:
    response = json_response(body, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response
