"""drf-spectacular hooks: the shared error schema on every operation."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message", "status"],
    "properties": {
        "code": {"type": "string", "description": "Stable machine-readable error code."},
        "message": {"type": "string", "description": "Human-readable message. Never PHI."},
        "status": {"type": "integer"},
        "request_id": {"type": "string", "nullable": True},
        "errors": {
            "type": "object",
            "description": "Field errors: {field: [{code, message}]}.",
            "additionalProperties": True,
        },
        "extra": {"type": "object", "additionalProperties": True},
    },
    "example": {
        "code": "not_found",
        "message": "Not found.",
        "status": 404,
        "request_id": "4f1c2e7a9b0d4c3e8f6a5b4c3d2e1f00",
    },
}

_COMMON = {
    "400": "The request is not valid.",
    "401": "Missing, expired or invalid access token.",
    "403": "The token lacks the scope, or the patient the consent, this operation needs.",
    "404": "Not found, or not yours.",
    "429": "Too many requests; see Retry-After.",
}


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in _COMMON.items():
                operation["responses"].setdefault(
                    status,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
    return result
