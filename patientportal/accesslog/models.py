"""The access log: one append-only, hash-chained row per access to patient data.

Rows are never edited or deleted through the ORM (`save()` on an existing row, `delete()`,
`QuerySet.update()` and `QuerySet.delete()` raise) nor through the admin; on PostgreSQL a trigger
refuses UPDATE and DELETE as well (migration 0002). Each row's `hash` is SHA-256 over its
content and the previous row's hash (`prev_hash`), in `seq` order; `manage.py accesslog_verify`
recomputes the chain. The retention purge (`accesslog_purge`) is the one path that removes rows:
it removes the oldest ones only and records an `AccessLogAnchor` so the rest still verifies.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from patientportal.consent.models import Purpose


class ActorKind(models.TextChoices):
    PATIENT = "patient", "Patient"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System job"
    API_CLIENT = "api_client", "API client"


class AccessAction(models.TextChoices):
    READ = "read", "Read"
    LIST = "list", "List"
    SEARCH = "search", "Search"
    EXPORT = "export", "Export"
    SYNC_WRITE = "sync_write", "Sync write"
    DELETE = "delete", "Delete"
    CONSENT_CHANGE = "consent_change", "Consent change"
    CONNECT = "connect", "Connect"
    DISCONNECT = "disconnect", "Disconnect"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    NOT_FOUND = "not_found", "Not found"
    ERROR = "error", "Error"


class AccessPurpose(models.TextChoices):
    """Why patient data was used: a consent purpose, or a staff reason that needs no consent
    of its own (treatment by the assigned care team, break-glass emergency access)."""

    EHR_SYNC = Purpose.EHR_SYNC.value, Purpose.EHR_SYNC.label
    CARE_TEAM_ACCESS = Purpose.CARE_TEAM_ACCESS.value, Purpose.CARE_TEAM_ACCESS.label
    ENGAGEMENT = Purpose.ENGAGEMENT.value, Purpose.ENGAGEMENT.label
    AI_PROCESSING = Purpose.AI_PROCESSING.value, Purpose.AI_PROCESSING.label
    TREATMENT = "treatment", "Treatment (care team)"
    EMERGENCY = "emergency", "Emergency access (break-glass)"


class AppendOnlyError(TypeError):
    """Raised on any attempt to edit or delete access-log rows through the ORM."""


class AppendOnlyQuerySet(models.QuerySet[Any]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError(f"{self.model.__name__} rows are never edited.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{self.model.__name__} rows are never deleted.")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        raise AppendOnlyError(f"{self.model.__name__} rows are never edited.")


class AppendOnlyModel(models.Model):
    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are never edited.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{type(self).__name__} rows are never deleted.")


class AccessEvent(AppendOnlyModel):
    """One access to patient data (one per request, list or job run; never one per item)."""

    seq = models.BigIntegerField(unique=True, help_text="Position in the hash chain (1, 2, ...).")
    occurred_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    # Snapshots taken when the row is written, so the record survives role and name changes.
    actor_role = models.CharField(max_length=64, blank=True, default="")
    actor_name = models.CharField(max_length=150, blank=True, default="")
    application_client_id = models.CharField(max_length=100, blank=True, default="")
    # Not a foreign key: the log outlives the patient row and is never cascaded away.
    patient_id = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=16, choices=AccessAction.choices)
    resource_type = models.CharField(max_length=64, blank=True, default="")
    resource_ids = models.JSONField(default=list, blank=True)
    query = models.JSONField(default=dict, blank=True)
    purpose = models.CharField(max_length=32, choices=AccessPurpose.choices, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    request_id = models.CharField(max_length=64, blank=True, default="")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects: ClassVar[models.Manager[AccessEvent]] = models.Manager.from_queryset(
        AppendOnlyQuerySet
    )()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["patient_id", "-seq"], name="accessevent_patient"),
            models.Index(fields=["occurred_at"], name="accessevent_occurred"),
            models.Index(fields=["actor_user_id", "-seq"], name="accessevent_actor"),
        ]
        verbose_name = "access event"

    def __str__(self) -> str:
        return f"access #{self.seq} {self.action}"


class AccessLogAnchor(AppendOnlyModel):
    """A checkpoint written by the retention purge: the chain resumes after `through_seq`.

    `through_hash` is the hash of the last purged row, i.e. the `prev_hash` the first remaining
    row must carry. Anchors are append-only too; the newest one is where verification starts.
    """

    created_at = models.DateTimeField()
    through_seq = models.BigIntegerField()
    through_hash = models.CharField(max_length=64)
    purged_before = models.DateTimeField(help_text="Rows that occurred before this were purged.")
    rows_purged = models.BigIntegerField()
    # HMAC over the fields above and the previous anchor's hash: a forged anchor (to hide
    # deleted rows at the start of the chain) does not verify without the chain key.
    hash = models.CharField(max_length=64, default="")

    objects: ClassVar[models.Manager[AccessLogAnchor]] = models.Manager.from_queryset(
        AppendOnlyQuerySet
    )()

    class Meta:
        ordering = ["-through_seq"]
        verbose_name = "access log anchor"

    def __str__(self) -> str:
        return f"anchor through #{self.through_seq}"
