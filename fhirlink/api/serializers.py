"""Narrow serializers for the connections API. No token, code, state or secret ever appears."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from fhirlink import hooks
from fhirlink.api.directory_serializers import EhrStatusSerializer
from fhirlink.directory.health import connection_ehr_status
from fhirlink.models import (
    MANAGED_RELATIONSHIPS,
    Connection,
    ConnectionStatus,
    HealthSystem,
    Relationship,
)
from fhirlink.services.people import connection_label
from patientportal.core.api.fields import BlankAsNullURLField, StrictJSONTypesMixin


class HealthSystemSerializer(serializers.ModelSerializer[HealthSystem]):
    logo_url = BlankAsNullURLField()

    class Meta:
        model = HealthSystem
        fields = ["id", "name", "logo_url"]
        read_only_fields = fields


class PersonSerializer(serializers.Serializer[Any]):
    relationship = serializers.ChoiceField(
        choices=Relationship.choices,
        help_text=(
            "`self`: the account holder's own record. Anything else: a record they manage "
            "(`managed` until they say more: `child`, `parent`, `partner`, `other`). Read "
            "a managed record with `?person=<connection id>` on the records API."
        ),
    )
    label = serializers.CharField(  # type: ignore[assignment]  # a field named "label"
        allow_null=True, help_text="The account holder's own name for this person, if set."
    )


class PersonUpdateSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    label = serializers.CharField(  # type: ignore[assignment]  # a field named "label"
        required=False, allow_blank=True, max_length=60, trim_whitespace=True
    )
    relationship = serializers.ChoiceField(
        required=False, choices=[(r.value, r.label) for r in MANAGED_RELATIONSHIPS]
    )


class ConnectionSerializer(serializers.ModelSerializer[Connection]):
    health_system = HealthSystemSerializer(read_only=True)
    status = serializers.ChoiceField(choices=ConnectionStatus.choices, read_only=True)
    sync = serializers.SerializerMethodField()
    offline_access = serializers.SerializerMethodField(
        help_text="The health system granted a refresh token (syncing continues unattended)."
    )
    ehr_status = serializers.SerializerMethodField(
        help_text="Whether the health system is up, down or retired (endpoint health checks)."
    )
    person = serializers.SerializerMethodField(help_text="Whose record this connection holds.")

    class Meta:
        model = Connection
        fields = [
            "id",
            "health_system",
            "status",
            "last_outcome",
            "granted_resources",
            "declined_resources",
            "connected_at",
            "last_synced_at",
            "needs_reauth_at",
            "disconnected_at",
            "created_at",
            "offline_access",
            "sync",
            "ehr_status",
            "person",
        ]
        read_only_fields = fields

    def get_offline_access(self, obj: Connection) -> bool:
        return bool(obj.refresh_token_blob)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_sync(self, obj: Connection) -> dict[str, Any] | None:
        return hooks.sync_progress(connection=obj)

    @extend_schema_field(PersonSerializer)
    def get_person(self, obj: Connection) -> dict[str, Any]:
        return {"relationship": obj.relationship, "label": connection_label(obj)}

    @extend_schema_field(EhrStatusSerializer)
    def get_ehr_status(self, obj: Connection) -> dict[str, Any]:
        return EhrStatusSerializer(connection_ehr_status(connection=obj)).data


class ConnectionStartSerializer(StrictJSONTypesMixin, serializers.Serializer[Any]):
    health_system = serializers.UUIDField()
    connection = serializers.UUIDField(
        required=False, help_text="Reconnect this existing connection (optional)."
    )
    return_uri = serializers.CharField(
        required=False,
        max_length=500,
        help_text="The app's deep link for the result; must be one the server registered.",
    )


class ConnectionStartResponseSerializer(serializers.Serializer[Any]):
    connection = ConnectionSerializer()
    launch = serializers.UUIDField(help_text="This launch attempt's id.")
    start_url = serializers.URLField(
        help_text=(
            "A single-use, short-lived URL on this server. Open it in the system browser, where "
            "the patient is signed in to this server as the same account (else it asks them to "
            "sign in first); it binds the launch to that browser and goes on to the health "
            "system's sign-in page."
        )
    )
    expires_at = serializers.DateTimeField(help_text="When `start_url` stops working.")
    requested_resources = serializers.ListField(child=serializers.CharField())


class DisconnectQuerySerializer(serializers.Serializer[Any]):
    purge = serializers.BooleanField(required=False, default=False)


class RevocationSerializer(serializers.Serializer[Any]):
    endpoint_advertised = serializers.BooleanField()
    refresh_token = serializers.CharField(allow_null=True)
    access_token = serializers.CharField(allow_null=True)


class DisconnectReceiptSerializer(serializers.Serializer[Any]):
    connection = serializers.UUIDField()
    health_system = serializers.CharField()
    disconnected_at = serializers.DateTimeField()
    revocation = RevocationSerializer()
    local_tokens_destroyed = serializers.BooleanField()
    purged = serializers.BooleanField()
    erased = serializers.DictField(child=serializers.IntegerField())
    data_key_destroyed = serializers.BooleanField()
