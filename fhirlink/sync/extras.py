"""The extras of a run, each fetched by its own small step (`fhirlink.sync_extra_step`):

* referenced resources (Practitioner, Organization, Location, Medication), read once per
  connection, as soon as a stored page names them; those the previous run failed to fetch
  are asked for again once the streams are stored (unless a page names them first), at most
  `REFERENCE_RETRIES_PER_RUN`;
* DocumentReference attachments (Binary, within the size and content-type limits), once the
  DocumentReferences are stored, while the other streams run.

Read one id per request (Cerner documents no `_id` search for the referenced types). A Binary
over `max_binary_bytes` (by its attachment's declared `size`, before any request, or by what
was downloaded) is never stored: the run records `binary_too_large` naming the Binary and its
DocumentReference by id (never a URL or content) and ends `partial`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from fhirlink import http
from fhirlink.conf import sync_settings
from fhirlink.ehr.fhir import FhirPageError, LimitExceeded
from fhirlink.models import SyncedResource, SyncRun, SyncRunStatus
from fhirlink.models.sync import StreamStatus
from fhirlink.sync import queue
from fhirlink.sync.attachments import FHIR_ID, attachment_urls, binary_names
from fhirlink.sync.context import (
    CONNECTION_ENDED,
    TOKEN_RETRYABLE,
    backoff,
    fhir_client,
    run_check,
    slot_release,
    slot_take,
)
from fhirlink.sync.finish import run_finish
from fhirlink.sync.grants import reference_types
from fhirlink.sync.queue import Message
from fhirlink.sync.write import resources_store

logger = logging.getLogger(__name__)

BINARY_TOO_LARGE = "binary_too_large"
REFERENCE_RETRIES_PER_RUN = 100
Job = tuple[str, str, str]  # ("ref", "Type/id", "") or ("binary", URL, DocumentReference id)


def job_message(run: SyncRun, job: Job, attempt: int = 0, countdown: float = 0.0) -> Message:
    kind, item, document = job
    return Message(
        queue.EXTRA_STEP, [str(run.pk), run.attempts, kind, item, document, attempt], countdown
    )


# --- Which extras -------------------------------------------------------------------------------


def _split(refs: Iterable[str]) -> set[tuple[str, str]]:
    return {(t, i) for t, _, i in (r.partition("/") for r in refs)}


def references_stored(run: SyncRun, refs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of `refs` the connection has stored (by type: the store's index finds them)."""
    found: set[tuple[str, str]] = set()
    for rtype in {t for t, _ in refs}:
        ids = [i for t, i in refs if t == rtype]
        found |= {
            (rtype, i)
            for i in SyncedResource.objects.filter(
                connection_id=run.connection_id, resource_type=rtype, fhir_id__in=ids
            ).values_list("fhir_id", flat=True)
        }
    return found


def _reference_jobs(run: SyncRun, refs: set[tuple[str, str]]) -> list[Job]:
    wanted = {r for r in refs if r[0] in reference_types(run)}
    return [("ref", f"{t}/{i}", "") for t, i in sorted(wanted - references_stored(run, wanted))]


def references_unresolved(run: SyncRun) -> list[str]:
    """References the connection's previous planned run named but did not store (their fetch
    failed): asked for again by this run."""
    previous = (
        SyncRun.objects.filter(connection_id=run.connection_id)
        .exclude(pk=run.pk)
        .exclude(resource_types=[])
        .order_by("-created_at")
        .values_list("references", flat=True)
        .first()
    )
    if not previous:
        return []
    jobs = _reference_jobs(run, _split(previous))
    return [item for _, item, _ in jobs][:REFERENCE_RETRIES_PER_RUN]


def references_named(run: SyncRun, named: set[tuple[str, str]]) -> list[Job]:
    """(Under the run's lock; the caller saves `references` and `references_pending`.) The
    jobs for the references a stored page names that this run had not seen, and for those
    carried over from the previous run that it names."""
    known = set(run.references)
    names = {f"{t}/{i}" for t, i in named}
    new = names - known
    if new and len(known) < sync_settings().max_references:
        run.references = sorted(known | new)
    else:
        new = set()
    carried = names & set(run.references_pending)
    if carried:
        run.references_pending = [r for r in run.references_pending if r not in carried]
    return _reference_jobs(run, _split(new | carried))


def references_carried(run: SyncRun) -> list[Job]:
    """(Under the run's lock.) Every stream is stored: the carried references no page named."""
    jobs = _reference_jobs(run, _split(run.references_pending))
    run.references_pending = []
    return jobs


def jobs_left(run: SyncRun, *, streams_pending: bool) -> list[Job]:
    """A taken-over run's extras: the references it recorded and did not store, and the
    attachments once its DocumentReferences are stored."""
    carried = set(run.references_pending)
    jobs = _reference_jobs(run, _split(r for r in run.references if r not in carried))
    documents_pending = run.streams.filter(
        resource_type="DocumentReference", status=StreamStatus.PENDING
    ).exists()
    if not documents_pending:
        jobs += binary_jobs(run, record=False)
    return jobs


