"""Narrow serializers of the /api/v1/me endpoints."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from patientportal.core.api.fields import StrictJSONTypesMixin, TimeZoneField
from patientportal.core.api.schema import request_schema_extra

from ..models import AccountDeletionRequest, Patient
from ..services import time_zone_is_valid


class MeSerializer(serializers.Serializer[Patient]):
    """The signed-in patient's account (read)."""

    id = serializers.UUIDField(read_only=True, help_text="The patient id.")
    email = serializers.EmailField(source="user.email", read_only=True)
    given_name = serializers.CharField(source="user.first_name", read_only=True)
    family_name = serializers.CharField(source="user.last_name", read_only=True)
    email_verified = serializers.BooleanField(source="user.email_verified", read_only=True)
    time_zone = serializers.CharField(read_only=True, help_text="IANA time zone name.")
    created_at = serializers.DateTimeField(read_only=True)


@request_schema_extra(minProperties=1, additionalProperties=False)
class MeUpdateSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    """Fields a patient may change. The e-mail address cannot be changed here."""

    given_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    family_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    time_zone = TimeZoneField(
        required=False, help_text='IANA time zone name, e.g. "Europe/London".'
    )

    def validate_time_zone(self, value: str) -> str:
        if not time_zone_is_valid(value):
            raise serializers.ValidationError("Unknown time zone.", code="invalid_time_zone")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {
                    name: serializers.ErrorDetail("This field cannot be changed.", "read_only")
                    for name in sorted(unknown)
                }
            )
        if not attrs:
            raise serializers.ValidationError(
                "Send at least one of given_name, family_name, time_zone.", code="empty"
            )
        return attrs


class DeletionReceiptSerializer(serializers.Serializer[AccountDeletionRequest]):
    receipt_id = serializers.UUIDField(source="id", read_only=True)
    status = serializers.ChoiceField(choices=AccountDeletionRequest.Status.choices, read_only=True)
    requested_at = serializers.DateTimeField(read_only=True)
    sessions_revoked = serializers.IntegerField(
        read_only=True, help_text="App sessions signed out by this request."
    )
    message = serializers.SerializerMethodField()

    def get_message(self, obj: AccountDeletionRequest) -> str:
        return (
            "Your request is recorded and you are signed out everywhere. Your data will be "
            "erased by our team; keep this receipt id if you contact us."
        )


class SessionSerializer(serializers.Serializer[Any]):
    """One signed-in app session (a refresh-token family). Never a token value."""

    id = serializers.UUIDField(source="token_family", read_only=True)
    application = serializers.CharField(source="application.name", read_only=True)
    scopes = serializers.SerializerMethodField()
    signed_in_at = serializers.DateTimeField(read_only=True)
    last_refreshed_at = serializers.DateTimeField(source="created", read_only=True)
    current = serializers.SerializerMethodField(
        help_text="True for the session of the token making this request."
    )

    def get_scopes(self, obj: Any) -> list[str]:
        access_token = obj.access_token
        return sorted(access_token.scope.split()) if access_token is not None else []

    def get_current(self, obj: Any) -> bool:
        return bool(obj.token_family) and obj.token_family == self.context.get("current_family")
