"""Consent documents (written by operators) and the consent history (read-only, logged)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db import transaction
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone

from patientportal.accesslog.logged import AccessLoggedAdminMixin, ReadOnlyAdminMixin

from .models import ConsentDocument, ConsentRecord, PatientConsent
from .services import consent_apply_reconsent

_DOCUMENT_FIELDS = (
    "purpose",
    "version",
    "language",
    "title",
    "body",
    "effective_at",
    "requires_reconsent",
)


@admin.register(ConsentDocument)
class ConsentDocumentAdmin(admin.ModelAdmin[ConsentDocument]):
    """A new wording is a new version: a document in effect can no longer be edited."""

    serves_patient_data = False
    list_display = (
        "purpose",
        "version",
        "language",
        "title",
        "effective_at",
        "requires_reconsent",
        "offered",
    )
    list_filter = ("purpose", "language", "requires_reconsent")
    fields = _DOCUMENT_FIELDS

    @admin.display(boolean=True, description="purpose offered")
    def offered(self, obj: ConsentDocument) -> bool:
        """False for a purpose not in CONSENT_ENABLED_PURPOSES (ai_processing by default)."""
        return obj.purpose in settings.CONSENT_ENABLED_PURPOSES

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is not None and obj.effective_at <= timezone.now():
            return _DOCUMENT_FIELDS
        return ("purpose", "version", "language") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ConsentDocument, form: ModelForm[Any], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if obj.requires_reconsent:
            # Patients on an older version move to "consent needed" once this is in effect
            # (now, or by the periodic task when effective_at comes).
            transaction.on_commit(lambda: consent_apply_reconsent())


@admin.register(PatientConsent)
class PatientConsentAdmin(
    AccessLoggedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin[PatientConsent]
):
    list_display = ("patient", "purpose", "status", "version", "updated_at")
    list_filter = ("purpose", "status")
    list_select_related = ("patient",)
    access_log_resource_type = "Consent"


@admin.register(ConsentRecord)
class ConsentRecordAdmin(
    AccessLoggedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin[ConsentRecord]
):
    """The consent history: never edited."""

    list_display = (
        "created_at",
        "patient",
        "purpose",
        "action",
        "version",
        "language",
        "application_client_id",
    )
    list_filter = ("purpose", "action")
    list_select_related = ("patient",)
    date_hierarchy = "created_at"
    access_log_resource_type = "ConsentRecord"
