"""Engagement staff's screens: templates, campaigns (with cohort size and delivery statistics),
and the outbox, read-only. Only users with the Engagement role's model permissions see them;
no screen shows clinical data or patients' names: patients appear as short ids."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from engagement import selectors, services, templating
from engagement.exceptions import InvalidSchedule
from engagement.models import Campaign, Delivery, MessageTemplate
from patientportal.accesslog.logged import AccessLoggedAdminMixin
from patientportal.core.errors import ApplicationError


class MessageTemplateForm(forms.ModelForm[MessageTemplate]):
    class Meta:
        model = MessageTemplate
        fields = ["name", "title", "body", "show_text_outside_app"]
        help_texts = {
            "body": "Placeholders: "
            + ", ".join("{" + name + "}" for name in templating.PLACEHOLDERS)
            + ". Write '{{' and '}}' for literal braces.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for field in ("title", "body"):
            try:
                templating.placeholders_in(data.get(field) or "")
            except templating.TemplateError as exc:
                self.add_error(field, str(exc))
        return data


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin[MessageTemplate]):
    serves_patient_data = False
    form = MessageTemplateForm
    list_display = ["name", "title", "show_text_outside_app", "updated_at"]
    search_fields = ["name"]


class CampaignForm(forms.ModelForm[Campaign]):
    class Meta:
        model = Campaign
        fields = [
            "name",
            "template",
            "audience",
            "patient",
            "cohort_code",
            "stale_after_days",
            "starts_on",
            "send_time",
            "rrule",
            "ends_on",
            "send_push",
            "send_email",
            "send_inbox",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        candidate = Campaign(**{k: v for k, v in data.items() if k in self.Meta.fields})
        try:
            services.campaign_validate(campaign=candidate)
        except InvalidSchedule as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin[Campaign]):
    serves_patient_data = False
    patient_data_exempt_reason = (
        "Shows schedule rules, cohort sizes and delivery counts; a one-patient campaign shows "
        "only the patient's opaque id (choosing it goes through the logged patient list). No "
        "record, name or contact detail appears."
    )
    form = CampaignForm
    list_display = [
        "name",
        "status",
        "audience",
        "schedule",
        "stat_sent",
        "stat_delivered",
        "stat_failed",
        "stat_acknowledged",
        "stat_scheduled",
    ]
    list_filter = ["status", "audience", "kind"]
    search_fields = ["name"]
    raw_id_fields = ["patient"]
    actions = ["schedule_campaigns", "cancel_campaigns"]
    readonly_fields = ["status", "audience_size", "delivery_statistics", "activated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return selectors.campaign_list_with_stats().select_related("template")

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> Any:
        fields = list(self.readonly_fields)
        if obj is not None and obj.status != Campaign.Status.DRAFT:
            # Scheduled campaigns keep their schedule: cancel and create a new one instead.
            fields += list(CampaignForm.Meta.fields)
        return fields

    @admin.display(description="Schedule")
    def schedule(self, obj: Campaign) -> str:
        text = f"{obj.starts_on} {obj.send_time:%H:%M} local"
        if obj.rrule:
            text += f", {obj.rrule}"
        if obj.ends_on:
            text += f", until {obj.ends_on}"
        return text

    @admin.display(description="Sent")
    def stat_sent(self, obj: Any) -> int:
        return int(obj.stat_sent)

    @admin.display(description="Delivered")
    def stat_delivered(self, obj: Any) -> int:
        return int(obj.stat_delivered)

    @admin.display(description="Failed")
    def stat_failed(self, obj: Any) -> int:
        return int(obj.stat_failed)

    @admin.display(description="Acknowledged")
    def stat_acknowledged(self, obj: Any) -> int:
        return int(obj.stat_acknowledged)

    @admin.display(description="Pending")
    def stat_scheduled(self, obj: Any) -> int:
        return int(obj.stat_scheduled)

    @admin.display(description="Cohort size now")
    def audience_size(self, obj: Campaign) -> str:
        if obj.pk is None:
            return "Save the campaign to see its cohort's size."
        size = services.campaign_audience_size(campaign=obj)
        reachable = services.campaign_reachable_size(campaign=obj)
        return f"{size} patients ({reachable} consent to reminders and have not opted out)"

    @admin.display(description="Deliveries")
    def delivery_statistics(self, obj: Campaign) -> str:
        if obj.pk is None:
            return "-"
        stats = selectors.campaign_stats(campaign_id=obj.pk)
        return ", ".join(f"{name}: {value}" for name, value in stats.items())

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description="Schedule the selected campaigns", permissions=["change"])
    def schedule_campaigns(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset.filter(status=Campaign.Status.DRAFT):
            try:
                services.campaign_schedule(campaign=campaign, actor=request.user)  # type: ignore[arg-type]
            except ApplicationError as exc:
                self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)
                continue
            size = services.campaign_audience_size(campaign=campaign)
            reachable = services.campaign_reachable_size(campaign=campaign)
            self.message_user(
                request,
                f"'{campaign}' scheduled; its cohort has {size} patients now "
                f"({reachable} reachable).",
                messages.SUCCESS,
            )

    @admin.action(description="Cancel the selected campaigns", permissions=["change"])
    def cancel_campaigns(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        total = 0
        ids = list(queryset.values_list("pk", flat=True))
        for campaign_id in ids:
            total += services.campaign_cancel(campaign_id=campaign_id)
        self.message_user(
            request,
            f"{len(ids)} campaign(s) cancelled; {total} pending deliveries cancelled.",
            messages.SUCCESS,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        return False  # cancel instead: the delivery history stays


@admin.register(Delivery)
class DeliveryAdmin(AccessLoggedAdminMixin, admin.ModelAdmin[Delivery]):
    """The outbox, read-only: status and timing, never message text or patient details.
    Which patient got which reminder is about patients: list and detail pages are logged."""

    access_log_patient_field = "patient"
    access_log_resource_type = "Delivery"

    list_display = [
        "short_id",
        "campaign",
        "patient_ref",
        "channel",
        "status",
        "due_at",
        "sent_at",
        "attempts",
        "error_code",
    ]
    list_filter = ["status", "channel"]
    list_select_related = ["campaign"]
    fields = readonly_fields = (
        "campaign",
        "patient_ref",
        "channel",
        "status",
        "due_at",
        "attempts",
        "sent_at",
        "delivered_at",
        "failed_at",
        "opened_at",
        "acknowledged_at",
        "cancelled_at",
        "error_code",
    )
    show_full_result_count = False

    @admin.display(description="Delivery")
    def short_id(self, obj: Delivery) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Patient")
    def patient_ref(self, obj: Delivery) -> str:
        return f"patient {str(obj.patient_id)[:8]}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False
