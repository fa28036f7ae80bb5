"""Narrow serializers for the patient's reminder endpoints."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from engagement import scheduling, templating
from engagement.models import Delivery, Device
from patientportal.core.api.fields import LocalTimeField, StrictJSONTypesMixin, TimeZoneField
from patientportal.core.api.schema import one_of_required, together_or_neither


class DeviceRegisterSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    platform = serializers.ChoiceField(choices=Device.Platform.choices)
    token = serializers.CharField(min_length=8, max_length=4096, trim_whitespace=True)


class DeviceSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(read_only=True)
    platform = serializers.CharField(read_only=True)
    registered_at = serializers.DateTimeField(read_only=True)


class ReminderSerializer(serializers.Serializer[Any]):
    """An inbox item: the template's text rendered for this patient; no internal ids."""

    id = serializers.UUIDField(read_only=True)
    title = serializers.SerializerMethodField()
    body = serializers.SerializerMethodField()
    status = serializers.CharField(read_only=True)
    due_at = serializers.DateTimeField(read_only=True)
    delivered_at = serializers.DateTimeField(read_only=True)
    opened_at = serializers.DateTimeField(read_only=True)
    acknowledged_at = serializers.DateTimeField(read_only=True)
    snoozed_until = serializers.DateTimeField(read_only=True)

    def _placeholders(self, obj: Delivery) -> dict[str, str]:
        local = scheduling.to_local(obj.due_at, obj.patient.time_zone)
        return {
            "first_name": obj.patient.user.first_name,
            "app_name": settings.ENGAGEMENT_APP_NAME,
            "reminder_date": f"{local.day} {local:%B %Y}",
        }

    def get_title(self, obj: Delivery) -> str:
        return templating.render(obj.campaign.template.title, self._placeholders(obj))

    def get_body(self, obj: Delivery) -> str:
        return templating.render(obj.campaign.template.body, self._placeholders(obj))


@one_of_required("minutes", "until")
class SnoozeSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    minutes = serializers.IntegerField(min_value=1, max_value=7 * 24 * 60, required=False)
    until = serializers.DateTimeField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("minutes" in attrs) == ("until" in attrs):
            raise serializers.ValidationError("Give exactly one of `minutes` or `until`.")
        return attrs


@together_or_neither("quiet_start", "quiet_end")
class PreferencesSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    time_zone = TimeZoneField(required=False)
    push = serializers.BooleanField(required=False)
    email = serializers.BooleanField(required=False)
    inbox = serializers.BooleanField(required=False)
    quiet_start = LocalTimeField(required=False, allow_null=True)
    quiet_end = LocalTimeField(required=False, allow_null=True)
    opted_out = serializers.BooleanField(required=False)

    def validate_time_zone(self, value: str) -> str:
        try:
            scheduling.zone(value)
        except scheduling.ScheduleError as exc:
            raise serializers.ValidationError(
                "Unknown time zone.", code="invalid_time_zone"
            ) from exc
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("quiet_start" in attrs) != ("quiet_end" in attrs):
            raise serializers.ValidationError("Give both quiet_start and quiet_end.")
        if ("quiet_start" in attrs) and (attrs["quiet_start"] is None) != (
            attrs["quiet_end"] is None
        ):
            raise serializers.ValidationError("Give both ends of the quiet hours, or neither.")
        return attrs
