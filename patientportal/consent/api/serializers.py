"""Consent API serializers (narrow and explicit)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from patientportal.core.api.fields import StrictJSONTypesMixin

from ..models import ConsentAction, ConsentDocument, ConsentRecord, ConsentStatus, Purpose


class ConsentDocumentSerializer(serializers.ModelSerializer[ConsentDocument]):
    class Meta:
        model = ConsentDocument
        fields = [
            "purpose",
            "version",
            "language",
            "title",
            "body",
            "effective_at",
            "requires_reconsent",
        ]


class ConsentStateSerializer(serializers.Serializer[Any]):
    """One purpose: the current document and where the patient stands."""

    purpose = serializers.ChoiceField(choices=Purpose.choices)
    status = serializers.ChoiceField(
        choices=ConsentStatus.choices,
        help_text="consent_needed: never granted, or a newer version requires re-consent.",
    )
    granted_version = serializers.IntegerField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    document = ConsentDocumentSerializer()


class ConsentGrantSerializer(StrictJSONTypesMixin, serializers.Serializer[dict[str, object]]):
    version = serializers.IntegerField(
        min_value=1, help_text="The version of the document the patient read and accepted."
    )
    language = serializers.CharField(max_length=16, required=False)


class ConsentRecordSerializer(serializers.ModelSerializer[ConsentRecord]):
    action = serializers.ChoiceField(choices=ConsentAction.choices)
    application = serializers.CharField(source="application_client_id")

    class Meta:
        model = ConsentRecord
        fields = ["id", "purpose", "action", "version", "language", "created_at", "application"]
