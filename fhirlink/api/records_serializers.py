"""Serializers of the records API: query parameters (validated) and responses (documented)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from fhirlink.records import sharing as sharing_states
from fhirlink.records.export import FORMATS


@extend_schema_field(
    {
        "type": "string",
        "anyOf": [{"format": "date"}, {"format": "date-time"}],
        "description": "YYYY-MM-DD (midnight UTC) or an ISO 8601 date-time.",
    }
)
class FlexibleDateTimeField(serializers.Field[datetime, str, str, Any]):
    """A date (YYYY-MM-DD, midnight UTC) or an ISO 8601 date-time with offset."""

    def to_internal_value(self, data: Any) -> datetime:
        text = str(data)
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            # In UTC: PostgreSQL refuses offsets past +-15:59 that Python reads (e.g. -19:29).
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise serializers.ValidationError("Use YYYY-MM-DD or an ISO 8601 date-time.") from None

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class PageQuerySerializer(serializers.Serializer[Any]):
    cursor = serializers.CharField(required=False, max_length=500)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)
    include = serializers.ChoiceField(choices=["raw"], required=False)


class RecordListQuerySerializer(PageQuerySerializer):
    category = serializers.CharField(required=False, max_length=100)
    code = serializers.CharField(required=False, max_length=500)
    status = serializers.CharField(required=False, max_length=40)
    date_from = FlexibleDateTimeField(required=False)
    date_to = FlexibleDateTimeField(required=False)
    connection = serializers.UUIDField(required=False)
    health_system = serializers.SlugField(required=False)


class RecordDetailQuerySerializer(serializers.Serializer[Any]):
    view = serializers.ChoiceField(choices=["friendly", "fhir"], required=False, default="friendly")
    include = serializers.ChoiceField(choices=["raw"], required=False)


class TrendQuerySerializer(serializers.Serializer[Any]):
    code = serializers.RegexField(
        r"^[0-9A-Za-z.\-]{1,40}$",
        required=False,
        help_text="LOINC code. Without it: the codes the patient has values for (`available`).",
    )
    date_from = FlexibleDateTimeField(required=False)
    date_to = FlexibleDateTimeField(required=False)
    connection = serializers.UUIDField(required=False)


class DocumentContentQuerySerializer(serializers.Serializer[Any]):
    attachment = serializers.IntegerField(required=False, min_value=0, max_value=50, default=0)


class ExportCreateSerializer(serializers.Serializer[Any]):
    format = serializers.ChoiceField(choices=sorted(FORMATS), default="bundle")


# --- Responses (documentation) -------------------------------------------------------------------


class CodingSerializer(serializers.Serializer[Any]):
    system = serializers.CharField()
    code = serializers.CharField()
    display = serializers.CharField()


class SourceSerializer(serializers.Serializer[Any]):
    connection = serializers.UUIDField()
    health_system = serializers.CharField()
    health_system_slug = serializers.CharField()


class FlagsSerializer(serializers.Serializer[Any]):
    valid = serializers.BooleanField(help_text="False: stored as received but not valid R4.")
    validation_error = serializers.CharField(help_text="Which fields failed (never values).")
    unreadable = serializers.BooleanField(help_text="The payload could not be decrypted.")


class ComponentSerializer(serializers.Serializer[Any]):
    display = serializers.CharField()
    code = CodingSerializer(allow_null=True)
    value = serializers.FloatField(allow_null=True)
    unit = serializers.CharField()
    unit_code = serializers.CharField()
    value_text = serializers.CharField(allow_null=True)


class RecordSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The record's API id.")
    resource_type = serializers.CharField()
    fhir_id = serializers.CharField()
    display = serializers.CharField()
    code = CodingSerializer(allow_null=True, help_text="LOINC/standard before proprietary.")
    codings = CodingSerializer(many=True)
    category = serializers.CharField()
    status = serializers.CharField()
    date = serializers.CharField(allow_null=True)
    value = serializers.FloatField(allow_null=True)
    unit = serializers.CharField()
    value_text = serializers.CharField(allow_null=True)
    components = ComponentSerializer(many=True)
    # "source" clashes with Field.source in the type stubs; declared through locals().
    locals()["source"] = SourceSerializer(help_text="Where the record came from.")
    last_updated = serializers.DateTimeField(allow_null=True)
    flags = FlagsSerializer()
    resource = serializers.JSONField(required=False, help_text="With include=raw only.")


class RecordPageSerializer(serializers.Serializer[Any]):
    results = RecordSerializer(many=True)
    next = serializers.URLField(allow_null=True)
    next_cursor = serializers.CharField(allow_null=True)


class DemographicsSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    birth_date = serializers.CharField(allow_null=True)
    gender = serializers.CharField(allow_null=True)
    deceased = serializers.BooleanField()
    phone = serializers.CharField(allow_null=True)
    email = serializers.CharField(allow_null=True)
    address = serializers.JSONField(allow_null=True)
    active = serializers.BooleanField()
    record_id = serializers.IntegerField()
    health_system = serializers.CharField()


class SummaryCountsSerializer(serializers.Serializer[Any]):
    active_conditions = serializers.IntegerField()
    active_medications = serializers.IntegerField()
    allergies = serializers.IntegerField()
    vital_signs = serializers.IntegerField()
    lab_results = serializers.IntegerField()
    immunizations = serializers.IntegerField()
    encounters = serializers.IntegerField()
    documents = serializers.IntegerField()


SHARING_HELP = (
    "What the patient shared with this app at the health systems: `shared`, `partly_shared` "
    "(some categories only, or at some health systems only), `not_shared` (the patient "
    "declined it: its list is empty, never an error), `not_available` (not asked for, or the "
    "health system does not offer it)."
)


class SharingCategorySerializer(serializers.Serializer[Any]):
    category = serializers.CharField(help_text="An observation-category code, e.g. laboratory.")
    sharing = serializers.ChoiceField(choices=sharing_states.STATES, help_text=SHARING_HELP)


class SharingSerializer(serializers.Serializer[Any]):
    record_type = serializers.CharField(help_text="As in /records/{record_type}.")
    resource_type = serializers.CharField()
    sharing = serializers.ChoiceField(choices=sharing_states.STATES, help_text=SHARING_HELP)
    categories = SharingCategorySerializer(
        many=True, help_text="Observation: one per observation-category code; otherwise empty."
    )


class SummarySerializer(serializers.Serializer[Any]):
    demographics = DemographicsSerializer(allow_null=True)
    conditions = RecordSerializer(many=True)
    medications = RecordSerializer(many=True)
    allergies = RecordSerializer(many=True)
    vital_signs = RecordSerializer(many=True, help_text="Latest per code.")
    lab_results = RecordSerializer(many=True)
    immunizations = RecordSerializer(many=True)
    counts = SummaryCountsSerializer()
    sharing = SharingSerializer(
        many=True, help_text="Per record type (and Observation category): shared or not."
    )


class TrendPointSerializer(serializers.Serializer[Any]):
    date = serializers.CharField(allow_null=True)
    value = serializers.FloatField(help_text="In the series' canonical unit.")
    original_value = serializers.FloatField()
    original_unit = serializers.CharField()
    record_id = serializers.IntegerField()
    health_system = serializers.CharField()


class TrendSeriesSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    display = serializers.CharField()
    unit = serializers.CharField()
    points = TrendPointSerializer(many=True)


class AvailableCodeSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    category = serializers.CharField()
    count = serializers.IntegerField()
    unit = serializers.CharField(help_text="Canonical unit, empty when not a known family.")


class TrendSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    display = serializers.CharField()
    unit = serializers.CharField(help_text="Canonical UCUM unit every value is converted to.")
    series = TrendSeriesSerializer(many=True)
    skipped = serializers.IntegerField(help_text="Values without a convertible quantity.")
    truncated = serializers.BooleanField()
    available = AvailableCodeSerializer(
        many=True, required=False, help_text="Only without `code`: what can be plotted."
    )


class ChangeSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    resource_type = serializers.CharField()
    fhir_id = serializers.CharField()
    deleted = serializers.BooleanField()
    reason = serializers.ChoiceField(choices=["", "deleted", "entered-in-error", "masked"])
    changed_at = serializers.DateTimeField()
    record = RecordSerializer(allow_null=True)


class ChangesSerializer(serializers.Serializer[Any]):
    results = ChangeSerializer(many=True)
    next_cursor = serializers.CharField(help_text="Pass back as `cursor`; store it.")
    has_more = serializers.BooleanField()


class ExportSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    format = serializers.ChoiceField(choices=sorted(FORMATS))
    status = serializers.ChoiceField(
        choices=["pending", "ready", "downloaded", "voided"],
        help_text="`voided`: the data was erased (disconnect with purge, account deletion) "
        "after the export was requested; it cannot be downloaded (410 `export_gone`).",
    )
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    resources = serializers.IntegerField(allow_null=True)
    size = serializers.IntegerField(allow_null=True)
    download_url = serializers.URLField(allow_null=True)
