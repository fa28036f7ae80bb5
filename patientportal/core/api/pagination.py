"""Cursor pagination: stable under inserts, opaque to the client, no offset scans.

DRF's cursor is plain base64 of its position, which a client can edit into a value the
database refuses (a 500), and a bad one answers 404. Here the cursor is signed
(`django.core.signing`, bound to the listing's ordering), so only a cursor this server issued is
read; anything else, and a `page_size` that is not an integer from 1 to `max_page_size`, is
a 400 in the shared error shape, as the records API answers (`invalid_cursor`,
`validation_failed` on `page_size`).
"""

from __future__ import annotations

import re
from base64 import b64decode, b64encode
from typing import Any
from urllib import parse

from django.core import signing
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from patientportal.core.errors import ValidationFailed

_INTEGER = re.compile(r"-?[0-9]{1,100}")
SALT = "patientportal.core.api.cursor"


class InvalidCursor(ValidationFailed):
    default_code = "invalid_cursor"
    default_message = "The cursor is not valid for this listing."


def page_size_parse(raw: list[str], *, default: int, maximum: int) -> int:
    """The `page_size` query values -> an int in 1..maximum, or a field error (400)."""
    if not raw or raw == [""]:  # absent, or empty (the schema's allowEmptyValue)
        return default
    if len(raw) > 1:
        raise ValidationError({"page_size": ["Give page_size once."]}, code="invalid")
    value = raw[0]
    if not _INTEGER.fullmatch(value):
        raise ValidationError({"page_size": ["A valid integer is required."]}, code="invalid")
    number = int(value)
    if number < 1:
        raise ValidationError(
            {"page_size": ["Ensure this value is greater than or equal to 1."]}, code="min_value"
        )
    if number > maximum:
        raise ValidationError(
            {"page_size": [f"Ensure this value is less than or equal to {maximum}."]},
            code="max_value",
        )
    return number


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = "-created_at"
    cursor_query_description = "The opaque `next`/`previous` cursor of a previous page."
    page_size_query_description = "Items per page, 1-200 (default 50)."

    def get_page_size(self, request: Request) -> int:
        return page_size_parse(
            request.query_params.getlist("page_size"),
            default=self.page_size,
            maximum=self.max_page_size,
        )

    def _salt(self) -> str:
        ordering = self.ordering if isinstance(self.ordering, str) else ",".join(self.ordering)
        return f"{SALT}:{ordering}"

    def encode_cursor(self, cursor: pagination.Cursor) -> str:
        tokens: dict[str, str] = {}
        if cursor.offset != 0:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = str(cursor.position)
        querystring = parse.urlencode(tokens, doseq=True)
        encoded = signing.dumps(b64encode(querystring.encode()).decode("ascii"), salt=self._salt())
        assert self.base_url is not None  # set by paginate_queryset
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        values = request.query_params.getlist(self.cursor_query_param)
        if not values or values == [""]:
            return None
        if len(values) > 1:
            raise InvalidCursor()
        try:
            querystring = b64decode(signing.loads(values[0], salt=self._salt())).decode()
            tokens = parse.parse_qs(querystring, keep_blank_values=True)
            offset = int(tokens.get("o", ["0"])[0])
            reverse = tokens.get("r", ["0"])[0] == "1"
            position = tokens.get("p", [None])[0]
        except (signing.BadSignature, TypeError, ValueError):
            raise InvalidCursor() from None
        if offset < 0 or offset > self.offset_cutoff:
            raise InvalidCursor()
        # The stubs type a position as int; DRF keeps its ordering field's value as a string.
        return pagination.Cursor(offset=offset, reverse=reverse, position=position)  # type: ignore[arg-type]

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                    "default": self.page_size,
                }
        return parameters
