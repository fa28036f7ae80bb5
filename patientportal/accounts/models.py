"""Users (patients and staff) and the patient profile every patient-data row points to."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person who signs in: a patient (with a `patient` profile) or a staff user (is_staff).

    The e-mail address is the login. Staff roles are groups (see `roles.py`).
    """

    username = None  # type: ignore[assignment]
    email = models.EmailField("e-mail address", unique=True)
    email_verified_at = models.DateTimeField(null=True, blank=True)
    deletion_requested_at = models.DateTimeField(null=True, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    class Meta:
        verbose_name = "user"
        verbose_name_plural = "users"
        constraints = [
            # Addresses are stored lower-cased; this also holds for rows made outside the manager.
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        # Staff screens show ids, not e-mail addresses, unless a page has reason to.
        return f"user #{self.pk}"

    @property
    def is_patient(self) -> bool:
        return hasattr(self, "patient")

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


class Patient(models.Model):
    """The patient behind a user account. Every piece of patient data points here.

    `id` is a UUID so that patient references in URLs and logs cannot be enumerated.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(User, on_delete=models.PROTECT, related_name="patient")
    time_zone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"patient {str(self.id)[:8]}"


class AccountDeletionRequest(models.Model):
    """A patient's request to erase their account: the receipt, and the operators' work item.

    Recording the request revokes every OAuth token of the user and closes sign-in at once; the
    erasure itself (synced records, connections, the account) is done later by operators and
    jobs, which set `completed_at`. The row outlives the user (`user` becomes NULL, `patient_id`
    stays) as the proof that the request was honoured.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="deletion_requests"
    )
    patient_id = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_at = models.DateTimeField()
    sessions_revoked = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["requested_at"]
        constraints = [
            # One open request per user: asking twice returns the same receipt.
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(status="pending"),
                name="accounts_one_pending_deletion_request_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"deletion request {str(self.id)[:8]}"
