"""One step of a stream (`fhirlink.sync_stream_step`): fetch ONE page, store it and checkpoint
the stream in one transaction, and say what to enqueue next.

Idempotent: the message carries the checkpoint it was sent for (`pages`); a step finding the
stream moved on (a duplicate delivery, a takeover's second chain) does nothing, and the
transaction that stores a page re-checks it under the stream's row lock, so of two deliveries
of one message only one stores its page. A killed worker's step is delivered again
(`acks_late`) and fetches the same page from the unchanged checkpoint.

Faults: a page that is not JSON/FHIR is quarantined and asked for again (`page_retries`); a
next link pointing at the same page is asked for again, then the stream ends with
`looping_next_link` (its page stored); 429/5xx/timeouts are asked for again after a backoff
(Retry-After wins), at most `max_attempts_per_request` times, by re-enqueueing the step with a
countdown (no worker waits); other 4xx and the bounds fail the stream; a token that cannot be
refreshed ends the run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from fhirlink import http, vault
from fhirlink.conf import sync_settings
from fhirlink.ehr.fhir import FhirClient, FhirPageError, LimitExceeded, Page
from fhirlink.models import SyncQuarantine, SyncRun, SyncRunStatus, SyncStream
from fhirlink.models.sync import StreamMode, StreamStatus
from fhirlink.services.sync import plan
from fhirlink.services.sync.prepare import fhir_datetime
from fhirlink.sync import extras, queue
from fhirlink.sync.context import (
    CONNECTION_ENDED,
    TOKEN_RETRYABLE,
    backoff,
    fhir_client,
    http_error_code,
    run_check,
    slot_release,
    slot_take,
)
from fhirlink.sync.finish import run_finish
from fhirlink.sync.queue import Message
from fhirlink.sync.write import resources_store

logger = logging.getLogger(__name__)

CHECKPOINT_FIELDS = [
    "pages",
    "bytes",
    "fetched",
    "created",
    "updated",
    "unchanged",
    "invalid",
    "next_url",
    "status",
    "error",
    "watermark_candidate",
    "stepped_at",
]


def stream_step(*, stream_id: int, pages: int, attempt: int = 0, bad: int = 0) -> list[Message]:
    stream = (
        SyncStream.objects.select_related("run__connection__health_system")
        .filter(pk=stream_id)
        .first()
    )
    if stream is None or stream.status != StreamStatus.PENDING or stream.pages != pages:
        return []  # a duplicate, or a step of a chain that moved on
    run = stream.run
    if run.status != SyncRunStatus.RUNNING:
        return []
    stop = run_check(run)
    if stop:
        run_finish(run_id=run.pk, fatal=stop)
        return []
    cfg = sync_settings()
    read = "_read" in stream.params
    if not read and pages >= cfg.max_pages:
        return _stream_failed(stream, "too_many_pages")
    again = queue.stream_step(stream_id, pages, attempt, bad, key=stream.key)
    try:
        client = fhir_client(run)
    except CONNECTION_ENDED as exc:
        run_finish(run_id=run.pk, fatal=exc.code)
        return []
    except TOKEN_RETRYABLE:
        if attempt + 1 >= cfg.max_attempts_per_request:
            return _stream_failed(stream, "token_unavailable")
        return [
            again._replace(
                args=[stream_id, pages, attempt + 1, bad], countdown=backoff(attempt, None)
            )
        ]
    slot = slot_take(run)
    if slot is None:
        return [again._replace(countdown=queue.SLOT_WAIT_SECONDS)]
    url = _url(stream, client)
    try:
        page = _read(client, stream, url) if read else client.page(url)
    except FhirPageError as exc:
        _quarantine(run, stream, exc)
        if bad < cfg.page_retries:
            return [again._replace(args=[stream_id, pages, attempt, bad + 1])]
        return _stream_failed(stream, exc.code)
    except http.EhrRetryable as exc:
        if attempt + 1 < cfg.max_attempts_per_request:
            delay = backoff(attempt, exc.retry_after)
            return [again._replace(args=[stream_id, pages, attempt + 1, bad], countdown=delay)]
        return _stream_failed(stream, http_error_code(exc))
    except http.EhrTerminal as exc:
        return _stream_failed(stream, http_error_code(exc))
    except LimitExceeded as exc:
        return _stream_failed(stream, exc.code)
    except CONNECTION_ENDED as exc:
        run_finish(run_id=run.pk, fatal=exc.code)
        return []
    finally:
        slot_release(slot)
    failed = ""
    if page.next_url and page.next_url == url:
        # A next link pointing back at this page: the page is fine; ask again for a good link.
        if bad < cfg.page_retries:
            return [again._replace(args=[stream_id, pages, attempt, bad + 1])]
        page.next_url, failed = "", "looping_next_link"
    return _page_store(stream, page, requests=client.requests_made, failed=failed)


def _url(stream: SyncStream, client: FhirClient) -> str:
    if stream.next_url:
        return stream.next_url
    if "_read" in stream.params:
        return f"{client.base_url.rstrip('/')}/{stream.params['_read']}"
    params = {k: v for k, v in stream.params.items() if not k.startswith("_probe")}
    return client.search_url(stream.resource_type, params)


def _read(client: FhirClient, stream: SyncStream, url: str) -> Page:
    resource, size = client.read(stream.resource_type, stream.params["_read"].split("/", 1)[1])
    return Page(url=url, resources=[resource], next_url="", size=size)


def _page_store(stream: SyncStream, page: Page, *, requests: int, failed: str) -> list[Message]:
    """Store the page and checkpoint the stream (and the run's counters) in one transaction."""
    run = stream.run
    named: set[tuple[str, str]] = set()
    with transaction.atomic():
        locked = SyncStream.objects.select_for_update().get(pk=stream.pk)
        if locked.status != StreamStatus.PENDING or locked.pages != stream.pages:
            return []
        result = resources_store(
            run_id=run.pk,
            connection=run.connection,
            resources=page.resources,
            mark_seen=locked.mode == StreamMode.FULL,
            references=named,
        )
        if locked.watermark_candidate is None:
            locked.watermark_candidate = _server_time(page.server_date)
        locked.pages += 1
        locked.bytes += page.size
        for name in ("fetched", "created", "updated", "unchanged", "invalid"):
            setattr(locked, name, getattr(locked, name) + getattr(result, name))
        locked.next_url = page.next_url
        locked.stepped_at = timezone.now()
        children: list[SyncStream] = []
        if locked.params.get("_probe"):
            children = _split_observation(locked, page)
            locked.status, locked.next_url = StreamStatus.DONE, ""
        elif failed:
            locked.status, locked.error = StreamStatus.FAILED, failed
        elif not page.next_url:
            locked.status = StreamStatus.DONE  # last page stored: never fetched again
        locked.save(update_fields=CHECKPOINT_FIELDS)
        owner = SyncRun.objects.select_for_update().get(pk=run.pk)
        if owner.status != SyncRunStatus.RUNNING or owner.cancel_requested:
            transaction.set_rollback(True)  # stopped meanwhile: this page is not stored
            return []
        owner.connection = run.connection
        jobs = extras.references_named(owner, named) if named else []
        if failed:
            owner.errors = [*owner.errors, {"type": locked.resource_type, "code": failed}][-100:]
        owner.pages += 1
        owner.bytes += page.size
        owner.requests += requests
        messages = [queue.stream_step(c.pk, 0, key=c.key) for c in children]
        if locked.status == StreamStatus.PENDING:
            messages.insert(0, queue.stream_step(locked.pk, locked.pages, key=locked.key))
            finish = False
        else:
            more, finish = _stream_ended(owner, locked)
            jobs += more
        owner.extras_pending += len(jobs)
        owner.save(
            update_fields=[
                "pages",
                "bytes",
                "requests",
                "references",
                "references_pending",
                "extras_pending",
                "errors",
            ]
        )
        messages += [extras.job_message(owner, job) for job in jobs]
        if finish and not owner.extras_pending:
            messages.append(queue.run_finish(owner.pk))
    return messages


def _stream_ended(run: SyncRun, stream: SyncStream) -> tuple[list[extras.Job], bool]:
    """(Under the run's lock, the stream's end written.) The extras its end lets go (the
    attachments once the DocumentReferences are stored; the carried references once every
    stream is), and whether no stream is pending any more."""
    pending = run.streams.filter(status=StreamStatus.PENDING)
    jobs: list[extras.Job] = []
    if (
        stream.resource_type == "DocumentReference"
        and stream.status == StreamStatus.DONE
        and not pending.filter(resource_type="DocumentReference").exists()
    ):
        jobs += extras.binary_jobs(run)
    if pending.exists():
        return jobs, False
    return jobs + extras.references_carried(run), True


def _stream_failed(stream: SyncStream, code: str) -> list[Message]:
    """The stream ends with `code` (recorded on the run) and stores nothing more."""
    with transaction.atomic():
        locked = SyncStream.objects.select_for_update().get(pk=stream.pk)
        if locked.status != StreamStatus.PENDING or locked.pages != stream.pages:
            return []
        locked.status, locked.error = StreamStatus.FAILED, code[:64]
        locked.stepped_at = timezone.now()
        locked.save(update_fields=["status", "error", "stepped_at"])
        owner = SyncRun.objects.select_for_update().get(pk=stream.run_id)
        if owner.status != SyncRunStatus.RUNNING:
            return []
        owner.connection = stream.run.connection
        owner.errors = [*owner.errors, {"type": locked.resource_type, "code": code}][-100:]
        jobs, finish = _stream_ended(owner, locked)
        owner.extras_pending += len(jobs)
        owner.save(update_fields=["errors", "extras_pending", "references_pending"])
        messages = [extras.job_message(owner, job) for job in jobs]
        if finish and not owner.extras_pending:
            messages.append(queue.run_finish(owner.pk))
    return messages


def _quarantine(run: SyncRun, stream: SyncStream, exc: FhirPageError) -> None:
    """Keep a page that was not JSON/FHIR, encrypted (it may hold PHI), capped in size."""
    body = exc.body[: sync_settings().quarantine_bytes]
    blob = None
    if body:
        cipher = vault.patient_cipher(patient_id=run.connection.patient_id)
        blob = cipher.encrypt(body, aad=f"fhirlink.quarantine:{run.connection_id}")
    with transaction.atomic():
        SyncQuarantine.objects.create(
            run_id=run.pk,
            connection_id=run.connection_id,
            resource_type=stream.resource_type,
            error=exc.code,
            status=exc.status,
            body_size=len(exc.body),
            body=blob,
        )
        owner = SyncRun.objects.select_for_update().only("errors").get(pk=run.pk)
        entry = {"type": stream.resource_type, "code": exc.code, "quarantined": True}
        owner.errors = [*owner.errors, entry][-100:]
        owner.save(update_fields=["errors"])


def _split_observation(stream: SyncStream, page: Page) -> list[SyncStream]:
    """Observation's probe page: the rest of the pass as date windows (newest first), or the
    server's own paging when the page has no dates to split on."""
    if not page.next_url:
        return []
    resources = page.resources
    dates = [d for d in (_effective(r) for r in resources) if d is not None]
    base = {k: v for k, v in stream.params.items() if k != "_probe"}
    if not dates:
        children = [
            SyncStream(
                run_id=stream.run_id,
                resource_type=stream.resource_type,
                key=f"{stream.key}:rest",
                mode=stream.mode,
                params=base,
                next_url=page.next_url,
                watermark_candidate=stream.watermark_candidate,
                stepped_at=stream.stepped_at,
            )
        ]
    else:
        windows = plan.observation_windows(
            newest_on_first_page=max(dates),
            oldest_on_first_page=_effective(resources[-1]) or min(dates),
            page_size=len(resources),
        )
        children = [
            SyncStream(
                run_id=stream.run_id,
                resource_type=stream.resource_type,
                key=f"{stream.key}:{w.key}",
                mode=stream.mode,
                params={**base, "date": w.dates},
                watermark_candidate=stream.watermark_candidate,
                stepped_at=stream.stepped_at,
            )
            for w in windows
        ]
    SyncStream.objects.bulk_create(children)
    keys = [c.key for c in children]
    return list(SyncStream.objects.filter(run_id=stream.run_id, key__in=keys).order_by("id"))


def _effective(resource: dict[str, Any]) -> datetime | None:
    return fhir_datetime(
        resource.get("effectiveDateTime")
        or (resource.get("effectivePeriod") or {}).get("start")
        or resource.get("effectiveInstant")
    )


def _server_time(date_header: str) -> datetime:
    if date_header:
        try:
            return parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            pass
    return timezone.now()
