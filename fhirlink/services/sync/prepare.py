"""Pure, Django-free preparation of synced resources: canonical JSON, filter columns, R4
validation (fhir.resources, as the library ships it), references. The sync digests every
resource first and validates only the new or changed ones (`fhirlink.sync.write`)."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from fhirlink import fhirjson

logger = logging.getLogger(__name__)

DAR_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DAR_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


# --- Column extraction ---------------------------------------------------------------------------


def fhir_datetime(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant ("2020", "2020-05", "2020-05-01", with time) as UTC."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _first_coding(concept: Any) -> tuple[str, str]:
    """(system, code) of a CodeableConcept: a standard terminology before a proprietary one."""
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if not isinstance(concept, dict):
        return "", ""
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]
    if not codings:
        return "", ""
    preferred = next((c for c in codings if "cerner.com" not in str(c.get("system", ""))), None)
    chosen = preferred or codings[0]
    return str(chosen.get("system", ""))[:200], str(chosen.get("code", ""))[:100]


def _category(resource: dict[str, Any]) -> str:
    rtype = resource.get("resourceType")
    if rtype == "Encounter":
        klass = resource.get("class")
        return str(klass.get("code", ""))[:100] if isinstance(klass, dict) else ""
    if rtype == "Binary":
        return str(resource.get("contentType", ""))[:100]
    category = resource.get("category")
    if isinstance(category, list) and category and isinstance(category[0], str):
        return category[0][:100]  # AllergyIntolerance
    return _first_coding(category)[1]


def resource_category(resource: dict[str, Any]) -> str:
    """The category the store indexes (hashed) for a resource: what the API shows too."""
    return _category(resource)


CODE_FIELDS = {
    "MedicationRequest": "medicationCodeableConcept",
    "Immunization": "vaccineCode",
    "DocumentReference": "type",
    "Encounter": "type",
    "Goal": "description",
}
EFFECTIVE_FIELDS: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
    "MedicationRequest": ("authoredOn",),
    "Immunization": ("occurrenceDateTime",),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "Encounter": ("period.start",),
    "DocumentReference": ("date", "context.period.start"),
    "CarePlan": ("period.start",),
    "Goal": ("startDate",),
    "ServiceRequest": ("authoredOn",),
    "NutritionOrder": ("dateTime",),
    "Consent": ("dateTime",),
}
ISSUED_FIELDS = {
    "Observation": "issued",
    "DiagnosticReport": "issued",
    "Condition": "recordedDate",
    "Immunization": "recorded",
    "AllergyIntolerance": "recordedDate",
}


def _path(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_masked(value: Any, depth: int = 0) -> bool:
    if depth > 12:
        return False
    if isinstance(value, dict):
        if value.get("url") == DAR_EXTENSION and value.get("valueCode") == "masked":
            return True
        if value.get("system") == DAR_SYSTEM and value.get("code") == "masked":
            return True
        return any(_is_masked(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_is_masked(v, depth + 1) for v in value)
    return False


class Columns(NamedTuple):
    """The store's columns of one resource (the filter columns before they are hashed)."""

    version_id: str = ""
    last_updated: datetime | None = None
    category: str = ""
    code_system: str = ""
    code: str = ""
    effective_at: datetime | None = None
    issued_at: datetime | None = None
    status: str = ""
    clinical_status: str = ""
    entered_in_error: bool = False
    masked: bool = False


def columns_extract(resource: dict[str, Any], canonical: bytes | None = None) -> Columns:
    """The store's clear columns. `canonical` (the resource's canonical JSON, when the caller
    has it) lets the masked check skip the walk when no value "masked" occurs at all."""
    rtype = str(resource.get("resourceType", ""))
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    code_system, code = _first_coding(resource.get(CODE_FIELDS.get(rtype, "code")))
    effective_at = None
    for path in EFFECTIVE_FIELDS.get(rtype, ()):
        effective_at = fhir_datetime(_path(resource, path))
        if effective_at is not None:
            break
    issued_at = (
        fhir_datetime(resource.get(ISSUED_FIELDS[rtype])) if rtype in ISSUED_FIELDS else None
    )
    # Codes are compared stripped: Cerner's published entered-in-error example sends
    # "entered-in-error " with a trailing space.
    status = resource.get("status")
    status = status.strip()[:40] if isinstance(status, str) else ""
    verification = _first_coding(resource.get("verificationStatus"))[1].strip()
    entered_in_error = "entered-in-error" in (status, verification)
    if entered_in_error and not status:
        status = "entered-in-error"
    return Columns(
        version_id=str(meta.get("versionId", ""))[:64],
        last_updated=fhir_datetime(meta.get("lastUpdated")),
        category=_category(resource),
        code_system=code_system,
        code=code,
        effective_at=effective_at,
        issued_at=issued_at,
        status=status,
        clinical_status=_first_coding(resource.get("clinicalStatus"))[1].strip()[:40],
        entered_in_error=entered_in_error,
        masked=(canonical is None or b'"masked"' in canonical) and _is_masked(resource),
    )


