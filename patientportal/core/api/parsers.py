"""The API's JSON parser: DRF's, with input that would crash the parser answered as a 400.

DRF parses the body lazily, and django-oauth-toolkit's authentication reads `request.POST`
before the view runs, so a parser failure surfaces while authenticating. DRF's own parser lets
a `RecursionError` (JSON nested a few thousand levels deep) escape as a 500; here it is a
`ParseError` like any other malformed body (400 `malformed_request` in the shared error shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
