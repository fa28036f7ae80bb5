"""The synced-record store: one row per (connection, resource type, FHIR id).

The payload is the resource exactly as received, encrypted with the patient's data key
(`fhirlink.vault.patient_cipher`); only the columns the API filters on are in the clear.
Deleting the patient's data key is the cryptographic erasure of every payload.
"""

from __future__ import annotations

from django.db import models


class SyncedResourceQuerySet(models.QuerySet["SyncedResource"]):
    def live(self) -> SyncedResourceQuerySet:
        """What the app may show as current data: not tombstoned, not entered-in-error."""
        return self.filter(deleted_at__isnull=True, entered_in_error=False)


class SyncedResource(models.Model):
    """One synced FHIR resource. Upserted idempotently on (connection, resource_type, fhir_id).

    * `is_reference`: a Practitioner/Organization/Location/Medication fetched because a record
      refers to it (cached per connection), not a search result of the patient's compartment.
    * `valid`/`validation_error`: the payload failed `fhir.resources` (R4B) validation; it is
      stored as received and flagged, never dropped. The error names fields, never values.
    * `entered_in_error`/`masked`: Cerner's entered-in-error records (fields masked with
      data-absent-reason "masked"); kept, never shown as live data.
    * `deleted_at`: tombstone set by a full reconcile when the server no longer returns it.
    * `payload_digest`: keyed HMAC of the canonical JSON (change detection without decrypting).
    """

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(
        "fhirlink.Connection", on_delete=models.CASCADE, related_name="synced_resources"
    )
    patient = models.ForeignKey(
        "accounts.Patient", on_delete=models.CASCADE, related_name="synced_resources"
    )
    resource_type = models.CharField(max_length=64)
    fhir_id = models.CharField(max_length=200)
    version_id = models.CharField(max_length=64, blank=True)
    last_updated = models.DateTimeField(null=True, blank=True)

    # Filter columns (clear text).
    category = models.CharField(max_length=100, blank=True)
    code_system = models.CharField(max_length=200, blank=True)
    code = models.CharField(max_length=100, blank=True)
    effective_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=40, blank=True)
    clinical_status = models.CharField(max_length=40, blank=True)

    # Flags.
    is_reference = models.BooleanField(default=False)
    entered_in_error = models.BooleanField(default=False)
    masked = models.BooleanField(default=False)
    valid = models.BooleanField(default=True)
    validation_error = models.CharField(max_length=300, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    # Provenance.
    source_base_url = models.URLField(max_length=500)
    fetched_at = models.DateTimeField()
    sync_run = models.ForeignKey(
        "fhirlink.SyncRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_seen_run = models.UUIDField(null=True, blank=True)

    payload_digest = models.CharField(max_length=64)
    payload_size = models.PositiveIntegerField(default=0)
    payload = models.BinaryField()

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SyncedResourceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "resource_type", "fhir_id"],
                name="fhirlink_synced_resource_unique",
            )
        ]
        indexes = [
            models.Index(fields=["patient", "resource_type", "effective_at"]),
            models.Index(fields=["patient", "resource_type", "code"]),
            models.Index(fields=["patient", "updated_at"]),
            models.Index(fields=["connection", "resource_type", "last_seen_run"]),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.fhir_id[:12]}"

    @property
    def payload_aad(self) -> str:
        return synced_payload_aad(self.connection_id, self.resource_type, self.fhir_id)


def synced_payload_aad(connection_id: object, resource_type: str, fhir_id: str) -> str:
    """Binds a payload ciphertext to its row: copied to another row, it does not open."""
    return f"fhirlink.synced:{connection_id}:{resource_type}/{fhir_id}"