# --- Validation ----------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError):
        return None


def resource_validate(resource: dict[str, Any]) -> str:
    """ "" if the resource is valid R4 (R4B models), else a short error naming fields only."""
    from pydantic import ValidationError

    model = _model_class(str(resource.get("resourceType", "")))
    if model is None:
        return "unknown_resource_type"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        locations = sorted({".".join(str(p) for p in e["loc"][:3]) for e in exc.errors()[:5]})
        return ("invalid: " + ", ".join(locations))[:300]
    except (ValueError, TypeError):
        return "invalid"
    return ""


def canonical_json(resource: dict[str, Any]) -> bytes:
    return fhirjson.canonical(resource)


# --- References ----------------------------------------------------------------------------------


def referenced_ids(resources: Iterable[dict[str, Any]], wanted: set[str]) -> set[tuple[str, str]]:
    """Literal relative references ("Practitioner/123") to the `wanted` types, found anywhere
    in the resources (contained resources are part of their parent and are not fetched)."""
    found: set[tuple[str, str]] = set()

    def walk(value: Any, depth: int) -> None:
        if depth > 10:
            return
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str):
                _reference_add(found, ref, wanted)
            for key, child in value.items():
                if key != "contained":
                    walk(child, depth + 1)
        elif isinstance(value, list):
            for child in value:
                walk(child, depth + 1)

    for resource in resources:
        walk(resource, 0)
    return found


def _reference_add(found: set[tuple[str, str]], ref: str, wanted: set[str]) -> None:
    if "/" in ref and not ref.startswith("#"):
        rtype, _, rid = ref.rstrip("/").rpartition("/")
        rtype = rtype.rsplit("/", 1)[-1]
        if rtype in wanted and rid and "?" not in rid and len(rid) <= 200:
            found.add((rtype, rid))


# A "reference" key's string value in canonical JSON (no whitespace; escapes kept).
_REFERENCE = re.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')


def references_in(
    resource: dict[str, Any], canonical: bytes, wanted: set[str]
) -> set[tuple[str, str]]:
    """`referenced_ids([resource], wanted)` read from the resource's canonical JSON with one
    regular expression (a tenth of the walk's time); a resource with contained resources, whose
    references the walk leaves out, is walked."""
    if b'"contained":' in canonical:
        return referenced_ids([resource], wanted)
    found: set[tuple[str, str]] = set()
    for match in _REFERENCE.finditer(canonical):
        raw = match.group(1)
        ref = fhirjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
        _reference_add(found, ref, wanted)
    return found


# --- Preparing a page ----------------------------------------------------------------------------

# (canonical JSON, columns, validation error, keyed digest); None: left to the writer.
Prepared = tuple[bytes, Columns | None, str | None, str | None]


def keyed_digest(key: bytes, canonical: bytes) -> str:
    """The stored payload's digest: HMAC-SHA256 under `key` (`store.payload_digest_key`)."""
    return hmac.digest(key, canonical, "sha256").hex()


def prepare_one(
    resource: dict[str, Any], validate: bool = True, digest_key: bytes | None = None
) -> Prepared:
    """A resource's canonical JSON and, validating, its columns and verdict; with `digest_key`,
    its digest too."""
    canonical = canonical_json(resource)
    digest = keyed_digest(digest_key, canonical) if digest_key is not None else None
    if not validate:
        return canonical, None, None, digest
    return canonical, columns_extract(resource, canonical), resource_validate(resource), digest


def prepare_many(resources: list[dict[str, Any]]) -> list[Prepared]:
    """Canonical JSON for every resource; the columns and validation are left to the store,
    for the new or changed resources only (digest first)."""
    return [prepare_one(r, validate=False) for r in resources]
