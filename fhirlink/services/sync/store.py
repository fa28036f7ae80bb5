"""The synced-record store: extract filter columns, validate, encrypt, upsert a page at once.

`resource_upsert_page` is idempotent: a resource whose canonical JSON has not changed (same
keyed digest) is not written again; a changed one is updated in place; a new one is created.
Nothing is ever dropped: a resource that fails `fhir.resources` validation is stored as received
and flagged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from fhirlink import vault
from fhirlink.models import Connection, SyncedResource, synced_payload_aad
from fhirlink.services.sync.prepare import (
    Columns,
    Prepared,
    canonical_json,
    columns_extract,
    fhir_datetime,
    prepare_many,
    resource_validate,
)

__all__ = [
    "Columns",
    "canonical_json",
    "columns_extract",
    "fhir_datetime",
    "resource_validate",
]

logger = logging.getLogger(__name__)

UPDATE_FIELDS = [
    "patient",
    "version_id",
    "last_updated",
    "category",
    "code_system",
    "code",
    "effective_at",
    "issued_at",
    "status",
    "clinical_status",
    "is_reference",
    "entered_in_error",
    "masked",
    "valid",
    "validation_error",
    "deleted_at",
    "source_base_url",
    "fetched_at",
    "sync_run",
    "last_seen_run",
    "payload_digest",
    "payload_size",
    "payload",
    "updated_at",
]


# --- Upsert --------------------------------------------------------------------------------------


def payload_digest(canonical: bytes) -> str:
    return salted_hmac("fhirlink.synced-payload", canonical, algorithm="sha256").hexdigest()


@dataclass
class UpsertResult:
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    changed_ids: list[tuple[str, str]] = field(default_factory=list)

    def add(self, resource_type: str, outcome: str) -> None:
        counts = self.by_type.setdefault(
            resource_type,
            {"fetched": 0, "created": 0, "updated": 0, "unchanged": 0, "invalid": 0},
        )
        counts["fetched"] += 1
        counts[outcome] += 1
        self.fetched += 1
        setattr(self, outcome, getattr(self, outcome) + 1)


def resource_upsert_page(
    *,
    connection: Connection,
    resources: Sequence[dict[str, Any]],
    source_base_url: str,
    sync_run_id: Any = None,
    mark_seen: bool = False,
    is_reference: bool = False,
    cipher: vault.PatientCipher | None = None,
    prepared: Sequence[Prepared] | None = None,
) -> UpsertResult:
    """Store one page of resources for `connection` (validated, encrypted with the patient's
    data key fetched once for the page). `mark_seen` records `sync_run_id` on every resource of
    the page (changed or not) for the reconcile that follows a full pass."""
    result = UpsertResult()
    if not resources:
        return result
    now = timezone.now()
    cipher = cipher or vault.patient_cipher(patient_id=connection.patient_id)
    # Last one wins when a page repeats an id.
    unique: dict[tuple[str, str], int] = {}
    for index, resource in enumerate(resources):
        unique[(str(resource["resourceType"]), str(resource["id"]))] = index
    keys = list(unique)
    existing: dict[tuple[str, str], tuple[str, Any]] = {}
    for rtype in {k[0] for k in keys}:
        ids = [k[1] for k in keys if k[0] == rtype]
        for fhir_id, digest, deleted_at in SyncedResource.objects.filter(
            connection=connection, resource_type=rtype, fhir_id__in=ids
        ).values_list("fhir_id", "payload_digest", "deleted_at"):
            existing[(rtype, fhir_id)] = (digest, deleted_at)
    rows: list[SyncedResource] = []
    seen: dict[str, list[str]] = {}
    if prepared is None or len(prepared) != len(resources):
        prepared = prepare_many(
            list(resources),
            processes=int(getattr(settings, "FHIRLINK_SYNC_PREPARE_PROCESSES", 0)),
        )
    for key, index in unique.items():
        resource = resources[index]
        canonical, prepared_cols, prepared_error = prepared[index]
        rtype, fhir_id = key
        digest = payload_digest(canonical)
        before = existing.get(key)
        seen.setdefault(rtype, []).append(fhir_id)
        if before is not None and before[0] == digest and before[1] is None:
            result.add(rtype, "unchanged")
            continue
        error = resource_validate(resource) if prepared_error is None else prepared_error
        cols = columns_extract(resource) if prepared_cols is None else prepared_cols
        outcome = "created" if before is None else "updated"
        result.add(rtype, outcome)
        if error:
            result.invalid += 1
            result.by_type[rtype]["invalid"] += 1
        result.changed_ids.append(key)
        rows.append(
            SyncedResource(
                connection=connection,
                patient_id=connection.patient_id,
                resource_type=rtype,
                fhir_id=fhir_id,
                version_id=cols.version_id,
                last_updated=cols.last_updated,
                category=cols.category,
                code_system=cols.code_system,
                code=cols.code,
                effective_at=cols.effective_at,
                issued_at=cols.issued_at,
                status=cols.status,
                clinical_status=cols.clinical_status,
                is_reference=is_reference,
                entered_in_error=cols.entered_in_error,
                masked=cols.masked,
                valid=not error,
                validation_error=error,
                deleted_at=None,
                source_base_url=source_base_url[:500],
                fetched_at=now,
                sync_run_id=sync_run_id,
                last_seen_run=sync_run_id if mark_seen else None,
                payload_digest=digest,
                payload_size=len(canonical),
                payload=cipher.encrypt(
                    canonical, aad=synced_payload_aad(connection.pk, rtype, fhir_id)
                ),
                created_at=now,
                updated_at=now,
            )
        )
    with transaction.atomic():
        if rows:
            SyncedResource.objects.bulk_create(
                rows,
                batch_size=500,
                update_conflicts=True,
                unique_fields=["connection", "resource_type", "fhir_id"],
                update_fields=UPDATE_FIELDS,
            )
        if mark_seen and sync_run_id is not None:
            changed = set(result.changed_ids)
            for rtype, ids in seen.items():
                stale = [i for i in ids if (rtype, i) not in changed]
                for start in range(0, len(stale), 500):
                    SyncedResource.objects.filter(
                        connection=connection,
                        resource_type=rtype,
                        fhir_id__in=stale[start : start + 500],
                    ).update(last_seen_run=sync_run_id)
    return result


def resource_payload(
    row: SyncedResource, *, cipher: vault.PatientCipher | None = None
) -> dict[str, Any]:
    """The decrypted resource exactly as received. Raises vault.KeyDestroyed after a purge."""
    cipher = cipher or vault.patient_cipher(patient_id=row.patient_id, create=False)
    data: dict[str, Any] = json.loads(cipher.decrypt(row.payload, aad=row.payload_aad))
    return data


def resources_tombstone(
    *, connection: Connection, resource_type: str, sync_run_id: Any, keep_undated: bool = False
) -> int:
    """After a complete full pass of `resource_type`: tombstone what the pass did not see.

    `keep_undated`: the pass searched by date windows, which never return a resource without an
    effective date, so such rows are not evidence of deletion and are kept.
    `updated_at` moves too, so the app's changes feed (ordered by it) carries the tombstone.
    """
    now = timezone.now()
    rows = SyncedResource.objects.filter(
        connection=connection,
        resource_type=resource_type,
        is_reference=False,
        deleted_at__isnull=True,
    ).exclude(last_seen_run=sync_run_id)
    if keep_undated:
        rows = rows.exclude(effective_at__isnull=True)
    return rows.update(deleted_at=now, updated_at=now)


def synced_resources_erase(*, connection_id: Any) -> dict[str, int]:
    """Delete every synced row of a connection; {resource_type: rows deleted}."""
    from django.db.models import Count

    counts = dict(
        SyncedResource.objects.filter(connection_id=connection_id)
        .values_list("resource_type")
        .annotate(n=Count("id"))
        .values_list("resource_type", "n")
    )
    with transaction.atomic():
        SyncedResource.objects.filter(connection_id=connection_id).delete()
        from fhirlink.models import SyncQuarantine

        SyncQuarantine.objects.filter(connection_id=connection_id).delete()
    return {str(k): int(v) for k, v in counts.items()}


def referenced_ids(resources: Iterable[dict[str, Any]], wanted: set[str]) -> set[tuple[str, str]]:
    """Literal relative references ("Practitioner/123") to the `wanted` types, found anywhere
    in the resources (contained resources are part of their parent and are not fetched)."""
    found: set[tuple[str, str]] = set()

    def walk(value: Any, depth: int) -> None:
        if depth > 10:
            return
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and "/" in ref and not ref.startswith("#"):
                rtype, _, rid = ref.rstrip("/").rpartition("/")
                rtype = rtype.rsplit("/", 1)[-1]
                if rtype in wanted and rid and "?" not in rid and len(rid) <= 200:
                    found.add((rtype, rid))
            for key, child in value.items():
                if key != "contained":
                    walk(child, depth + 1)
        elif isinstance(value, list):
            for child in value:
                walk(child, depth + 1)

    for resource in resources:
        walk(resource, 0)
    return found
