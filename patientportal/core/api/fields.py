"""Serializer fields whose output matches what the schema declares."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from functools import cache
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail


class BlankAsNullURLField(serializers.URLField):
    """A URL that may be unset: a blank model value renders as `null`, never `""`.

    The schema declares `{"type": "string", "format": "uri", "nullable": true}`; `""` is not a
    URI, and a client validating against the schema (or a generated one) would reject it.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return value or None


@extend_schema_field(
    {
        "type": "string",
        "enum": sorted(zoneinfo.available_timezones()),
        "description": 'An IANA time zone name, e.g. "Europe/London".',
    }
)
class TimeZoneField(serializers.CharField):
    """An IANA time zone name; the schema lists every name this server knows (an enum), so a
    client (or a generated request) never sends one the server refuses."""

    default_error_messages = {"invalid_time_zone": "Unknown time zone."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value not in _time_zones():
            self.fail("invalid_time_zone")
        return value


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# JSON types each field accepts in a request body (DRF would coerce 0 to "0", "1" to 1 or True).
_STRING_FIELDS = (
    serializers.CharField,
    serializers.ChoiceField,
    serializers.UUIDField,
    serializers.DateTimeField,
    serializers.DateField,
    serializers.TimeField,
)
_TYPE_ERRORS: list[tuple[tuple[type[serializers.Field[Any, Any, Any, Any]], ...], Any, str]] = [
    ((serializers.BooleanField,), lambda v: isinstance(v, bool), "Must be true or false."),
    (
        (serializers.IntegerField,),
        lambda v: isinstance(v, int) and not isinstance(v, bool),
        "A valid integer is required.",
    ),
    (
        (serializers.FloatField, serializers.DecimalField),
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "A valid number is required.",
    ),
    (_STRING_FIELDS, lambda v: isinstance(v, str), "Not a valid string."),
]


class StrictJSONTypesMixin:
    """For request-body serializers: a value of the wrong JSON type is a field error (400
    `validation_failed`, code `invalid`), as the schema says, instead of being coerced (DRF
    turns `0` into `"0"` for a string field, `"1"` into `1` or `true`). `null` is left to each
    field's `allow_null`."""

    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors: dict[str, list[ErrorDetail]] = {}
            for name, field in self.fields.items():
                if field.read_only or name not in data or data[name] is None:
                    continue
                if isinstance(field, serializers.MultipleChoiceField):
                    continue
                for classes, accepts, message in _TYPE_ERRORS:
                    if isinstance(field, classes) and not accepts(data[name]):
                        errors[name] = [ErrorDetail(message, code="invalid")]
                        break
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
        "example": "22:00",
        "description": "A wall-clock time, HH:MM or HH:MM:SS, in the patient's time zone.",
    }
)
class LocalTimeField(serializers.TimeField):
    """A wall-clock time without an offset (quiet hours are in the patient's own time zone).

    OpenAPI's `format: time` is RFC 3339's full-time, which requires an offset ("22:00:00Z"):
    neither what this field reads nor what it writes. The schema gives the exact pattern; the
    output is HH:MM:SS.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("format", "%H:%M:%S")
        kwargs.setdefault("input_formats", ["%H:%M:%S", "%H:%M"])
        super().__init__(**kwargs)
