"""Patient-scoped reads of the synced-record store.

Every function takes the patient (id) explicitly and filters on it first: a row of another
patient is never returned, whatever id or cursor the caller passes. "Live" rows exclude
tombstones, entered-in-error and masked resources (Cerner masks the fields of entered-in-error
records; some servers send the status with stray whitespace, e.g. ``"entered-in-error "``, which
the store strips before hashing, so the status column is checked as well as the flag it sets).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from django.db.models import Count, Q, QuerySet, TextField
from django.db.models.functions import Cast

from fhirlink import vault
from fhirlink.models import SyncedResource
from fhirlink.models.store import synced_payload_aad
from fhirlink.records.scope import person_filter, scope_person
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


def _person_filter(patient: Any) -> dict[str, Any]:
    """A `RecordScope` (one person of the account) keeps to that person's connections."""
    person = scope_person(patient)
    return {} if person is None else person_filter(person)


def records_all(*, patient: Any) -> QuerySet[SyncedResource]:
    """Every row of the patient (or of one person: `scope.RecordScope`), tombstones included
    (the changes feed, the export)."""
    return SyncedResource.objects.filter(patient_id=_patient_pk(patient), **_person_filter(patient))


def records_live(
    *, patient: Any, resource_type: str | Sequence[str] | None = None
) -> QuerySet[SyncedResource]:
    """The patient's current data: not deleted, not entered-in-error, not masked, not a
    referenced Practitioner/Organization cached by the sync. No join: read the rows you serve
    with `record_rows` (which joins the health system), or call `sources_attach` on model rows
    (one query for the patient's connections and health systems)."""
    # One filter() call: every call clones the query, which costs more than the list's SQL.
    by_type: dict[str, Any] = {}
    if isinstance(resource_type, str):
        by_type["resource_type"] = resource_type
    elif resource_type is not None:
        by_type["resource_type__in"] = list(resource_type)
    return SyncedResource.objects.live().filter(
        ~Q(status="entered-in-error"),
        patient_id=_patient_pk(patient),
        is_reference=False,
        masked=False,
        **by_type,
        **_person_filter(patient),
    )


@dataclass(frozen=True)
class RecordFilters:
    category: str = ""
    code: Sequence[str] = ()
    status: str = ""
    date_from: datetime | None = None
    date_to: datetime | None = None
    connection: uuid.UUID | None = None
    health_system: str = ""


class RecordRow(NamedTuple):
    """A served row: the columns the friendly view, the ETag, the cursor and the access log
    need, read with `values_list` (`record_rows`), so a page builds no model instances and
    never loads the columns it does not serve. The health system comes from the same query."""

    pk: int
    connection_id: uuid.UUID
    patient_id: uuid.UUID
    resource_type: str
    fhir_id: str
    effective_at: datetime | None
    valid: bool
    validation_error: str
    payload: bytes
    payload_digest: str
    updated_at: datetime
    health_system_name: str
    health_system_slug: str

    @property
    def payload_aad(self) -> str:
        return synced_payload_aad(self.connection_id, self.resource_type, self.fhir_id)


def _text(field: str) -> Cast:
    return Cast(field, output_field=TextField())


# `RecordRow`'s columns in order. The health system is a join on two small tables (one memoised
# index lookup per page), cheaper than a second query. The two date-times are read as text
# and parsed with `datetime.fromisoformat` (C): Django's PostgreSQL loader for timestamptz is
# pure Python and cost more per page than all the other columns together.
RECORD_ROW_FIELDS: tuple[str | Cast, ...] = (
    "id",
    "connection_id",
    "patient_id",
    "resource_type",
    "fhir_id",
    _text("effective_at"),
    "valid",
    "validation_error",
    "payload",
    "payload_digest",
    _text("updated_at"),
    "connection__health_system__name",
    "connection__health_system__slug",
)


# Where `RECORD_ROW_FIELDS` has the date-times read as text.
_DATE_TIMES = tuple(RecordRow._fields.index(name) for name in ("effective_at", "updated_at"))


def _utc(value: str) -> datetime:
    """A date-time column read as text (PostgreSQL: "2024-01-01 09:30:00.25+00"; SQLite: naive
    UTC) -> the aware UTC datetime the ORM would have returned."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_or_none(value: str | None) -> datetime | None:
    return None if value is None else _utc(value)


def record_rows(qs: QuerySet[SyncedResource]) -> list[RecordRow]:
    """The rows of `qs` (ordered and sliced by the caller) as `RecordRow`s, in one query."""
    rows = []
    for values in qs.values_list(*RECORD_ROW_FIELDS):
        row = list(values)
        for i in _DATE_TIMES:
            row[i] = _utc_or_none(row[i])
        rows.append(RecordRow(*row))
    return rows


def records_filter(
    qs: QuerySet[SyncedResource], filters: RecordFilters
) -> QuerySet[SyncedResource]:
    """Apply the list filters (equality on the store's keyed-hash columns, which hash the
    filter value; a date range on `effective_at`; the payload is never searched)."""
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
    """Decrypts payloads of one patient with one data-key fetch (one cipher for every row the
    reader opens: a page, a summary, an export batch). A destroyed key (purge) reads as None
    rather than failing the page."""

    def __init__(self, patient: Any) -> None:
        self.patient_id = str(_patient_pk(patient))
        self._patient_uuid = uuid.UUID(self.patient_id)
        self._cipher: vault.PatientCipher | None = None
        self._destroyed = False

    def read(self, row: SyncedResource | RecordRow) -> dict[str, Any] | None:
        if row.patient_id != self._patient_uuid:  # defence in depth: never another patient's row
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
            # The store's own reader (one place knows the payload format). With a cipher given
            # it reads only `payload` and `payload_aad`, which a `RecordRow` has too.
            return resource_payload(cast(SyncedResource, row), cipher=self._cipher)
        except vault.DecryptionFailed:
            return None

    def read_many(self, rows: Iterable[SyncedResource | RecordRow]) -> list[dict[str, Any] | None]:
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
