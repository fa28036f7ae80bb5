"""A patient's link to one health system (and one FHIR patient there), and its launch attempts."""

from __future__ import annotations

import uuid

from django.db import models


class ConnectionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    SYNCING = "syncing", "Syncing"
    NEEDS_REAUTH = "needs_reauth", "Needs reconnection"
    DISCONNECTED = "disconnected", "Disconnected"
    ERROR = "error", "Error"


class Relationship(models.TextChoices):
    """Whose record a connection holds, for the account that connected it. The callback sets
    SELF (the EHR's fhirUser is the record's patient, or absent) or MANAGED (a proxy: the user
    picked another patient, or signed in as a RelatedPerson/Person); the account holder may
    then say more of a managed record (child, parent, partner, other), never turn it into SELF."""

    SELF = "self", "Their own record"
    MANAGED = "managed", "A record they manage"
    CHILD = "child", "Their child"
    PARENT = "parent", "Their parent"
    PARTNER = "partner", "Their partner"
    OTHER = "other", "Someone else they manage"


MANAGED_RELATIONSHIPS = tuple(r for r in Relationship if r != Relationship.SELF)


class Connection(models.Model):
    """The credential to one patient's record at one health system.

    Tokens are sealed by the vault: `access_token_blob` and `refresh_token_blob` under the KEK
    `token_key_id`, with AAD naming this row and field. They never leave `fhirlink.services`.
    `granted_resources` is what the sync engine may read (granted scopes ∩ requested).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(
        "accounts.Patient", on_delete=models.CASCADE, related_name="ehr_connections"
    )
    health_system = models.ForeignKey(
        "fhirlink.HealthSystem", on_delete=models.PROTECT, related_name="connections"
    )
    status = models.CharField(
        max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.PENDING
    )
    last_outcome = models.CharField(max_length=64, blank=True)

    # What the EHR told us about the patient.
    fhir_base_url = models.URLField(max_length=500, blank=True)
    fhir_patient_id = models.CharField(max_length=200, blank=True)
    fhir_user = models.CharField(max_length=500, blank=True)
    oidc_issuer = models.CharField(max_length=500, blank=True)
    # The id_token's `sub`: at Cerner the patient's login name at the health system, so sealed
    # by the vault under the KEK `oidc_subject_key_id`, never stored in clear (the
    # `oidc_subject` property below seals and opens it; `vault_rotate` re-wraps it).
    oidc_subject_blob = models.BinaryField(null=True, blank=True, editable=False)
    oidc_subject_key_id = models.CharField(max_length=64, blank=True)
    # Whose record this is (see Relationship), and the account holder's own label for it ("Emma",
    # "Dad"): a name, so encrypted with the patient's data key (a purge erases it with the data).
    relationship = models.CharField(
        max_length=16, choices=Relationship.choices, default=Relationship.SELF
    )
    label_blob = models.BinaryField(null=True, blank=True, editable=False)

    # Scopes.
    requested_scopes = models.TextField(blank=True)
    granted_scopes = models.TextField(blank=True)
    granted_resources = models.JSONField(default=list, blank=True)
    declined_resources = models.JSONField(default=list, blank=True)

    # Tokens (sealed).
    token_key_id = models.CharField(max_length=64, blank=True)
    access_token_blob = models.BinaryField(null=True, blank=True, editable=False)
    refresh_token_blob = models.BinaryField(null=True, blank=True, editable=False)
    access_token_expires_at = models.DateTimeField(null=True, blank=True)

    # Refresh bookkeeping: a lease held by one worker at a time, the last attempt (throttle).
    refresh_lease_until = models.DateTimeField(null=True, blank=True)
    refresh_lease_owner = models.CharField(max_length=64, blank=True)
    last_refresh_attempt_at = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_failures = models.PositiveIntegerField(default=0)
    last_refresh_error = models.CharField(max_length=64, blank=True)
    grant_last_used_at = models.DateTimeField(null=True, blank=True)

    connected_at = models.DateTimeField(null=True, blank=True)
    needs_reauth_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    disconnect_receipt = models.JSONField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "health_system", "fhir_patient_id"],
                condition=~models.Q(fhir_patient_id=""),
                name="fhirlink_connection_one_per_fhir_patient",
            )
        ]
        indexes = [
            models.Index(fields=["status", "access_token_expires_at"]),
            models.Index(fields=["status", "grant_last_used_at"]),
        ]

    def __str__(self) -> str:
        return f"connection {str(self.id)[:8]}"

    @property
    def has_tokens(self) -> bool:
        return bool(self.access_token_blob or self.refresh_token_blob)

    @property
    def oidc_subject(self) -> str:
        """The EHR login name (`sub`), opened from its sealed column ("" when none)."""
        from fhirlink import vault

        if not self.oidc_subject_blob:
            return ""
        return vault.open_sealed(
            self.oidc_subject_blob, key_id=self.oidc_subject_key_id, aad=self.oidc_subject_aad
        )

    @oidc_subject.setter
    def oidc_subject(self, value: str) -> None:
        """Seals `value` into `oidc_subject_blob` (saved with the row's other fields)."""
        from fhirlink import vault

        if not value:
            self.oidc_subject_blob, self.oidc_subject_key_id = None, ""
            return
        sealed = vault.seal(value, aad=self.oidc_subject_aad)
        self.oidc_subject_blob, self.oidc_subject_key_id = sealed.blob, sealed.key_id

    @property
    def oidc_subject_aad(self) -> str:
        return f"fhirlink.connection:{self.pk}:oidc_subject"


class LaunchAttempt(models.Model):
    """One authorization request, bound to the account and the browser that started it.

    The app's POST creates it with a single-use start token (`start_hash`, SHA-256 only); the
    browser opening the start URL, signed in as `patient`, marks it `started_at` and gets the
    state, nonce and PKCE verifier (SHA-256 of state and nonce stored, the verifier sealed) and a
    signed cookie whose secret's SHA-256 is `binding_hash`. `expires_at` is the deadline of the
    current step (start URL, then callback). The callback consumes it once (`consumed_at`).
    `redirect_uri` is the one the authorization request named (per health system)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="launch_attempts"
    )
    patient = models.ForeignKey(
        "accounts.Patient", on_delete=models.CASCADE, related_name="ehr_launch_attempts"
    )
    health_system = models.ForeignKey("fhirlink.HealthSystem", on_delete=models.CASCADE)
    start_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    binding_hash = models.CharField(max_length=64, blank=True)
    state_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    nonce_hash = models.CharField(max_length=64, blank=True)
    verifier_key_id = models.CharField(max_length=64, blank=True)
    verifier_blob = models.BinaryField(null=True, blank=True)
    issuer = models.CharField(max_length=500, blank=True)
    aud = models.URLField(max_length=500)
    authorize_endpoint = models.URLField(max_length=500, blank=True)
    token_endpoint = models.URLField(max_length=500)
    redirect_uri = models.URLField(max_length=500, blank=True)
    requested_scopes = models.TextField()
    return_uri = models.CharField(max_length=500)
    expires_at = models.DateTimeField()
    consumed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"launch attempt {str(self.id)[:8]}"
