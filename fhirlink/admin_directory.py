"""Admin for the health-system directory: entries (hold back / release), the platform app
registrations (secret write-only), import runs and endpoint health with its recorded changes.
None of it is patient data."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest

from fhirlink.admin import secret_field
from fhirlink.directory.platform import directory_entries_hold_back, platform_app_save
from fhirlink.models import (
    DirectoryEntry,
    DirectoryImport,
    EndpointChange,
    EndpointHealth,
    PlatformApp,
)
from patientportal.core.errors import ApplicationError


class _ReadOnly(admin.ModelAdmin[Any]):
    serves_patient_data = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DirectoryEntry)
class DirectoryEntryAdmin(_ReadOnly):
    list_display = ["name", "city", "state", "postal_code", "source", "status", "held_back"]
    list_filter = ["source", "status", "held_back", "state"]
    search_fields = ["name", "search_text", "tenant", "postal_code", "identifier"]
    readonly_fields = [f.name for f in DirectoryEntry._meta.fields]
    actions = ["hold_back", "release"]
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewing only; holding back goes through the actions (they need change permission).
        return bool(request.user.has_perm("fhirlink.change_directoryentry")) and obj is None

    @admin.action(description="Hold back (hide from patients; no new connections)")
    def hold_back(self, request: HttpRequest, queryset: Any) -> None:
        count = directory_entries_hold_back(
            entry_ids=list(queryset.values_list("pk", flat=True)), held_back=True
        )
        self.message_user(request, f"{count} entries held back.", messages.SUCCESS)

    @admin.action(description="Release (show to patients again)")
    def release(self, request: HttpRequest, queryset: Any) -> None:
        count = directory_entries_hold_back(
            entry_ids=list(queryset.values_list("pk", flat=True)), held_back=False
        )
        self.message_user(request, f"{count} entries released.", messages.SUCCESS)


class PlatformAppForm(forms.ModelForm[PlatformApp]):
    secret = secret_field()

    class Meta:
        model = PlatformApp
        fields = [
            "source",
            "name",
            "client_id",
            "client_auth",
            "jwt_key_id",
            "jwt_alg",
            "scope_syntax",
            "resources",
            "enabled",
        ]


@admin.register(PlatformApp)
class PlatformAppAdmin(admin.ModelAdmin[PlatformApp]):
    """One app registration for every tenant of a directory source (e.g. the Oracle Health
    patient app): the health systems created from the directory use it."""

    serves_patient_data = False
    form = PlatformAppForm
    list_display = ["name", "source", "client_id", "client_auth", "scope_syntax", "enabled"]
    readonly_fields = ["secret_stored", "updated_at"]

    @admin.display(description="secret stored", boolean=True)
    def secret_stored(self, obj: PlatformApp) -> bool:
        return obj.has_secret

    def save_model(self, request: HttpRequest, obj: PlatformApp, form: Any, change: bool) -> None:
        try:
            updated = platform_app_save(app=obj, secret=form.cleaned_data.get("secret") or None)
        except ApplicationError as exc:
            self.message_user(request, f"{exc.code}: {exc.message}", messages.ERROR)
            return
        self.message_user(request, f"{updated} health systems created from it updated.")


@admin.register(DirectoryImport)
class DirectoryImportAdmin(_ReadOnly):
    list_display = [
        "started_at",
        "source",
        "release",
        "total",
        "added",
        "changed",
        "renamed",
        "retired",
        "connections_marked",
    ]
    list_filter = ["source"]
    readonly_fields = [f.name for f in DirectoryImport._meta.fields]


class EndpointChangeInline(admin.TabularInline[EndpointChange, EndpointHealth]):
    model = EndpointChange
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "detected_at",
        "capability_date_before",
        "capability_date_after",
        "resources_added",
        "resources_removed",
        "endpoints_moved",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EndpointHealth)
class EndpointHealthAdmin(_ReadOnly):
    """Endpoint health: connected endpoints checked often, the rest slowly."""

    list_display = [
        "fhir_base_url",
        "state",
        "consecutive_failures",
        "failure_count",
        "last_error",
        "last_checked_at",
        "last_ok_at",
        "changes_count",
    ]
    list_filter = ["state", "last_error"]
    search_fields = ["fhir_base_url"]
    readonly_fields = [f.name for f in EndpointHealth._meta.fields]
    inlines = [EndpointChangeInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).annotate(changes_total=models.Count("changes"))

    @admin.display(description="changes", ordering="changes_total")
    def changes_count(self, obj: Any) -> int:
        return int(obj.changes_total)
