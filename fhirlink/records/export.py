"""Export of everything as FHIR (a Bundle or NDJSON), built by a Celery job.

Nothing is written to disk in clear: the job encrypts the file with the patient's data key
(AAD bound to the export id) and keeps it in the cache (Redis in production) for
`FHIRLINK_RECORDS_EXPORT_TTL` seconds (default 600). The download is single use: the first
download deletes the blob, atomically (`cache.delete` returns True once), any later one gets
410 `export_gone`. URLs carry only the random export id; the bearer token is still required.

A purge (disconnect with erase, account deletion) voids every export requested before it
(`exports_void`): the blobs are deleted, the states say `voided`, and a download answers 410
`export_gone`. A per-patient marker (kept as long as an export lives) catches an export the
purge did not find in the patient's list, and a build that finishes after the purge.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from fhirlink import vault
from fhirlink.records import selectors
from fhirlink.records.scope import person_filter, scope_person
from patientportal.core.errors import Gone, NotFound, ValidationFailed

FORMATS = {"bundle": "application/fhir+json", "ndjson": "application/fhir+ndjson"}


class ExportGone(Gone):
    default_code = "export_gone"
    default_message = (
        "This export was already downloaded, has expired, or was voided when its data was erased."
    )


class ExportNotReady(ValidationFailed):
    status_code = 409
    default_code = "export_not_ready"
    default_message = "The export is not ready yet."


def export_ttl() -> int:
    return int(settings.FHIRLINK_RECORDS_EXPORT_TTL)


def _state_key(export_id: str) -> str:
    return f"fhirlink:records-export:{export_id}"


def _blob_key(export_id: str) -> str:
    return f"fhirlink:records-export-blob:{export_id}"


def _patient_exports_key(patient_id: Any) -> str:
    return f"fhirlink:records-exports-of:{patient_id}"


def _purged_key(patient_id: Any) -> str:
    return f"fhirlink:records-export-purged:{patient_id}"


def _aad(export_id: str, patient_id: Any) -> str:
    return f"fhirlink.records-export:{export_id}:{patient_id}"


def export_request(*, patient: Any, fmt: str) -> dict[str, Any]:
    """Record a pending export and enqueue the job after commit."""
    if fmt not in FORMATS:
        raise ValidationFailed("Unknown export format.", code="invalid_format")
    export_id = uuid.uuid4().hex
    state = {
        "id": export_id,
        "patient": str(patient.pk),
        # One person's export (a RecordScope) keeps to their records; None: the whole account.
        "person": scope_person(patient),
        "format": fmt,
        "status": "pending",
        "created_at": timezone.now().isoformat(),
        "expires_at": (timezone.now() + timedelta(seconds=export_ttl())).isoformat(),
        "resources": None,
        "size": None,
    }
    cache.set(_state_key(export_id), state, export_ttl())
    listed = cache.get(_patient_exports_key(patient.pk)) or []
    cache.set(_patient_exports_key(patient.pk), [*listed[-99:], export_id], export_ttl())
    from fhirlink.records.tasks import records_export

    transaction.on_commit(lambda: records_export.delay(export_id))
    return state


def export_state(*, patient: Any, export_id: str) -> dict[str, Any]:
    state = cache.get(_state_key(export_id))
    if not isinstance(state, dict) or state.get("patient") != str(patient.pk):
        raise NotFound("No such export.", code="export_not_found")
    if _voided_by_purge(state):
        _void(export_id, state)
    return state


def exports_void(*, patient_id: Any) -> int:
    """A purge of the patient's data: every export requested until now is voided (its blob
    deleted, its state `voided`). Returns how many were pending or ready. Called by the
    disconnect service inside the purge's transaction."""
    now = timezone.now()
    cache.set(_purged_key(patient_id), now.isoformat(), export_ttl())
    voided = 0
    for export_id in cache.get(_patient_exports_key(patient_id)) or []:
        state = cache.get(_state_key(export_id))
        if isinstance(state, dict) and state.get("patient") == str(patient_id):
            voided += state.get("status") in ("pending", "ready")
            _void(export_id, state)
        cache.delete(_blob_key(export_id))
    return voided


