"""The synced-record store: one row per (connection, resource type, FHIR id).

The payload is the resource exactly as received, encrypted with the patient's data key
(`fhirlink.vault.patient_cipher`). The columns the API, the summary and the cohorts filter on
(category, code system, code, status, clinical status) are keyed hashes (`IndexHashField`,
`fhirlink.vault.index_hash`): a dump of this table does not say who has which diagnosis.
Deleting the patient's data key is the cryptographic erasure of every payload.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models import lookups

from fhirlink import vault


class IndexHash(str):
    """A value read from an `IndexHashField`: already hashed, never hashed again."""

    __slots__ = ()


class IndexHashField(models.CharField):
    """A filter column stored as `vault.index_hash(<column>, value)`; queries hash their value.

    `filter(code="22298006")`, `code__in=[...]`, `exclude(status="")`, `.update(...)` and
    saving an instance take and compare clear values: the field hashes them (a query against
    the hash under every configured index key, so a key rotation in progress loses no row).
    Read back, the value is the hash (`IndexHash`); the clear value is in the payload. Only
    equality can be asked (`exact`, `in`, `isnull`): any other lookup is a `FieldError`.
    The store's writer (`services/sync/store.py`) hashes with `vault.index_hash` too.
    """

    allowed_lookups = frozenset({"exact", "in", "isnull"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", vault.INDEX_HASH_HEX)
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def index_column(self) -> str:
        return self.name

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return value if value is None else IndexHash(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or isinstance(value, IndexHash):
            return value
        return vault.index_hash(self.index_column(), str(value))

    def lookup_hashes(self, values: Iterable[Any]) -> list[str]:
        out: list[str] = []
        for value in values:
            if value is None:
                continue
            if isinstance(value, IndexHash):
                out.append(value)
            else:
                out += vault.index_hashes(self.index_column(), str(value))
        return list(dict.fromkeys(out))

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name not in self.allowed_lookups:
            return None
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name: str) -> Any:
        return None


@IndexHashField.register_lookup
class _IndexHashIn(lookups.In):
    """`column__in=[clear values]`: IN (their hashes under every index key)."""

    def get_prep_lookup(self) -> Any:
        if self.rhs is None:
            return None
        if self.rhs_is_direct_value():
            field = self.lhs.output_field
            assert isinstance(field, IndexHashField)
            return field.lookup_hashes(self._values())
        return super().get_prep_lookup()

    def _values(self) -> list[Any]:
        return list(self.rhs)


@IndexHashField.register_lookup
class _IndexHashExact(_IndexHashIn):
    """`column=value`: the `in` above with one value (`= NULL` still becomes `IS NULL`)."""

    lookup_name = "exact"

    def _values(self) -> list[Any]:
        return [self.rhs]


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

    # Filter columns: keyed hashes of the clear values (see `IndexHashField`), under the index
    # key `index_key_id`. The clinical date stays (lists, trends and the timeline filter and
    # sort on it); meta.lastUpdated and the issued date are read from the payload.
    category = IndexHashField()
    code_system = IndexHashField()
    code = IndexHashField()
    status = IndexHashField()
    clinical_status = IndexHashField()
    index_key_id = models.CharField(max_length=64, blank=True)
    effective_at = models.DateTimeField(null=True, blank=True)

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
