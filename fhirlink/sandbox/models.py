"""Cerner sandbox state.

Only *state* lives in the database (clients, authorization transactions and codes, grants,
access tokens, signing keys, the per-tenant clock and faults, and the changes made by advancing
the clock). Clinical data is derived on the fly by the seeded generator in ``fhir/data.py``, so a
test database flush costs nothing and the 50,000-resource patient needs no rows.
"""

from __future__ import annotations

from django.db import models


class SandboxTenant(models.Model):
    """A tenant besides the built-in demo one; per-tenant switches (``conf.TenantSwitches``)."""

    id = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200, default="")
    switches = models.JSONField(default=dict, blank=True)
    clock_offset_seconds = models.BigIntegerField(default=0)
    faults = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.id


class SandboxClient(models.Model):
    class Access(models.TextChoices):
        OFFLINE = "offline", "Offline"
        ONLINE = "online", "Online"
        NONE = "none", "None"

    class SmartVersion(models.TextChoices):
        V1 = "v1", "SMART v1"
        V2 = "v2", "SMART v2"

    tenant = models.CharField(max_length=64)
    client_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, default="")
    redirect_uris = models.JSONField(default=list)
    confidential = models.BooleanField(default=False)
    secret_hash = models.CharField(max_length=128, blank=True, default="")
    jwks = models.JSONField(null=True, blank=True)
    jwks_url = models.CharField(max_length=500, blank=True, default="")
    smart_version = models.CharField(max_length=2, choices=SmartVersion.choices, default="v2")
    access = models.CharField(max_length=8, choices=Access.choices, default=Access.OFFLINE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "client_id"], name="sandbox_client_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.client_id}"


class SandboxAuthRequest(models.Model):
    """One pass through the login and approval pages (bound to a browser cookie)."""

    id = models.CharField(primary_key=True, max_length=64)
    binding_hash = models.CharField(max_length=64)
    tenant = models.CharField(max_length=64)
    client_id = models.CharField(max_length=200)
    params = models.JSONField(default=dict)
    # Whose record (the patient picker may choose one the login manages) and who logged in.
    patient_key = models.CharField(max_length=32, blank=True, default="")
    user_key = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField()
    completed = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.id[:8]


class SandboxGrant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"
        SUSPENDED = "suspended", "Suspended"

    tenant = models.CharField(max_length=64)
    client_id = models.CharField(max_length=200)
    patient_key = models.CharField(max_length=32)
    # The login that granted it (fhirUser); empty: the patient themself (grants before pickers).
    user_key = models.CharField(max_length=32, blank=True, default="")
    scope = models.TextField()
    access = models.CharField(max_length=8, default="none")
    refresh_token_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField()
    last_refresh_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"grant {self.pk} ({self.tenant}/{self.client_id})"


class SandboxRetiredRefreshToken(models.Model):
    """A refresh token replaced by rotation: presenting it again is a reuse, which revokes its
    grant (the whole token family)."""

    token_hash = models.CharField(primary_key=True, max_length=64)
    grant = models.ForeignKey(SandboxGrant, on_delete=models.CASCADE, related_name="retired")
    retired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"retired refresh token of grant {self.grant_id}"


class SandboxAuthCode(models.Model):
    code_hash = models.CharField(primary_key=True, max_length=64)
    grant = models.ForeignKey(SandboxGrant, on_delete=models.CASCADE, related_name="codes")
    redirect_uri = models.TextField()
    code_challenge = models.CharField(max_length=200, blank=True, default="")
    nonce = models.CharField(max_length=500, blank=True, default="")
    expires_at = models.DateTimeField()
    used = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"code for grant {self.grant_id}"


class SandboxAccessToken(models.Model):
    token_hash = models.CharField(primary_key=True, max_length=64)
    grant = models.ForeignKey(SandboxGrant, on_delete=models.CASCADE, related_name="tokens")
    scope = models.TextField()
    expires_at = models.DateTimeField()
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"access token for grant {self.grant_id}"


class SandboxSigningKey(models.Model):
    kid = models.CharField(primary_key=True, max_length=100)
    private_pem = models.TextField()
    created_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.kid


class SandboxChange(models.Model):
    """A change made by advancing the clock: a new, updated or entered-in-error resource."""

    class Kind(models.TextChoices):
        NEW = "new", "New"
        UPDATED = "updated", "Updated"
        ENTERED_IN_ERROR = "entered-in-error", "Entered in error"

    tenant = models.CharField(max_length=64)
    patient_key = models.CharField(max_length=32)
    resource_type = models.CharField(max_length=40)
    index = models.IntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    version = models.IntegerField(default=2)
    changed_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "patient_key", "resource_type"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.resource_type}[{self.index}]"


class SandboxAssertionJti(models.Model):
    """A private_key_jwt client assertion's ``jti``, refused if replayed before it expires."""

    jti_hash = models.CharField(primary_key=True, max_length=64)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.jti_hash[:8]
