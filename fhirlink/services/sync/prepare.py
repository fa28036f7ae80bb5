"""Pure, Django-free preparation of synced resources: canonical JSON, filter columns, R4
validation, references. CPU-bound; `prepare_start` runs large pages in a small process pool
(`FHIRLINK_SYNC_PREPARE_PROCESSES`) so validation does not serialise on the writer thread.
Spawned pool processes import only this module and `fhirlink.fhirjson` (no Django)."""

from __future__ import annotations

import gc
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
    """The store's clear columns of one resource. A named tuple, not a dataclass: the pool
    sends 52,000 of them to the writer on a first sync, and a tuple pickles and unpickles in
    half the time (the unpickling holds the writer's process's GIL)."""

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
    from fhirlink.services.sync import fhir_core_speedup

    fhir_core_speedup.apply()  # before the first model of this process is built
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


# --- Pages ---------------------------------------------------------------------------------------


def page_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """A searchset page's resources, without OperationOutcomes (search warnings)."""
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") != "OperationOutcome"
        and (e.get("search") or {}).get("mode", "match") != "outcome"
    ]


# (canonical JSON, columns, validation error, keyed digest); None: left to the writer.
Prepared = tuple[bytes, Columns | None, str | None, str | None]


def keyed_digest(key: bytes, canonical: bytes) -> str:
    """The stored payload's digest: HMAC-SHA256 under `key` (`store.payload_digest_key`)."""
    return hmac.digest(key, canonical, "sha256").hex()


def prepare_one(
    resource: dict[str, Any], validate: bool = True, digest_key: bytes | None = None
) -> Prepared:
    """A resource's canonical JSON and, validating, its columns and verdict; with `digest_key`,
    its digest too (a pool process computes it, so that the writer's process does not: the
    digest releases the GIL and the writer then waits to get it back, 52,000 times)."""
    canonical = canonical_json(resource)
    digest = keyed_digest(digest_key, canonical) if digest_key is not None else None
    if not validate:
        return canonical, None, None, digest
    return canonical, columns_extract(resource, canonical), resource_validate(resource), digest


Refs = set[tuple[str, str]]


def _references(
    resources: list[dict[str, Any]], prepared: list[Prepared], wanted: tuple[str, ...]
) -> Refs:
    """The references to the `wanted` types in prepared resources (read from their canonical
    JSON)."""
    refs: Refs = set()
    if wanted:
        wanted_set = set(wanted)
        for resource, (canonical, *_) in zip(resources, prepared, strict=True):
            refs |= references_in(resource, canonical, wanted_set)
    return refs


# The garbage collector's thresholds while syncing (the default is 700, 10, 10): a page parses
# into some 16,000 containers and the writer allocates as many, so the default collects young
# objects several times per page and walks every page in flight each tenth time; what a sync
# allocates is freed by reference counting, so fewer collections lose nothing. Measured on the
# large patient: the sync process's collections took 2.2 s of a first sync, 0.2 s with these.
GC_THRESHOLD = (25_000, 20, 20)


