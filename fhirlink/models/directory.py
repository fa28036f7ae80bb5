"""The health-system directory: published patient-access endpoints (Oracle's list, SMART
User-access Brands bundles), the one app registration per directory source, import runs, and
endpoint health.

A `DirectoryEntry` becomes a connectable `HealthSystem` lazily, when a patient picks it
(`fhirlink.directory.platform.directory_health_system_resolve`), using the `PlatformApp` of its
source. The materialised health system's primary key is the entry's id, so the id the search
API returns is the id a client posts to `/api/v1/connections`, before and after.
"""

from __future__ import annotations

import uuid

from django.db import models

from fhirlink.models.health_systems import ClientAuth, JwtAlg, ScopeSyntax, default_resources


class PlatformApp(models.Model):
    """One app registration (e.g. the Oracle Health patient app) that covers every tenant of a
    directory source. The secret / private key is sealed by the vault and never shown back."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.SlugField(
        max_length=64,
        unique=True,
        help_text="The directory source this registration covers (e.g. oracle-millennium).",
    )
    name = models.CharField(max_length=200)
    client_id = models.CharField(max_length=200)
    client_auth = models.CharField(
        max_length=32, choices=ClientAuth.choices, default=ClientAuth.PUBLIC
    )
    jwt_key_id = models.CharField(max_length=200, blank=True)
    jwt_alg = models.CharField(max_length=8, choices=JwtAlg.choices, default=JwtAlg.RS384)
    secret_key_id = models.CharField(max_length=64, blank=True, editable=False)
    secret_blob = models.BinaryField(null=True, blank=True, editable=False)
    scope_syntax = models.CharField(max_length=2, choices=ScopeSyntax.choices, default="v2")
    resources = models.JSONField(default=default_resources)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["source"]
        verbose_name = "platform app registration"

    def __str__(self) -> str:
        return f"{self.name} ({self.source})"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_blob)


class EntryStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired (no longer published)"


class DirectoryEntry(models.Model):
    """One organisation's patient-access endpoint, as published by its source."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.SlugField(max_length=64)
    external_id = models.CharField(
        max_length=300, help_text="Organization id @ Endpoint id in the source bundle."
    )
    identifier = models.CharField(max_length=200, blank=True)
    name = models.CharField(max_length=300)
    aliases = models.JSONField(default=list, blank=True)
    city = models.CharField(max_length=120, blank=True)
    state = models.CharField(max_length=40, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    logo_url = models.URLField(max_length=500, blank=True)
    tenant = models.CharField(max_length=100, blank=True)
    fhir_base_url = models.URLField(max_length=500)
    release = models.CharField(max_length=64, blank=True)
    search_text = models.CharField(
        max_length=1000, blank=True, editable=False, help_text="Normalised name, aliases, city."
    )
    status = models.CharField(
        max_length=16, choices=EntryStatus.choices, default=EntryStatus.ACTIVE
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    held_back = models.BooleanField(
        default=False, help_text="Hidden from patients (an operator's decision)."
    )
    health_system = models.OneToOneField(
        "fhirlink.HealthSystem",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="directory_entry",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "directory entries"
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], name="fhirlink_direntry_source_ext_unique"
            )
        ]
        indexes = [
            models.Index(fields=["status", "held_back"], name="fhirlink_direntry_status"),
            models.Index(fields=["fhir_base_url"], name="fhirlink_direntry_base"),
        ]

    def __str__(self) -> str:
        return self.name


class DirectoryImport(models.Model):
    """One import run and what it changed (names of organisations only: no patient data)."""

    id = models.BigAutoField(primary_key=True)
    source = models.SlugField(max_length=64)
    release = models.CharField(max_length=64, blank=True)
    origin = models.CharField(max_length=500, help_text="The URL or file name imported.")
    started_at = models.DateTimeField(auto_now_add=True)
    total = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    renamed = models.PositiveIntegerField(default=0)
    retired = models.PositiveIntegerField(default=0)
    connections_marked = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.source} {self.release}"


class EndpointState(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    UP = "up", "Up"
    DOWN = "down", "Down"


class EndpointHealth(models.Model):
    """The last checks of one FHIR base URL: smart-configuration + CapabilityStatement."""

    id = models.BigAutoField(primary_key=True)
    fhir_base_url = models.URLField(max_length=500, unique=True)
    state = models.CharField(
        max_length=16, choices=EndpointState.choices, default=EndpointState.UNKNOWN
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    down_since = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    failure_count = models.PositiveIntegerField(default=0)
    check_count = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=64, blank=True)
    snapshot = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["fhir_base_url"]
        verbose_name_plural = "endpoint health"

    def __str__(self) -> str:
        return self.fhir_base_url


class EndpointChange(models.Model):
    """What changed between two successful checks of an endpoint."""

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(EndpointHealth, on_delete=models.CASCADE, related_name="changes")
    detected_at = models.DateTimeField()
    capability_date_before = models.CharField(max_length=40, blank=True)
    capability_date_after = models.CharField(max_length=40, blank=True)
    resources_added = models.JSONField(default=list, blank=True)
    resources_removed = models.JSONField(default=list, blank=True)
    endpoints_moved = models.JSONField(
        default=dict, blank=True, help_text="{name: [before, after]} of the SMART endpoints."
    )

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.endpoint_id} @ {self.detected_at:%Y-%m-%d %H:%M}"