def binary_jobs(run: SyncRun, *, record: bool = True) -> list[Job]:
    """The attachments to download (see `attachments.attachment_urls`); none when Binary was
    not granted. One whose declared size is over the bound is not downloaded: with `record`,
    an error on the run instance (the caller holds its lock and saves `errors`)."""
    if "DocumentReference" not in run.resource_types or "Binary" not in (
        run.connection.granted_resources or []
    ):
        return []
    urls, too_large = attachment_urls(run)
    if record:
        for url, (document, size) in sorted(too_large.items()):
            if url not in urls:  # else another attachment names it without a size
                error = {"type": "Binary", "code": BINARY_TOO_LARGE}
                run.errors = [*run.errors, {**error, **binary_names(url, document), "size": size}]
        run.errors = run.errors[-100:]
    return [("binary", url, document) for url, document in sorted(urls.items())]


# --- The step -----------------------------------------------------------------------------------


def extra_step(
    *, run_id: Any, generation: int, kind: str, item: str, document: str = "", attempt: int = 0
) -> list[Message]:
    """Fetch and store one extra of the run (a step of an older generation of a taken-over
    run does nothing: the takeover enqueued its extras again)."""
    run = SyncRun.objects.select_related("connection__health_system").filter(pk=run_id).first()
    if run is None or run.attempts != generation or run.status != SyncRunStatus.RUNNING:
        return []
    job: Job = (kind, item, document)
    stop = run_check(run)
    if stop:
        run_finish(run_id=run.pk, fatal=stop)
        return []
    cfg = sync_settings()
    try:
        client = fhir_client(run)
    except CONNECTION_ENDED as exc:
        run_finish(run_id=run.pk, fatal=exc.code)
        return []
    except TOKEN_RETRYABLE:
        return [job_message(run, job, attempt + 1, backoff(attempt, None))]
    slot = slot_take(run)
    if slot is None:
        return [job_message(run, job, attempt, queue.SLOT_WAIT_SECONDS)]
    data: dict[str, Any] | None = None
    error = ""
    try:
        if kind == "ref":
            rtype, _, fhir_id = item.partition("/")
            data = client.read(rtype, fhir_id)[0]
        else:
            data = client.binary(item)[0]
    except FhirPageError as exc:
        if attempt < cfg.page_retries:
            return [job_message(run, job, attempt + 1)]
        error = exc.code
    except http.EhrRetryable as exc:
        if attempt + 1 < cfg.max_attempts_per_request:
            return [job_message(run, job, attempt + 1, backoff(attempt, exc.retry_after))]
        error = f"http_{exc.status or 'network'}"
    except http.EhrTerminal as exc:
        error = f"http_{exc.status or 'error'}"
    except LimitExceeded as exc:
        error = exc.code
    except CONNECTION_ENDED as exc:
        run_finish(run_id=run.pk, fatal=exc.code)
        return []
    finally:
        slot_release(slot)
    if data is not None and kind == "binary" and _decoded_size(data) > cfg.max_binary_bytes:
        data, error = None, BINARY_TOO_LARGE  # more than the bound (no declared size, or wrong)
    return _extra_done(run, generation, job, data, error, requests=client.requests_made)


def _extra_done(
    run: SyncRun,
    generation: int,
    job: Job,
    data: dict[str, Any] | None,
    error: str,
    *,
    requests: int,
) -> list[Message]:
    kind, item, document = job
    with transaction.atomic():
        locked = SyncRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != SyncRunStatus.RUNNING or locked.attempts != generation:
            return []
        if error:
            if kind == "binary":
                names = binary_names(item, document)
                locked.errors = [*locked.errors, {"type": "Binary", "code": error, **names}][-100:]
            else:
                rtype, _, fhir_id = item.partition("/")
                named = {"id": fhir_id} if FHIR_ID.fullmatch(fhir_id) else {}
                locked.errors = [*locked.errors, {"type": rtype, "code": error, **named}][-100:]
        elif data is not None:
            resources_store(
                run_id=run.pk,
                connection=run.connection,
                resources=[data],
                mark_seen=False,
                is_reference=kind == "ref",
            )
        locked.extras_pending = max(0, locked.extras_pending - 1)
        locked.requests += requests
        locked.save(update_fields=["errors", "extras_pending", "requests"])
        if locked.extras_pending or locked.streams.filter(status=StreamStatus.PENDING).exists():
            return []
    return [queue.run_finish(run.pk)]


def _decoded_size(data: dict[str, Any]) -> int:
    """The decoded length of a Binary's base64 `data` (whitespace ignored), without decoding."""
    compact = "".join(str(data.get("data", "")).split())
    return len(compact) * 3 // 4 - (len(compact) - len(compact.rstrip("=")))