def _voided_by_purge(state: dict[str, Any]) -> bool:
    """Whether a purge of the patient came after this export was requested."""
    if state.get("status") == "voided":
        return True
    marker = cache.get(_purged_key(state["patient"]))
    if not marker:
        return False
    return bool(datetime.fromisoformat(state["created_at"]) <= datetime.fromisoformat(marker))


def _void(export_id: str, state: dict[str, Any]) -> None:
    cache.delete(_blob_key(export_id))
    if state.get("status") == "voided":
        return
    state.update(status="voided", resources=None, size=None)
    cache.set(_state_key(export_id), state, export_ttl())


def export_build(export_id: str) -> dict[str, Any] | None:
    """The job: serialise every live resource (references and Binaries included) and store it
    encrypted. Idempotent: a finished export is left alone."""
    state = cache.get(_state_key(export_id))
    if not isinstance(state, dict) or state.get("status") != "pending":
        return state if isinstance(state, dict) else None
    if _voided_by_purge(state):
        _void(export_id, state)
        return state
    patient_id = state["patient"]
    scoped = selectors.records_all(patient=patient_id)
    if state.get("person") is not None:
        scoped = scoped.filter(**person_filter(state["person"]))
    qs = (
        scoped.filter(deleted_at__isnull=True, entered_in_error=False, masked=False)
        .exclude(status="entered-in-error")
        .order_by("resource_type", "id")
    )
    try:
        cipher = vault.patient_cipher(patient_id=patient_id, create=False)
    except vault.KeyDestroyed:
        cipher = None
    resources: list[dict[str, Any]] = []
    if cipher is not None:
        reader = selectors.PayloadReader(patient_id)
        reader._cipher = cipher
        for row in qs.iterator(chunk_size=500):
            resource = reader.read(row)
            if resource is not None:
                resources.append(resource)
    if state["format"] == "ndjson":
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources).encode()
    else:
        bundle = {
            "resourceType": "Bundle",
            "id": export_id,
            "type": "collection",
            "timestamp": timezone.now().isoformat(),
            "total": len(resources),
            "entry": [{"resource": r} for r in resources],
        }
        body = json.dumps(bundle, separators=(",", ":")).encode()
    if _voided_by_purge(state):  # purged while this job read: nothing of it is kept
        _void(export_id, state)
        return state
    sealer = cipher or vault.patient_cipher(patient_id=patient_id)
    cache.set(
        _blob_key(export_id), sealer.encrypt(body, aad=_aad(export_id, patient_id)), export_ttl()
    )
    state.update(status="ready", resources=len(resources), size=len(body))
    cache.set(_state_key(export_id), state, export_ttl())
    from patientportal.accesslog.models import AccessAction, ActorKind
    from patientportal.accesslog.services import access_log_record
    from patientportal.accounts.models import Patient

    access_log_record(
        actor_kind=ActorKind.SYSTEM,
        actor_label="fhirlink.records_export",
        action=AccessAction.EXPORT,
        patient=Patient.objects.get(pk=patient_id),
        query={"format": state["format"], "count": len(resources)},
    )
    return state


def export_download(*, patient: Any, export_id: str) -> tuple[bytes, str, str]:
    """(body, content type, filename) — once. Raises ExportGone after the first download."""
    state = export_state(patient=patient, export_id=export_id)
    if state["status"] == "voided":
        raise ExportGone()
    if state["status"] == "pending":
        raise ExportNotReady()
    blob = cache.get(_blob_key(export_id))
    if blob is None or not cache.delete(_blob_key(export_id)):
        raise ExportGone()
    state["status"] = "downloaded"
    cache.set(_state_key(export_id), state, export_ttl())
    try:
        cipher = vault.patient_cipher(patient_id=patient.pk, create=False)
        body = cipher.decrypt(blob, aad=_aad(export_id, patient.pk))
    except vault.VaultError:  # the data was purged (key destroyed) since the export was built
        raise ExportGone() from None
    ext = "ndjson" if state["format"] == "ndjson" else "json"
    return body, FORMATS[state["format"]], f"records-export.{ext}"
