"""Patient-scoped reads of the synced-record store.

Every function takes the patient (id) explicitly and filters on it first: a row of another
patient is never returned, whatever id or cursor the caller passes. "Live" rows exclude
tombstones, entered-in-error and masked resources (Cerner masks the fields of entered-in-error
records; some servers send the status with stray whitespace, e.g. ``"entered-in-error "``, so
the status column is checked as well as the flag the store sets).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet

from fhirlink import vault
from fhirlink.models import SyncedResource
from fhirlink.services.sync.store import resource_payload

# URL slug -> FHIR resource type served by the per-type list and detail endpoints.
RECORD_TYPES: dict[str, str] = {
    "observations": "Observation",
    "conditions": "Condition",
    "medications": "MedicationRequest",
    "medication-administrations": "MedicationAdministration",
    "allergies": "AllergyIntolerance",
    "immunizations": "Immunization",
    "procedures": "Procedure",
    "encounters": "Encounter",
    "diagnostic-reports": "DiagnosticReport",
    "documents": "DocumentReference",
    "care-plans": "CarePlan",
    "care-teams": "CareTeam",
    "goals": "Goal",
    "service-requests": "ServiceRequest",
    "devices": "Device",
    "family-history": "FamilyMemberHistory",
    "patients": "Patient",
}

# What the timeline merges (lab Observations only; vitals and social history are not events).
TIMELINE_TYPES = ("Encounter", "Procedure", "DiagnosticReport", "DocumentReference")
TIMELINE_OBSERVATION_CATEGORIES = ("laboratory",)

ACTIVE_CLINICAL = ("active", "recurrence", "relapse")
ACTIVE_MEDICATION = ("active", "on-hold")


def _patient_pk(patient: Any) -> Any:
    return getattr(patient, "pk", patient)


def records_all(*, patient: Any) -> QuerySet[SyncedResource]:
    """Every row of the patient, tombstones included (the changes feed, the export)."""
    return SyncedResource.objects.filter(patient_id=_patient_pk(patient))


def records_live(
    *, patient: Any, resource_type: str | Sequence[str] | None = None
) -> QuerySet[SyncedResource]:
    """The patient's current data: not deleted, not entered-in-error, not masked, not a
    referenced Practitioner/Organization cached by the sync. No join: call `sources_attach` on
    the rows you serve (one query for the patient's connections and health systems)."""
    qs = (
        SyncedResource.objects.live()
        .filter(patient_id=_patient_pk(patient), is_reference=False, masked=False)
        .exclude(status__startswith="entered-in-error")
    )
    if isinstance(resource_type, str):
        qs = qs.filter(resource_type=resource_type)
    elif resource_type is not None:
        qs = qs.filter(resource_type__in=list(resource_type))
    return qs


@dataclass(frozen=True)
class RecordFilters:
    category: str = ""
    code: Sequence[str] = ()
    status: str = ""
    date_from: datetime | None = None
    date_to: datetime | None = None
    connection: uuid.UUID | None = None
    health_system: str = ""


def records_filter(
    qs: QuerySet[SyncedResource], filters: RecordFilters
) -> QuerySet[SyncedResource]:
    """Apply the list filters (all on clear columns; the payload is never searched)."""
    if filters.category:
        qs = qs.filter(category=filters.category)
    if filters.code:
        qs = qs.filter(code__in=list(filters.code))
    if filters.status:
        qs = qs.filter(Q(status=filters.status) | Q(clinical_status=filters.status))
    if filters.date_from is not None:
        qs = qs.filter(effective_at__gte=filters.date_from)
    if filters.date_to is not None:
        qs = qs.filter(effective_at__lt=filters.date_to)
    if filters.connection is not None:
        qs = qs.filter(connection_id=filters.connection)
    if filters.health_system:
        qs = qs.filter(connection__health_system__slug=filters.health_system)
    return qs


def record_get(*, patient: Any, resource_type: str, record_id: int) -> SyncedResource | None:
    """One live record of the patient by its API id, or None (also for another patient's id)."""
    return (
        records_live(patient=patient, resource_type=resource_type)
        .select_related("connection__health_system")
        .filter(pk=record_id)
        .first()
    )


def binary_for_url(*, patient: Any, connection_id: Any, url: str) -> SyncedResource | None:
    """The synced Binary an attachment URL points to (same connection; the sync stores a
    Binary as a row keyed by the id at the end of `.../Binary/{id}`)."""
    fhir_id = url.rstrip("/").rpartition("/Binary/")[2] if "/Binary/" in url else ""
    if not fhir_id and url.startswith("Binary/"):
        fhir_id = url[len("Binary/") :]
    if not fhir_id or "/" in fhir_id or "?" in fhir_id:
        return None
    return (
        SyncedResource.objects.live()
        .filter(
            patient_id=_patient_pk(patient),
            connection_id=connection_id,
            resource_type="Binary",
            fhir_id=fhir_id,
        )
        .first()
    )


def records_counts(*, patient: Any) -> dict[str, int]:
    """{resource_type: live rows} in one query."""
    rows = (
        records_live(patient=patient)
        .order_by()
        .values_list("resource_type")
        .annotate(n=Count("id"))
        .values_list("resource_type", "n")
    )
    return {str(t): int(n) for t, n in rows}


def summary_counts(*, patient: Any) -> dict[str, int]:
    """The summary's section counts in one aggregate query."""
    qs = records_live(patient=patient).order_by()
    agg = qs.aggregate(
        active_conditions=Count(
            "id", filter=Q(resource_type="Condition", clinical_status__in=ACTIVE_CLINICAL)
        ),
        active_medications=Count(
            "id", filter=Q(resource_type="MedicationRequest", status__in=ACTIVE_MEDICATION)
        ),
        allergies=Count(
            "id",
            filter=Q(resource_type="AllergyIntolerance")
            & ~Q(clinical_status__in=("inactive", "resolved")),
        ),
        vital_signs=Count("id", filter=Q(resource_type="Observation", category="vital-signs")),
        lab_results=Count("id", filter=Q(resource_type="Observation", category="laboratory")),
        immunizations=Count("id", filter=Q(resource_type="Immunization")),
        encounters=Count("id", filter=Q(resource_type="Encounter")),
        documents=Count("id", filter=Q(resource_type="DocumentReference")),
    )
    return {k: int(v or 0) for k, v in agg.items()}


def timeline_queryset(*, patient: Any) -> QuerySet[SyncedResource]:
    return records_live(patient=patient).filter(
        Q(resource_type__in=TIMELINE_TYPES)
        | Q(resource_type="Observation", category__in=TIMELINE_OBSERVATION_CATEGORIES)
    )


def sources_attach(rows: Sequence[SyncedResource]) -> Sequence[SyncedResource]:
    """Set `row.connection` (with its health system) on every row with one query, so the
    normaliser's `source` costs no query per row."""
    from fhirlink.models import Connection

    ids = {row.connection_id for row in rows}
    if not ids:
        return rows
    connections = {
        c.pk: c
        for c in Connection.objects.filter(pk__in=ids)
        .select_related("health_system")
        .only("id", "patient_id", "health_system__id", "health_system__name", "health_system__slug")
    }
    # Fill the relation cache directly: assigning `row.connection = ...` runs the descriptor's
    # checks per row, which costs more than the rest of the page's normalisation.
    field = SyncedResource._meta.get_field("connection")
    for row in rows:
        if row.connection_id in connections:
            field.set_cached_value(row, connections[row.connection_id])
    return rows


class PayloadReader:
    """Decrypts payloads of one patient with one data-key fetch. A destroyed key (purge) reads
    as None rather than failing the page."""

    def __init__(self, patient: Any) -> None:
        self.patient_id = str(_patient_pk(patient))
        self._cipher: vault.PatientCipher | None = None
        self._destroyed = False

    def read(self, row: SyncedResource) -> dict[str, Any] | None:
        if str(row.patient_id) != self.patient_id:  # defence in depth: never another patient's row
            raise ValueError("row of another patient")
        if self._destroyed:
            return None
        if self._cipher is None:
            try:
                self._cipher = vault.patient_cipher(patient_id=self.patient_id, create=False)
            except vault.KeyDestroyed:
                self._destroyed = True
                return None
        try:
            return resource_payload(row, cipher=self._cipher)
        except vault.DecryptionFailed:
            return None

    def read_many(self, rows: Iterable[SyncedResource]) -> list[dict[str, Any] | None]:
        return [self.read(row) for row in rows]


def attachment_content(
    *, patient: Any, row: SyncedResource, attachment: dict[str, Any], reader: PayloadReader
) -> tuple[str, bytes | None]:
    """(content type, bytes) of one DocumentReference attachment: its inline data, or the Binary
    the sync stored for its URL (same connection only). Bytes are None when neither is there
    or the data does not decode; the content type is the Binary's, else the attachment's."""
    content_type = str(attachment.get("contentType") or "")
    data = attachment.get("data")
    if not data:
        binary = binary_for_url(
            patient=patient, connection_id=row.connection_id, url=str(attachment.get("url", ""))
        )
        payload = reader.read(binary) if binary is not None else None
        data = (payload or {}).get("data")
        content_type = str((payload or {}).get("contentType") or content_type)
    if not data:
        return content_type, None
    try:
        return content_type, base64.b64decode(str(data), validate=False)
    except (binascii.Error, ValueError):
        return content_type, None
