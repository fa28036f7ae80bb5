"""Access-log API serializers: the patient's view (who, when, why), no internals."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import AccessAction, AccessEvent, ActorKind, Outcome
from ..selectors import access_event_public_id, actor_display


class AccessActorSerializer(serializers.Serializer[dict[str, Any]]):
    kind = serializers.ChoiceField(choices=ActorKind.choices)
    display = serializers.CharField(help_text="'You', the staff member's role and/or name, ...")


class AccessEventSerializer(serializers.ModelSerializer[AccessEvent]):
    id = serializers.SerializerMethodField(
        help_text="An opaque id of this entry (stable; says nothing about other entries)."
    )
    actor = serializers.SerializerMethodField()
    action = serializers.ChoiceField(choices=AccessAction.choices)
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    resource_count = serializers.SerializerMethodField()
    application = serializers.CharField(source="application_client_id")

    class Meta:
        model = AccessEvent
        fields = [
            "id",
            "occurred_at",
            "actor",
            "action",
            "resource_type",
            "resource_count",
            "purpose",
            "outcome",
            "application",
        ]

    @extend_schema_field(OpenApiTypes.UUID)
    def get_id(self, event: AccessEvent) -> str:
        return access_event_public_id(event)

    @extend_schema_field(AccessActorSerializer)
    def get_actor(self, event: AccessEvent) -> dict[str, str]:
        return {"kind": event.actor_kind, "display": actor_display(event)}

    @extend_schema_field(OpenApiTypes.INT)
    def get_resource_count(self, event: AccessEvent) -> int:
        return int(event.query.get("resource_count", len(event.resource_ids)))
