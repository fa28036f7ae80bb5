"""Engagement models: templates, campaigns, their occurrences, the delivery outbox, devices and
each patient's reminder preferences.

The outbox (`Delivery`) has one row per (occurrence, patient, channel); its unique constraint and
`idempotency_key` are what make a reminder arrive once despite retries, crashes and overlapping
beat runs. Nothing here holds clinical data: a cohort is a rule, resolved to patient ids.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from patientportal.accounts.models import Patient


class Channel(models.TextChoices):
    PUSH = "push", "Push notification"
    EMAIL = "email", "E-mail"
    INBOX = "inbox", "In-app inbox"


class MessageTemplate(models.Model):
    """A reminder's text. Placeholders are `{first_name}`-style names from a fixed whitelist
    (see `engagement.templating`); nothing else is interpreted.

    Push notifications and e-mails show a generic text unless `show_text_outside_app` is set: a
    lock screen or a mailbox is not the place for what a reminder is about.
    """

    name = models.CharField(max_length=120, unique=True)
    title = models.CharField(max_length=120)
    body = models.TextField(max_length=2000)
    show_text_outside_app = models.BooleanField(
        default=False,
        help_text="Show this title and body in push notifications and e-mails. Off: they say "
        "only that a new reminder is waiting in the app. Never turn on for clinical detail.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "message template"

    def __str__(self) -> str:
        return self.name


class Audience(models.TextChoices):
    """Who a campaign goes to; each value is a cohort selector in `engagement.cohorts`."""

    PATIENT = "patient", "One patient"
    ALL_PATIENTS = "all_patients", "All patients (who consented to reminders)"
    ALL_CONNECTED = "all_connected", "All patients with a connected health system"
    STALE_DATA = "stale_data", "Patients whose data is stale"
    NEEDS_RECONNECTION = "needs_reconnection", "Patients whose connection needs reconnection"
    CONDITION_CODE = "condition_code", "Patients with a condition code"
    MEDICATION_CODE = "medication_code", "Patients with a medication code"


class Campaign(models.Model):
    """A reminder to one patient or a cohort, one-off or recurring, at a local wall-clock time.

    The schedule is floating: `send_time` on `starts_on` (and each RRULE recurrence) is read in
    each patient's own time zone, so "09:00" is 09:00 for everyone, summer and winter.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        CANCELLED = "cancelled", "Cancelled"
        FINISHED = "finished", "Finished"

    class Kind(models.TextChoices):
        STAFF = "staff", "Scheduled by staff"
        SYSTEM = "system", "System event"

    name = models.CharField(max_length=160)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.STAFF)
    # System campaigns (e.g. "reconnect your health system") are found by slug.
    slug = models.SlugField(max_length=60, null=True, blank=True, unique=True)
    template = models.ForeignKey(MessageTemplate, on_delete=models.PROTECT, related_name="+")
    audience = models.CharField(max_length=24, choices=Audience.choices)
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    cohort_code = models.CharField(
        max_length=64, blank=True, help_text="Condition or medication code (system|code)."
    )
    stale_after_days = models.PositiveIntegerField(default=30)
    starts_on = models.DateField()
    send_time = models.TimeField(help_text="Local time in each patient's time zone.")
    rrule = models.CharField(
        max_length=300,
        blank=True,
        help_text="Optional RFC 5545 recurrence rule without DTSTART, e.g. FREQ=WEEKLY;BYDAY=MO.",
    )
    ends_on = models.DateField(null=True, blank=True, help_text="Last local day (inclusive).")
    send_push = models.BooleanField(default=True)
    send_email = models.BooleanField(default=False)
    send_inbox = models.BooleanField(default=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # Occurrences up to this floating local time have been planned (stored as UTC wall time).
    planned_through = models.DateTimeField(null=True, blank=True, editable=False)
    activated_at = models.DateTimeField(null=True, blank=True, editable=False)
    cancelled_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                name="engagement_campaign_patient_iff_one_patient",
                condition=(Q(audience="patient") & Q(patient__isnull=False))
                | (~Q(audience="patient") & Q(patient__isnull=True)),
            ),
            models.CheckConstraint(
                name="engagement_campaign_ends_after_start",
                condition=Q(ends_on__isnull=True) | Q(ends_on__gte=models.F("starts_on")),
            ),
            models.CheckConstraint(
                name="engagement_campaign_has_a_channel",
                condition=Q(send_push=True) | Q(send_email=True) | Q(send_inbox=True),
            ),
        ]
        indexes = [models.Index(fields=["status", "kind"])]

    def __str__(self) -> str:
        return self.name

    @property
    def channels(self) -> list[str]:
        wanted = [
            (self.send_push, Channel.PUSH),
            (self.send_email, Channel.EMAIL),
            (self.send_inbox, Channel.INBOX),
        ]
        return [str(channel) for on, channel in wanted if on]


