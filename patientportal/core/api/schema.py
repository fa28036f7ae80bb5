"""drf-spectacular hooks: the shared error schema on every operation, and the constraints a
serializer's `validate` enforces that drf-spectacular cannot read (`one_of_required`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_S = TypeVar("_S")

# Request serializer name (without "Serializer") -> schema keywords its `validate` enforces.
_REQUEST_EXTRA: dict[str, dict[str, Any]] = {}


def request_schema_extra(**keywords: Any) -> Callable[[type[_S]], type[_S]]:
    """Class decorator for a request serializer whose `validate` checks more than its fields
    (which fields go together, at least one field): the same rule as schema keywords on its
    request components (`XRequest`, `PatchedXRequest`), so a client is never surprised by a 400
    its schema allowed."""

    def register(serializer: type[_S]) -> type[_S]:
        _REQUEST_EXTRA[serializer.__name__.removesuffix("Serializer")] = keywords
        return serializer

    return register


def one_of_required(*names: str) -> Callable[[type[_S]], type[_S]]:
    """Exactly one of `names` must be given."""
    return request_schema_extra(oneOf=[{"required": [name]} for name in names])


def together_or_neither(first: str, second: str) -> Callable[[type[_S]], type[_S]]:
    """Both or neither of two nullable fields, and both null or both set."""
    given = {"anyOf": [{"required": [first]}, {"required": [second]}]}
    return request_schema_extra(
        anyOf=[
            {"not": given},
            {
                "required": [first, second],
                "properties": {first: {"type": "string"}, second: {"type": "string"}},
            },
            {
                "required": [first, second],
                "properties": {
                    first: {"not": {"type": "string"}},
                    second: {"not": {"type": "string"}},
                },
            },
        ]
    )


# `self` or a UUID (e.g. `?person=`): what a parameter read with uuid.UUID after "self" accepts.
SELF_OR_UUID: dict[str, Any] = {"type": "string", "anyOf": [{"enum": ["self"]}, {"format": "uuid"}]}

# DRF refuses a NUL character in every string field of a request body (PostgreSQL text cannot
# hold one); query parameters are each view's own and are not all read by a serializer.
NO_NUL = "^[^\\u0000]*$"

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
    for name, component in components.items():
        if name.endswith("Request"):
            for prop in component.get("properties", {}).values():
                _forbid_nul(prop)
    body_required: set[str] = set()
    for name, keywords in _REQUEST_EXTRA.items():
        for component in (f"{name}Request", f"Patched{name}Request"):
            if component in components:
                components[component].update(keywords)
                if "minProperties" in keywords or "oneOf" in keywords:
                    body_required.add(f"#/components/schemas/{component}")
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            # A body whose schema needs at least one property is itself required.
            body = operation.get("requestBody", {})
            refs = {m.get("schema", {}).get("$ref") for m in body.get("content", {}).values()}
            if refs & body_required:
                body["required"] = True
            # An optional query parameter sent empty (`?status=`) is read as not sent, by DRF
            # (QueryDict input), django-filter and the views alike: say so (OpenAPI 3.0).
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter.setdefault("allowEmptyValue", True)
            responses = operation["responses"]
            for status, description in _COMMON.items():
                responses.setdefault(status, {"description": description})
            # Every error answers in the one shape, documented or not by the view.
            for status, response in responses.items():
                if str(status)[:1] in ("4", "5") and not response.get("content"):
                    response["content"] = {"application/json": {"schema": ref}}
    return result


def _forbid_nul(schema: dict[str, Any]) -> None:
    """A free-text string (no format, enum or pattern of its own) says it holds no NUL."""
    if schema.get("type") == "array":
        schema = schema.get("items", {})
    if schema.get("type") == "string" and not {"format", "enum", "pattern", "anyOf"} & set(schema):
        schema["pattern"] = NO_NUL
