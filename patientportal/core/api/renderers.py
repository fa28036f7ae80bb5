"""The API's JSON renderer: DRF's `JSONRenderer`, encoded by orjson.

Why not DRF's own: `json.dumps` with DRF's encoder class is pure Python per value and was a tenth
of a records list request's CPU (a 50-item page is ~40 KB of JSON); orjson encodes the same page
about ten times faster. The bytes are DRF's: compact separators, UTF-8, date-times and the other
non-JSON types through DRF's encoder (`default`, so "...Z" for UTC, decimals as floats, lazy
strings), U+2028/U+2029 escaped. Where orjson would differ it is not used: pretty printing
(`Accept: application/json; indent=4`), settings that ask for ASCII or spaced output, and
anything orjson refuses (non-string dict keys, integers beyond 64 bits) go through DRF's path,
with its errors. Two differences: float exponents are spelled orjson's way (`1e-7`, not
`1e-07`: the same number), and a NaN or infinite float renders as `null` instead of failing the
whole response (DRF's strict mode raises; FHIR has no such values, but a hostile payload parsed
by `json.loads` can carry one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

_ENCODER = JSONEncoder()
# Date-times and dataclasses go to DRF's encoder (orjson's own formats differ from DRF's).
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        fast = (
            self.compact
            and not self.ensure_ascii
            and self.get_indent(accepted_media_type or "", dict(renderer_context or {})) is None
        )
        if fast:
            try:
                out = orjson.dumps(data, default=_ENCODER.default, option=_OPTIONS)
            except orjson.JSONEncodeError:
                pass  # DRF's path: the same output or the same error as without orjson
            else:
                return out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return super().render(data, accepted_media_type, renderer_context)
