"""Serializers of the health-system search (`GET /api/v1/health-systems`)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from rest_framework import serializers

from fhirlink.directory.selectors import AVAILABLE, DOWN, NOT_CONFIGURED, UNAVAILABLE

MAX_OFFSET = 10_000


def cursor_encode(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def cursor_decode(value: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise serializers.ValidationError("Invalid cursor.", code="invalid_cursor") from None
    offset = data.get("o") if isinstance(data, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise serializers.ValidationError("Invalid cursor.", code="invalid_cursor")
    return offset


class HealthSystemSearchQuerySerializer(serializers.Serializer[Any]):
    search = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        trim_whitespace=True,
        help_text="Name, alias or town; typos and accents are forgiven.",
    )
    state = serializers.RegexField(
        r"^[A-Za-z]{2}$",
        required=False,
        allow_blank=True,
        help_text="Two-letter state code (e.g. VA).",
        error_messages={"invalid": "Use a two-letter state code, e.g. VA."},
    )
    near = serializers.RegexField(
        r"^\d{5}(-\d{4})?$",
        required=False,
        allow_blank=True,
        help_text="A US ZIP code: closer organisations rank first among equal matches.",
        error_messages={"invalid": "Use a 5-digit ZIP code, e.g. 23298."},
    )
    cursor = serializers.CharField(required=False, max_length=200)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=50, default=20)

    def validate_cursor(self, value: str) -> int:
        return cursor_decode(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown query parameter."] for name in sorted(unknown)}
            )
        return attrs


class HealthSystemSearchResultSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(help_text="Post it as `health_system` to /api/v1/connections.")
    name = serializers.CharField()
    city = serializers.CharField(allow_blank=True)
    state = serializers.CharField(allow_blank=True)
    postal_code = serializers.CharField(allow_blank=True)
    logo_url = serializers.URLField(allow_null=True, help_text="Null when none is known.")
    available = serializers.BooleanField(help_text="Can be connected now.")
    availability = serializers.ChoiceField(
        choices=[AVAILABLE, NOT_CONFIGURED, UNAVAILABLE, DOWN],
        help_text=(
            "available; not_configured (no app registration covers it on this server); "
            "unavailable (held by the operator); down (not answering its health checks)."
        ),
    )
    directory = serializers.CharField(
        help_text="The directory it comes from (e.g. oracle-millennium), or `registered` (by hand)."
    )


class HealthSystemSearchPageSerializer(serializers.Serializer[Any]):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = HealthSystemSearchResultSerializer(many=True)


class EhrStatusSerializer(serializers.Serializer[Any]):
    """How the connection's health system is doing, from the endpoint health checks."""

    state = serializers.ChoiceField(
        choices=["up", "down", "unknown", "retired"],
        help_text=(
            "down: not answering its checks (syncing resumes by itself); retired: no longer "
            "published (search for it again and reconnect)."
        ),
    )
    since = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField(allow_null=True, help_text="A sentence to show the patient.")