@contextmanager
def collector_relaxed() -> Iterator[None]:
    """Run the block with `GC_THRESHOLD`, then restore the process's own thresholds."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _pool_process_init(model_types: tuple[str, ...]) -> None:
    """A pool process's start (billiard's `initializer`): load the models of `model_types`
    now, not page by page. A cold pool's first pages used to wait about a second for one
    model import after another, and the fetch threads, their queue full, with them. Then keep
    the garbage collector from walking those models again (8 % of the pool's CPU): a pool
    process only prepares pages."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    for resource_type in model_types:
        _model_class(resource_type)
    _settle()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a pool process: exit once the process that started the pool is gone. A pool's
    processes outlived a worker killed with SIGKILL (by the OOM killer, an orchestrator, the
    kill test): each holds both ends of the pool's task pipe, so it never reads an end of file,
    and waits for tasks forever."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


_settled = False


def _settle() -> None:
    global _settled
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    _settled = True


def _prepare_chunk(
    resources: list[dict[str, Any]], wanted: tuple[str, ...], digest_key: bytes | None = None
) -> tuple[list[Prepared], Refs]:
    """In a pool process: resources prepared and validated, and their references."""
    prepared = [prepare_one(r, digest_key=digest_key) for r in resources]
    refs = _references(resources, prepared, wanted)
    if not _settled:  # a pool started with no model types: settle once its first page is done
        _settle()
    return prepared, refs


def _prepare_page(
    body: bytes, wanted: tuple[str, ...], digest_key: bytes | None = None
) -> tuple[list[Prepared], Refs]:
    """In a pool process: `_prepare_chunk` of a page's resources, read from its raw body.
    Parsing the page here costs less than pickling its resources across. A whole page goes to
    one process (the processes take pages in turn): split over them, every process parsed
    every page, a third more parsing for a few milliseconds less wait per page."""
    return _prepare_chunk(page_resources(fhirjson.loads(body)), wanted, digest_key)


_pool: Any = None  # a billiard Pool
_pool_size = 0
_pool_pid = 0  # the process that started `_pool` (a forked child must start its own)
_pool_broken = False
_pool_lock = threading.Lock()
_pool_model_types: tuple[str, ...] = ()  # loaded by each pool process at its start
POOL_TIMEOUT = 120  # seconds for one page's preparation before giving up on the pool


def pool_start(size: int, model_types: Iterable[str]) -> None:
    """Start the process's preparation pool now, if it is not running, without waiting for it:
    its processes load the models of `model_types` while the caller goes on (a worker process
    at its start, a sync at its own). Started by the first page instead, it made that page,
    and the fetching behind it, wait for the pool."""
    global _pool_model_types
    _pool_model_types = tuple(sorted(set(model_types) | set(_pool_model_types)))
    _get_pool(size)


def pool_ready(timeout: float = 60) -> None:
    """Wait until every process of the pool has started (the benchmark: a worker process that
    started a while before its first sync)."""
    pool, deadline = _pool, time.monotonic() + timeout
    seen: set[int] = set()
    while pool is not None and len(seen) < _pool_size and time.monotonic() < deadline:
        seen |= {pid for pid, _ in pool.map(_process_state, [0.05] * _pool_size, chunksize=1)}


def _process_state(pause: float) -> tuple[int, int]:
    """In a pool process, after `pause` seconds (so that every process gets a turn): its pid,
    and how many resource types it has looked up the models of."""
    time.sleep(pause)
    return os.getpid(), _model_class.cache_info().currsize


def _get_pool(size: int) -> Any:
    """The process's preparation pool (started on first use, kept for the process's life).

    billiard (Celery's multiprocessing fork) rather than `concurrent.futures`: a prefork
    worker's children are daemonic, and the standard library refuses to let them start
    processes; billiard does not. Pool processes are spawned and import only this module."""
    global _pool, _pool_size, _pool_pid, _pool_broken
    if size <= 0 or _pool_broken:
        return None
    with _pool_lock:
        if _pool is not None and _pool_pid != os.getpid():
            _pool = None  # inherited through fork: its processes and threads are the parent's
        if _pool is None or _pool_size != size:
            try:
                import billiard

                if _pool is not None:
                    _pool.terminate()
                _pool = billiard.get_context("spawn").Pool(
                    processes=size,
                    initializer=_pool_process_init,
                    initargs=(_pool_model_types,),
                )
                _pool_size, _pool_pid = size, os.getpid()
            except (AssertionError, OSError, ValueError, ImportError):
                logger.warning("sync: no preparation process pool; preparing inline")
                _pool, _pool_broken = None, True
                return None
        return _pool


class Preparing:
    """A page's preparation, started by `prepare_start` (in the pool, or already done inline);
    `get()` waits for it. The fetch thread starts it and goes on to fetch the next page; the
    writer waits for it when it stores the page."""

    def __init__(
        self,
        resources: list[dict[str, Any]],
        *,
        wanted: tuple[str, ...] = (),
        pending: Any = None,
        done: tuple[list[Prepared], Refs] | None = None,
    ) -> None:
        self._resources = resources
        self._wanted = wanted
        self._pending = pending  # billiard AsyncResult of [(prepared, refs), ...] per chunk
        self._done = done

    def _result(self) -> tuple[list[Prepared], Refs]:
        if self._done is None:
            try:
                parts = self._pending.get(timeout=POOL_TIMEOUT)
                prepared = [item for part, _ in parts for item in part]
                if len(prepared) != len(self._resources):
                    raise ValueError("the pool read a different page")
                self._done = prepared, set().union(*(refs for _, refs in parts))
            except Exception:
                self._done = _pool_failed(self._resources, self._wanted)
            self._pending = None
        return self._done

    def get(self) -> list[Prepared]:
        return self._result()[0]

    def references(self) -> Refs:
        """References to the `wanted` types in the page's resources (see `referenced_ids`)."""
        return self._result()[1]


def _inline(
    resources: list[dict[str, Any]], wanted: tuple[str, ...]
) -> tuple[list[Prepared], Refs]:
    """Canonical JSON and references, no validation (the writer validates changed resources)."""
    prepared = [prepare_one(r, validate=False) for r in resources]
    return prepared, _references(resources, prepared, wanted)


def _pool_failed(
    resources: list[dict[str, Any]], wanted: tuple[str, ...]
) -> tuple[list[Prepared], Refs]:
    global _pool_broken
    logger.warning("sync: preparation pool failed; preparing inline", exc_info=True)
    _pool_broken = True
    return _inline(resources, wanted)


def prepare_start(
    resources: list[dict[str, Any]],
    *,
    body: bytes | None = None,
    wanted: Iterable[str] = (),
    processes: int = 0,
    min_batch: int = 50,
    digest_key: bytes | None = None,
) -> Preparing:
    """Start preparing `resources` (see `prepare_many`) and finding their references to the
    `wanted` types, without waiting: in the pool, the page is validated while the caller goes
    on (a page's body in one process; resources without a body split over the processes);
    inline (small pages, no pool), it is done before this returns. `body`, the raw page the
    resources were read from (`page_resources`), goes to the pool instead of the resources: a
    pool process parses it faster than the resources pickle. `digest_key`: the pool digests
    the payloads too (see `prepare_one`)."""
    wanted_types = tuple(sorted(wanted))
    pool = _get_pool(processes) if len(resources) >= min_batch else None
    if pool is None:
        return Preparing(resources, wanted=wanted_types, done=_inline(resources, wanted_types))
    try:
        if body is not None:
            pending = pool.starmap_async(
                _prepare_page,
                [(body, wanted_types, digest_key)],
            )
        else:
            chunk = max(1, -(-len(resources) // processes))
            pending = pool.starmap_async(
                _prepare_chunk,
                [
                    (resources[i : i + chunk], wanted_types, digest_key)
                    for i in range(0, len(resources), chunk)
                ],
            )
    except Exception:
        return Preparing(resources, wanted=wanted_types, done=_pool_failed(resources, wanted_types))
    return Preparing(resources, wanted=wanted_types, pending=pending)


def prepare_many(
    resources: list[dict[str, Any]], *, processes: int = 0, min_batch: int = 50
) -> list[Prepared]:
    """Canonical JSON for every resource, and (pool only) columns and validation. Inline, the
    columns and validation are left to the caller for changed resources only."""
    return prepare_start(resources, processes=processes, min_batch=min_batch).get()


def pool_close() -> None:
    """Stop the preparation pool (a worker's shutdown; the benchmark, to account for it)."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
            _pool.join()
        _pool = None
