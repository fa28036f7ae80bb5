"""Admin: operators manage the health-system registry; connections are read-only, token-free."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest

from fhirlink.models import ClientAuth, Connection, HealthSystem
from fhirlink.services.discovery import check_report
from fhirlink.services.launch import health_system_redirect_uri
from fhirlink.services.registry import health_system_set_secret
from patientportal.accesslog.logged import AccessLoggedAdminMixin
from patientportal.core.errors import ApplicationError
from patientportal.reviewpack.admin import review_packs_html
from patientportal.reviewpack.services.pack import review_pack_build, review_pack_store
from patientportal.reviewpack.services.review import health_system_hold_set


def _formfield(field: Any, **kwargs: Any) -> Any:
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


def secret_field() -> forms.CharField:
    """The write-only client secret / private key of a registration (a health system's, a
    platform app's): typed in, stored sealed, never rendered back."""
    return forms.CharField(
        required=False,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text=(
            "Client secret (client_secret_basic) or PEM private key (private_key_jwt). Write-only: "
            "stored encrypted, never shown. Leave empty to keep the stored one."
        ),
    )


class HealthSystemForm(forms.ModelForm[HealthSystem]):
    secret = secret_field()

    class Meta:
        model = HealthSystem
        formfield_callback = _formfield
        fields = [
            "name",
            "slug",
            "logo_url",
            "fhir_base_url",
            "tenant",
            "client_id",
            "client_auth",
            "jwt_key_id",
            "jwt_alg",
            "scope_syntax",
            "resources",
            "redirect_uri",
            "enabled",
            "review_state",
            "review_started_on",
            "review_approved_on",
            "reviewer",
            "agreement_kind",
            "agreement_reference",
            "agreement_signed_on",
            "review_notes",
            "hold_reason",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["review_state"].required = False

    def clean_review_state(self) -> str:
        # Optional in the form: a form without it keeps the stored state.
        state: str = self.cleaned_data.get("review_state") or self.instance.review_state
        return state

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        auth = data.get("client_auth")
        has_secret = bool(data.get("secret")) or bool(self.instance.secret_blob)
        if auth in (ClientAuth.CLIENT_SECRET_BASIC, ClientAuth.PRIVATE_KEY_JWT) and not has_secret:
            self.add_error("secret", "A confidential client needs its secret or private key.")
        if auth == ClientAuth.PRIVATE_KEY_JWT and not data.get("jwt_key_id"):
            self.add_error("jwt_key_id", "private_key_jwt needs the key id (kid).")
        return data


@admin.register(HealthSystem)
class HealthSystemAdmin(admin.ModelAdmin[HealthSystem]):
    serves_patient_data = False
    form = HealthSystemForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "name",
        "slug",
        "fhir_base_url",
        "client_auth",
        "scope_syntax",
        "enabled",
        "review_state",
        "on_hold",
    ]
    list_filter = ["enabled", "review_state", "on_hold", "client_auth", "scope_syntax"]
    search_fields = ["name", "slug", "fhir_base_url", "tenant"]
    readonly_fields = [
        "secret_stored",
        "redirect_uri_to_register",
        "discovery_fetched_at",
        "discovery_expires_at",
    ]
    actions = ["run_check", "hold", "release_hold", "generate_review_pack"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The hold is set by the actions (which date it), never by ticking a box.
        extra = ["on_hold", "held_at", "review_packs"]
        return [*super().get_readonly_fields(request, obj), *extra]

    @admin.display(description="security review packs")
    def review_packs(self, obj: HealthSystem) -> str:
        return review_packs_html(obj)

    @admin.action(description="Hold: patients see it as not available yet (nothing is deleted)")
    def hold(self, request: HttpRequest, queryset: Any) -> None:
        changed = sum(health_system_hold_set(health_system=hs, hold=True) for hs in queryset)
        self.message_user(request, f"{changed} health system(s) held.", messages.SUCCESS)

    @admin.action(description="Release the hold")
    def release_hold(self, request: HttpRequest, queryset: Any) -> None:
        changed = sum(health_system_hold_set(health_system=hs, hold=False) for hs in queryset)
        self.message_user(request, f"{changed} health system(s) released.", messages.SUCCESS)

    @admin.action(description="Generate the security review pack (kept with the review state)")
    def generate_review_pack(self, request: HttpRequest, queryset: Any) -> None:
        for health_system in queryset:
            pack = review_pack_build(
                health_system=health_system,
                junit_path=settings.BASE_DIR / "var" / "junit.xml",
                vuln_scan=False,
            )
            stored = review_pack_store(
                health_system=health_system,
                pack=pack,
                generated_by=request.user.get_username(),
            )
            self.message_user(
                request,
                f"{health_system.name}: review pack generated (SHA-256 {stored.sha256[:16]}; "
                "vulnerability scan not run from the admin: use manage.py security_review_pack).",
                messages.SUCCESS,
            )

    @admin.action(description="Check discovery (SMART configuration, FHIR version, scopes)")
    def run_check(self, request: HttpRequest, queryset: Any) -> None:
        for health_system in queryset:
            try:
                report = check_report(health_system)
            except ApplicationError as exc:
                self.message_user(
                    request, f"{health_system.name}: {exc.code}: {exc.message}", messages.ERROR
                )
                continue
            self.message_user(
                request,
                f"{health_system.name}: FHIR {report['fhir_version']}, PKCE "
                f"{report['pkce_s256']}, revocation "
                f"{'yes' if report['revocation'] else 'no'}; requesting "
                f"{', '.join(report['requested_resources']) or 'nothing'}; not supported: "
                f"{', '.join(report['not_supported']) or 'none'}",
                messages.SUCCESS,
            )

    @admin.display(description="secret stored", boolean=True)
    def secret_stored(self, obj: HealthSystem) -> bool:
        return obj.has_secret

    @admin.display(description="redirect URI to register at the EHR")
    def redirect_uri_to_register(self, obj: HealthSystem) -> str:
        if not obj.slug:
            return "(its own /fhirlink/callback/<slug>, once saved)"
        own = health_system_redirect_uri(obj)
        if obj.redirect_uri and obj.redirect_uri != own:
            return (
                f"{own} (this registration still uses {obj.redirect_uri}: register {own} at "
                "the EHR, then set it here)"
            )
        return own

    def save_model(self, request: HttpRequest, obj: HealthSystem, form: Any, change: bool) -> None:
        secret = form.cleaned_data.get("secret")
        if secret:
            health_system_set_secret(obj, secret)
        if not obj.redirect_uri:
            obj.redirect_uri = health_system_redirect_uri(obj)
        obj.discovery = None
        obj.discovery_expires_at = None
        super().save_model(request, obj, form, change)


@admin.register(Connection)
class ConnectionAdmin(AccessLoggedAdminMixin, admin.ModelAdmin[Connection]):
    """Sync health for staff; never a token (the sealed columns are not even listed)."""

    access_log_patient_field = "patient"
    list_display = ["id", "patient", "health_system", "status", "last_outcome", "last_synced_at"]
    list_filter = ["status", "health_system"]
    fields = (
        "id",
        "patient",
        "health_system",
        "status",
        "last_outcome",
        "granted_resources",
        "declined_resources",
        "connected_at",
        "last_refreshed_at",
        "refresh_failures",
        "last_refresh_error",
        "grant_last_used_at",
        "needs_reauth_at",
        "disconnected_at",
        "last_synced_at",
        "created_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


import fhirlink.admin_chart  # noqa: E402  (the patient chart page)
import fhirlink.admin_directory  # noqa: E402  (the health-system directory)
import fhirlink.admin_sync  # noqa: E402, F401  (the sync engine's admin)