class Occurrence(models.Model):
    """One firing of a campaign at a floating local time (or one system event for one patient).

    Expansion into outbox rows runs in batches of patients; `cursor` is the last patient id done,
    so a crashed expansion resumes where it stopped.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        EXPANDED = "expanded", "Expanded"
        CANCELLED = "cancelled", "Cancelled"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="occurrences")
    # The floating local wall time, stored with UTC as a neutral carrier (09:00 means 09:00 local).
    local_start = models.DateTimeField()
    # The first instant any time zone reaches `local_start` (UTC+14): expansion may start then.
    expand_after = models.DateTimeField()
    # A system event targets one patient and carries its own idempotency key.
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    event_key = models.CharField(max_length=120, null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    cursor = models.CharField(max_length=64, blank=True)
    patients_expanded = models.PositiveIntegerField(default=0)
    expanded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["local_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "local_start"],
                condition=Q(event_key__isnull=True),
                name="engagement_occurrence_once_per_local_start",
            ),
        ]
        indexes = [models.Index(fields=["status", "expand_after"])]

    def __str__(self) -> str:
        return f"occurrence #{self.pk}"


class DeliveryStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"  # claimed by a worker; back to scheduled if its lease expires
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    OPENED = "opened", "Opened"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class Delivery(models.Model):
    """The outbox: one reminder occurrence, to one patient, on one channel.

    Inbox rows are also what the patient's app lists (ids are UUIDs: not enumerable).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    occurrence = models.ForeignKey(Occurrence, on_delete=models.CASCADE, related_name="deliveries")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    idempotency_key = models.CharField(max_length=100, unique=True)
    due_at = models.DateTimeField()
    status = models.CharField(
        max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.SCHEDULED
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["occurrence", "patient", "channel"],
                name="engagement_delivery_once_per_occurrence_patient_channel",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "due_at"], name="engagement_delivery_due"),
            models.Index(fields=["patient", "channel", "due_at"], name="engagement_inbox"),
            models.Index(fields=["campaign", "status"], name="engagement_delivery_stats"),
        ]

    def __str__(self) -> str:
        return f"delivery {str(self.id)[:8]}"


class Device(models.Model):
    """A push registration from the mobile app (an APNs device token or an FCM registration
    token). A token belongs to one patient at a time: re-registering moves it."""

    class Platform(models.TextChoices):
        APNS = "apns", "Apple (APNs)"
        FCM = "fcm", "Firebase Cloud Messaging"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    token = models.CharField(max_length=4096)
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    registered_at = models.DateTimeField()
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "token_hash"], name="engagement_device_token_once"
            ),
        ]
        indexes = [models.Index(fields=["patient", "disabled_at"])]

    def __str__(self) -> str:
        return f"{self.platform} device {str(self.id)[:8]}"


class ReminderPreference(models.Model):
    """How a patient wants reminders: channels, quiet hours (local time), or not at all.
    No row means the defaults (push and inbox, no e-mail, no quiet hours)."""

    patient = models.OneToOneField(
        Patient, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    push = models.BooleanField(default=True)
    email = models.BooleanField(default=False)
    inbox = models.BooleanField(default=True)
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    opted_out_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="engagement_quiet_hours_both_or_neither",
                condition=Q(quiet_start__isnull=True, quiet_end__isnull=True)
                | Q(quiet_start__isnull=False, quiet_end__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"preferences of patient {str(self.patient_id)[:8]}"

    def allows(self, channel: str) -> bool:
        return bool({"push": self.push, "email": self.email, "inbox": self.inbox}.get(channel))
