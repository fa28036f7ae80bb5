"""Admin for the sync engine: runs with their progress and errors, quarantined pages (metadata
only). Read-only; payloads are never shown (they are encrypted with the patient's key)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html_join

from fhirlink.models import SyncQuarantine, SyncRun
from fhirlink.services.sync.progress import sync_run_progress
from patientportal.accesslog.logged import AccessLoggedAdminMixin


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SyncRun)
class SyncRunAdmin(AccessLoggedAdminMixin, ReadOnlyAdmin):
    access_log_patient_field = "connection__patient"
    list_display = [
        "id",
        "connection",
        "trigger",
        "status",
        "percent",
        "pages",
        "requests",
        "duration_ms",
        "created_at",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["connection"]
    fields = (
        "id",
        "connection",
        "trigger",
        "status",
        "attempts",
        "pages",
        "bytes",
        "requests",
        "duration_ms",
        "started_at",
        "finished_at",
        "progress_by_type",
        "errors",
    )
    readonly_fields = fields

    @admin.display(description="progress %")
    def percent(self, obj: SyncRun) -> int:
        return int(sync_run_progress(obj)["percent"])

    @admin.display(description="progress by type")
    def progress_by_type(self, obj: SyncRun) -> str:
        types = sync_run_progress(obj)["types"]
        return format_html_join(
            "",
            "<div>{}: {} ({}/{} streams, {} pages; fetched {}, created {}, updated {}, "
            "unchanged {}, tombstoned {}, invalid {})</div>",
            (
                (
                    name,
                    t["status"],
                    t["streams_done"],
                    t["streams"],
                    t["pages"],
                    t["fetched"],
                    t["created"],
                    t["updated"],
                    t["unchanged"],
                    t["tombstoned"],
                    t["invalid"],
                )
                for name, t in sorted(types.items())
            ),
        )


@admin.register(SyncQuarantine)
class SyncQuarantineAdmin(AccessLoggedAdminMixin, ReadOnlyAdmin):
    access_log_patient_field = "connection__patient"
    list_display = [
        "id",
        "connection",
        "resource_type",
        "error",
        "status",
        "body_size",
        "created_at",
    ]
    list_filter = ["error", "resource_type"]
    fields = (
        "id",
        "run",
        "connection",
        "resource_type",
        "error",
        "status",
        "body_size",
        "created_at",
    )
    readonly_fields = fields
