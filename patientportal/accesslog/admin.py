"""The auditor's view of the access log: read-only, filterable, exportable, verifiable.

Nobody can add, change or delete rows here. Viewing and exporting the log are themselves logged.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import datetime, time
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.html import format_html

from .fhir import access_event_ndjson_line
from .logged import AccessLoggedAdminMixin, ReadOnlyAdminMixin
from .models import AccessAction, AccessEvent, AccessLogAnchor, AccessPurpose, ActorKind
from .services import HASHED_FIELDS, access_log_record, access_log_verify

CSV_FIELDS = [*HASHED_FIELDS, "prev_hash", "hash"]


class InputFilter(admin.SimpleListFilter):
    """A free-text filter box (exact value)."""

    template = "admin/accesslog/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return [("", "")]

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Iterator[Any]:
        all_choice: dict[str, Any] = dict(next(iter(super().choices(changelist))))
        parts = []
        for name, value in changelist.get_filters_params().items():
            if name == self.parameter_name:
                continue
            for item in value if isinstance(value, list) else [value]:
                parts.append((name, item))
        all_choice["query_parts"] = parts
        yield all_choice


class PatientFilter(InputFilter):
    title = "patient id"
    parameter_name = "patient"
    placeholder = "patient UUID"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.value():
            return queryset
        try:
            return queryset.filter(patient_id=uuid.UUID(str(self.value())))
        except ValueError:
            return queryset.none()


class ActorFilter(InputFilter):
    title = "actor user id"
    parameter_name = "actor"
    placeholder = "user id"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = str(self.value() or "")
        if not value:
            return queryset
        return queryset.filter(actor_user_id=int(value)) if value.isdigit() else queryset.none()


class _DateBound(InputFilter):
    placeholder = "YYYY-MM-DD"
    lookup = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.value():
            return queryset
        day = parse_date(str(self.value()))
        if day is None:
            return queryset.none()
        moment = timezone.make_aware(datetime.combine(day, time.min))
        return queryset.filter(**{f"occurred_at__{self.lookup}": moment})


class SinceFilter(_DateBound):
    title = "from (date)"
    parameter_name = "since"
    lookup = "gte"


class UntilFilter(_DateBound):
    title = "before (date)"
    parameter_name = "until"
    lookup = "lt"


def _csv_safe(value: Any) -> str:
    text = "" if value is None else str(value)
    # No formula injection when an auditor opens the file in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


@admin.register(AccessEvent)
class AccessEventAdmin(AccessLoggedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin[AccessEvent]):
    access_log_patient_field = "patient_id"
    access_log_resource_type = "AccessEvent"
    change_list_template = "admin/accesslog/accessevent/change_list.html"
    list_display = (
        "seq",
        "occurred_at",
        "actor_kind",
        "actor_role",
        "actor_name",
        "actor_user_id",
        "patient_id",
        "action",
        "resource_type",
        "purpose_shown",
        "outcome",
    )
    list_filter = (
        PatientFilter,
        ActorFilter,
        "action",
        "actor_kind",
        "outcome",
        "purpose",
        SinceFilter,
        UntilFilter,
    )
    date_hierarchy = "occurred_at"
    ordering = ("-seq",)
    show_full_result_count = False

    @admin.display(description="purpose", ordering="purpose")
    def purpose_shown(self, obj: AccessEvent) -> str:
        """The purpose's label; emergency (break-glass) access stands out."""
        if obj.purpose == AccessPurpose.EMERGENCY:
            return format_html("<strong>{}</strong>", "EMERGENCY (break-glass)")
        return obj.get_purpose_display() or "-"

    list_per_page = 100

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv_view),
                name="accesslog_accessevent_export_csv",
            ),
            path(
                "export.ndjson",
                self.admin_site.admin_view(self.export_ndjson_view),
                name="accesslog_accessevent_export_ndjson",
            ),
            path(
                "verify/",
                self.admin_site.admin_view(self.verify_view),
                name="accesslog_accessevent_verify",
            ),
        ]
        return own + super().get_urls()

    def _filtered(self, request: HttpRequest, export_format: str) -> QuerySet[AccessEvent]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        # The export is as of now: it does not include its own row, written next.
        head = AccessEvent.objects.aggregate(head=Max("seq"))["head"] or 0
        events = changelist.get_queryset(request).filter(seq__lte=head).order_by("seq")
        patient = request.GET.get("patient") or None
        try:
            patient_id = uuid.UUID(patient) if patient else None
        except ValueError:
            patient_id = None
        access_log_record(
            actor_kind=ActorKind.STAFF,
            actor_user=request.user,  # type: ignore[arg-type]
            action=AccessAction.EXPORT,
            patient=patient_id,
            resource_type="AccessEvent",
            query={"format": export_format, "params": sorted(request.GET.keys())},
            request=request,
        )
        return events

    def export_csv_view(self, request: HttpRequest) -> StreamingHttpResponse:
        events = self._filtered(request, "csv")
        writer = csv.writer(_Echo())

        def rows() -> Iterator[Any]:
            yield writer.writerow(CSV_FIELDS)
            for event in events.iterator(chunk_size=2000):
                yield writer.writerow([_csv_safe(getattr(event, f)) for f in CSV_FIELDS])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="access-log.csv"'
        return response

    def export_ndjson_view(self, request: HttpRequest) -> StreamingHttpResponse:
        events = self._filtered(request, "fhir-auditevent-ndjson")

        def lines() -> Iterator[str]:
            for event in events.iterator(chunk_size=2000):
                yield access_event_ndjson_line(event)

        response = StreamingHttpResponse(lines(), content_type="application/fhir+ndjson")
        response["Content-Disposition"] = 'attachment; filename="access-log.ndjson"'
        return response

    def verify_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = access_log_verify()
        if report.ok:
            messages.success(
                request,
                f"Access log intact: {report.checked} rows verified"
                + (f" from anchor #{report.anchor_seq}." if report.anchor_seq else "."),
            )
        else:
            messages.error(
                request,
                f"Access log TAMPERED: {len(report.problems)} problem(s); first: "
                f"{report.problems[0]}. Run `manage.py accesslog_verify` for the full report.",
            )
        return HttpResponseRedirect(reverse("admin:accesslog_accessevent_changelist"))


@admin.register(AccessLogAnchor)
class AccessLogAnchorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[AccessLogAnchor]):
    """Where the retention purge cut the chain (no patient data)."""

    serves_patient_data = False
    list_display = ("through_seq", "created_at", "purged_before", "rows_purged", "through_hash")
    readonly_fields = (
        "through_seq",
        "through_hash",
        "created_at",
        "purged_before",
        "rows_purged",
        "hash",
    )
