"""Sync runs, their per-stream checkpoints, per-type watermarks and quarantined pages."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class SyncRunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"


ACTIVE_RUN_STATUSES = (SyncRunStatus.QUEUED, SyncRunStatus.RUNNING)


class SyncTrigger(models.TextChoices):
    CONNECT = "connect", "First sync after connecting"
    SCHEDULE = "schedule", "Scheduled"
    PATIENT = "patient", "Asked by the patient"
    STAFF = "staff", "Started by staff"


class StreamMode(models.TextChoices):
    FULL = "full", "Full pass (reconciles)"
    INCREMENTAL = "incremental", "Incremental (_lastUpdated)"
    REFETCH = "refetch", "Full pass without reconcile"


class StreamStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class SyncRun(models.Model):
    """One sync of one connection. At most one queued/running run per connection (constraint);
    the worker executing it holds a lease (`lease_owner`, `lease_until`) renewed after every page,
    so a killed worker's run is taken over and resumed from its streams' checkpoints."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(
        "fhirlink.Connection", on_delete=models.CASCADE, related_name="sync_runs"
    )
    trigger = models.CharField(max_length=16, choices=SyncTrigger.choices)
    status = models.CharField(
        max_length=16, choices=SyncRunStatus.choices, default=SyncRunStatus.QUEUED
    )
    resource_types = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True)  # {type: {fetched, created, ...}}
    errors = models.JSONField(default=list, blank=True)  # [{type, code}] codes only, no PHI
    references = models.JSONField(default=list, blank=True)  # ["Practitioner/1", ...] to fetch
    # References the previous run could not fetch, asked for again once the streams are stored
    # (unless a page names them first); and the extra steps (references, attachments) enqueued
    # and not done yet: the run finishes when no stream is pending and this is zero.
    references_pending = models.JSONField(default=list, blank=True)
    extras_pending = models.PositiveIntegerField(default=0)
    # What the run did not read because the patient did not grant it (not an error: the run
    # can still succeed): [{type, reason: "not_granted", references: n}].
    skipped = models.JSONField(default=list, blank=True)
    pages = models.PositiveIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection"],
                condition=Q(status__in=["queued", "running"]),
                name="fhirlink_one_active_sync_per_connection",
            )
        ]
        indexes = [models.Index(fields=["status", "lease_until"])]

    def __str__(self) -> str:
        return f"sync run {str(self.id)[:8]}"


class SyncStream(models.Model):
    """One chain of pages of a run: a resource type, or one date window of Observation.
    `next_url` is the checkpoint: the server's next link after the last page stored."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="streams")
    resource_type = models.CharField(max_length=64)
    key = models.CharField(max_length=120)
    mode = models.CharField(max_length=16, choices=StreamMode.choices)
    params = models.JSONField(default=dict)
    next_url = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=StreamStatus.choices, default=StreamStatus.PENDING
    )
    pages = models.PositiveIntegerField(default=0)
    fetched = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    error = models.CharField(max_length=64, blank=True)
    watermark_candidate = models.DateTimeField(null=True, blank=True)
    # When the stream last moved (planned, or a page stored): a pending stream that has not
    # moved for a lease is stuck (its step message was lost) and its run is taken over.
    stepped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="fhirlink_sync_stream_unique")
        ]

    def __str__(self) -> str:
        return f"stream {self.key}"


class SyncWatermark(models.Model):
    """Per connection and resource type: where the next incremental sync starts (`since`, the
    server time the last complete pass began), and when the type was last fully reconciled."""

    connection = models.ForeignKey(
        "fhirlink.Connection", on_delete=models.CASCADE, related_name="sync_watermarks"
    )
    resource_type = models.CharField(max_length=64)
    since = models.DateTimeField(null=True, blank=True)
    last_full_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "resource_type"], name="fhirlink_sync_watermark_unique"
            )
        ]

    def __str__(self) -> str:
        return f"watermark {self.resource_type}"


class SyncQuarantine(models.Model):
    """A page that was not JSON or not FHIR: its error, and the body encrypted with the
    patient's data key (it may hold PHI), capped in size."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="quarantined")
    connection = models.ForeignKey(
        "fhirlink.Connection", on_delete=models.CASCADE, related_name="sync_quarantine"
    )
    resource_type = models.CharField(max_length=64)
    error = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    body_size = models.PositiveIntegerField(default=0)
    body = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"quarantined {self.resource_type} page ({self.error})"
