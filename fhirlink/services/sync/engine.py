"""The sync engine: one run of one connection, fetching concurrently and writing on one thread.

Concurrency (why threads inside one task, not fan-out tasks): HTTP waits dominate, so a bounded
pool of fetch threads (the health system's concurrency, shared with every other worker through
`HealthSystemLimiter`) takes the streams' pages in turn, one page at a time (`_Ready`), and
starts each page's validation in the preparation process pool (`prepare.prepare_start`, not
waited for: the thread fetches on), while the task's own thread does all database work: wait
for the page's preparation, encrypt (the patient's key once per page), upsert the page and
checkpoint the stream in one transaction. One writer per connection keeps checkpoints simple
and SQLite happy; a bounded queue between fetchers and the writer bounds memory (pages are
streamed: a whole type is never held).

Streams: one per permitted type; Observation's full pass starts with a probe page and then
splits into date windows (plan.observation_windows) fetched in parallel. A stream's checkpoint
is its next link after the last stored page, so a killed worker's run resumes where it stopped.

Never two runs of one connection at once: a partial unique constraint allows one queued/running
run per connection, and the executing worker holds a lease renewed after every page (a dead
worker's run is taken over when its lease expires).

Starting and claiming runs live in `runs.py`; the referenced resources (fetched as soon as a
stored page names them) and the attachments (fetched beside the remaining streams once the
DocumentReferences are stored), both by a feeder thread whose results reach the writer through
the same queue (`_EarlyExtras`), in `extras.py`; counts, watermarks and the access-log entry at
the end of a run in `finish.py`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from django.db import close_old_connections, reset_queries, transaction
from django.utils import timezone

from fhirlink import http, vault
from fhirlink.exceptions import ConnectionGone, ConnectionNotFound, ReauthRequired
from fhirlink.fhir_client import (
    Cancelled,
    FairGate,
    FhirClient,
    FhirPageError,
    HealthSystemLimiter,
    LimitExceeded,
    LoopingNextLink,
    Page,
    RetryPolicy,
)
from fhirlink.models import (
    Connection,
    SyncQuarantine,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncTrigger,
    SyncWatermark,
)
from fhirlink.models.sync import StreamMode, StreamStatus
from fhirlink.scopes import granted_categories
from fhirlink.services.sync import plan
from fhirlink.services.sync.extras import ExtrasMixin, Job
from fhirlink.services.sync.finish import FinishMixin
from fhirlink.services.sync.prepare import (
    collector_relaxed,
    page_resources,
    pool_start,
    prepare_start,
)
from fhirlink.services.sync.runs import (
    RUN_ENDING_CODES,
    USABLE,
    StopRun,
    row_update,
    run_page_counted,
    run_state,
    sync_claim,
)
from fhirlink.services.sync.store import fhir_datetime, payload_digest_key, resource_upsert_page
from fhirlink.services.tokens import connection_access_token, connection_refresh
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted

logger = logging.getLogger(__name__)

S = plan.setting


def sync_connection_run(*, connection_id: Any, trigger: str = SyncTrigger.CONNECT) -> str:
    """The task body: claim the connection's run (or resume a dead worker's) and execute it."""
    owner = uuid.uuid4().hex
    claimed = sync_claim(connection_id=connection_id, owner=owner, trigger=trigger)
    if isinstance(claimed, str):
        logger.info("connection %s: sync not started (%s)", connection_id, claimed)
        return claimed
    return SyncExecution(run=claimed, owner=owner).execute()


def preparation_start() -> None:
    """Start this process's preparation pool, if it is not running, without waiting: its
    processes load the models of every type a sync stores (a worker process's start, and every
    sync's, in case the worker did not)."""
    pool_start(int(S("FHIRLINK_SYNC_PREPARE_PROCESSES", 0)), plan.model_types())


@dataclass
class _Msg:
    kind: str  # page | end | error | quarantine | extra | extras_end
    stream_id: int
    page: Page | None = None
    code: str = ""
    body: bytes = b""
    status: int | None = None
    extra: Any = None  # (job, resource or None, error code) of a Binary fetched early


@dataclass
class _Fetching:
    """A stream being fetched: the URL of its next page, and what its fetching has seen."""

    stream: SyncStream
    url: str
    pages: int  # fetched so far (a resumed stream counts its stored pages)
    seen: set[str] = field(default_factory=set)  # URLs fetched (a looping next link)


class _Ready:
    """The streams whose next page is due, in line for the fetch threads, which take one page
    at a time: a stream goes back to the end of the line after each page, so all streams move
    on together and end close together. With a thread per stream, the last long stream started
    was fetched alone at the end (about a second with 150 ms of latency), the other requests in
    flight idle. Observation's probe (its date windows follow) and the DocumentReferences
    (their attachments follow) go first."""

    def __init__(self) -> None:
        self._line: queue.PriorityQueue[tuple[int, int, _Fetching | None]] = queue.PriorityQueue()
        self._order = itertools.count()

    def put(self, fetching: _Fetching) -> None:
        self._line.put((_stream_priority(fetching.stream), next(self._order), fetching))

    def take(self) -> _Fetching | None:
        return self._line.get()[2]

    def close(self, threads: int) -> None:
        """Each thread stops when it comes to one of these (after every stream in line)."""
        for _ in range(threads):
            self._line.put((LAST, next(self._order), None))


class _EarlyExtras:
    """The extras fetched while the streams run: each referenced resource as soon as a stored
    page names it (not after the streams: their tail went from about a second to nothing), and
    the Binaries once the DocumentReferences are stored. A feeder thread takes the jobs in turn
    and its fetchers (as many as requests in flight, shared with the streams' fetch threads
    through the gate and the health system's limit: with half as many, the references named by
    the last pages were fetched two at a time after the streams) hand the results to the
    writer through the streams' queue."""

    def __init__(
        self,
        execution: SyncExecution,
        out: queue.Queue[_Msg],
        *,
        binaries_wanted: bool,
        references_stored: set[tuple[str, str]],
        reference_types: set[str],
        threads: int,
    ) -> None:
        self.execution = execution
        self.out = out
        self.binaries_wanted = binaries_wanted  # a DocumentReference stream runs here
        self.binaries_started = False  # the attachments were listed (and fetched) early
        self.running = False  # the feeder has not reported its end yet
        self.documents: dict[str, str] = {}  # Binary URL -> its DocumentReference's id
        self.batches: dict[str, list[dict[str, Any]]] = {"ref": [], "binary": []}
        self.references_known = set(references_stored)  # stored before, or fed here
        self.reference_types = reference_types
        self.threads = threads
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.closed = False

    def references(self, found: set[tuple[str, str]]) -> None:
        new = sorted(ref for ref in found - self.references_known if ref[0] in self.reference_types)
        self.references_known |= set(found)
        self._feed([("ref", t, i) for t, i in new])

    def binaries(self) -> None:
        self.binaries_wanted = False
        self.binaries_started = True
        self.documents = self.execution._binary_jobs()
        self._feed([("binary", "Binary", url) for url in sorted(self.documents)])

    def _feed(self, jobs: list[Job]) -> None:
        if not jobs or self.closed:
            return
        if not self.running:
            self.running = True
            threading.Thread(target=self._run, name="fhir-extras", daemon=True).start()
        for job in jobs:
            self.jobs.put(job)

    def close(self) -> None:
        """No more jobs: the feeder ends once the fetched ones are handed over."""
        if not self.closed:
            self.closed = True
            self.jobs.put(None)

    def _run(self) -> None:
        def fetch(job: Job) -> None:
            try:
                result = self.execution._fetch_extra(job)
            except Exception:
                logger.exception("sync extra fetch failed")
                result = (job, None, "internal_error")
            self.out.put(_Msg("extra", 0, extra=result))

        try:
            with ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="fhir-extra"
            ) as fetchers:
                while (job := self.jobs.get()) is not None:
                    fetchers.submit(fetch, job)
        finally:
            self.out.put(_Msg("extras_end", 0))


@dataclass
class SyncExecution(ExtrasMixin, FinishMixin):
    run: SyncRun
    owner: str
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    renewed_at: float = 0.0  # monotonic time of the last lease renewal
    early: _EarlyExtras | None = None

    # -- setup --

    def execute(self) -> str:
        with collector_relaxed():
            return self._execute()

    def _execute(self) -> str:
        preparation_start()  # its processes start while the token and the first pages come
        run = self.run
        self.connection = Connection.objects.select_related("health_system").get(
            pk=run.connection_id
        )
        self.base = self.connection.fhir_base_url or self.connection.health_system.fhir_base_url
        try:
            token = connection_access_token(connection_id=self.connection.pk)
        except (ReauthRequired, ConnectionGone, ConnectionNotFound) as exc:
            return self._finish(fatal=exc.code)
        except (http.EhrHttpError, Exception) as exc:
            logger.warning(
                "connection %s: no access token (%s)", self.connection.pk, type(exc).__name__
            )
            return self._finish(fatal="token_unavailable")
        hs = self.connection.health_system
        concurrency = max(1, int(S("FHIRLINK_SYNC_CONCURRENCY", 4)))
        self.client = FhirClient(
            base_url=self.base,
            token=token,
            on_unauthorized=self._refresh_token,
            limiter=HealthSystemLimiter(
                str(hs.pk),
                concurrency=concurrency,
                rate_per_second=int(S("FHIRLINK_SYNC_RATE_PER_SECOND", 50)),
                # A slot outlives the longest request; a killed worker's slots free themselves.
                lease=int(
                    float(S("FHIRLINK_HTTP_CONNECT_TIMEOUT", 5))
                    + float(S("FHIRLINK_HTTP_READ_TIMEOUT", 20))
                    + 5
                ),
            ),
            retry=RetryPolicy(
                max_attempts=int(S("FHIRLINK_SYNC_MAX_ATTEMPTS_PER_REQUEST", 6)),
                base_delay=float(S("FHIRLINK_SYNC_BACKOFF_BASE", 0.5)),
                max_delay=float(S("FHIRLINK_SYNC_BACKOFF_MAX", 30)),
            ),
            max_page_bytes=int(S("FHIRLINK_SYNC_MAX_PAGE_BYTES", 20 * 1024 * 1024)),
            max_binary_bytes=int(S("FHIRLINK_SYNC_MAX_BINARY_BYTES", 10 * 1024 * 1024)),
            gate=FairGate(concurrency),
            cancelled=self.stop.is_set,
        )
        try:
            if not run.streams.exists():
                self._plan()
            binaries_fetched = self._run_streams()
            self._fetch_extras(binaries=not binaries_fetched)
        except StopRun as stop:
            self.stop.set()
            return self._finish(fatal=stop.code)
        finally:
            self.client.close()
        return self._finish()

    def _refresh_token(self) -> str:
        try:
            connection_refresh(connection_id=self.connection.pk, force=True)
            return connection_access_token(connection_id=self.connection.pk)
        except (ReauthRequired, ConnectionGone, ConnectionNotFound):
            self.stop.set()
            raise
        finally:
            close_old_connections()

    def _plan(self) -> None:
        discovery = self.connection.health_system.discovery or {}
        supported = discovery.get("resources") or None
        types = plan.permitted_types(
            granted=list(self.connection.granted_resources or []), supported=supported
        )
        marks = {
            w.resource_type: w for w in SyncWatermark.objects.filter(connection=self.connection)
        }
        reconcile_after = timedelta(days=float(S("FHIRLINK_SYNC_RECONCILE_DAYS", 7)))
        now = timezone.now()
        pid = self.connection.fhir_patient_id
        categories = granted_categories(self.connection.granted_scopes or "")
        streams: list[SyncStream] = []
        for rtype in types:
            if rtype in plan.READ_TYPES:
                streams.append(
                    SyncStream(
                        run=self.run,
                        resource_type=rtype,
                        key=rtype,
                        mode=StreamMode.REFETCH,
                        params={"_read": f"{rtype}/{pid}"},
                    )
                )
                continue
            mark = marks.get(rtype)
            reconcile_due = (
                mark is None
                or mark.last_full_at is None
                or (mark.last_full_at < now - reconcile_after)
            )
            spec = plan.TYPE_SPECS[rtype]
            if reconcile_due:
                mode, since = StreamMode.FULL, None
            elif spec.last_updated and mark is not None and mark.since is not None:
                mode, since = StreamMode.INCREMENTAL, mark.since
            else:
                mode, since = StreamMode.REFETCH, None
            params = plan.search_params(
                rtype, patient_id=pid, since=since, categories=categories.get(rtype)
            )
            if rtype == "Observation" and mode == StreamMode.FULL:
                params = {**params, "_probe": "1"}
            streams.append(
                SyncStream(run=self.run, resource_type=rtype, key=rtype, mode=mode, params=params)
            )
        SyncStream.objects.bulk_create(streams)
        # Fetched beside the streams, like a resumed run's references (see `_run_streams`).
        carried = self._references_unresolved()
        SyncRun.objects.filter(pk=self.run.pk).update(resource_types=types, references=carried)
        self.run.resource_types = types
        self.run.references = carried

    # -- fetching (pool threads) --

    def _first_url(self, stream: SyncStream) -> str:
        if stream.next_url:
            return stream.next_url
        params = {k: v for k, v in stream.params.items() if not k.startswith("_probe")}
        if "_read" in params:
            return f"{self.base.rstrip('/')}/{params['_read']}"
        return self.client.search_url(stream.resource_type, params)

    def _fetch_pages(self, ready: _Ready, out: queue.Queue[_Msg]) -> None:
        """A fetch thread: the next page of whichever stream is first in line, until closed."""
        try:
            while (fetching := ready.take()) is not None:
                self._fetch_step(fetching, ready, out)
        finally:
            close_old_connections()

    def _fetch_step(self, fetching: _Fetching, ready: _Ready, out: queue.Queue[_Msg]) -> None:
        stream = fetching.stream
        try:
            self._fetch_page(fetching, ready, out)
        except Cancelled:
            out.put(_Msg("error", stream.pk, code="cancelled"))
        except (ReauthRequired, ConnectionGone, ConnectionNotFound) as exc:
            out.put(_Msg("error", stream.pk, code=exc.code))
        except LimitExceeded as exc:
            out.put(_Msg("error", stream.pk, code=exc.code))
        except http.EhrRetryable as exc:
            out.put(_Msg("error", stream.pk, code=f"retries_exhausted_{exc.status or 'network'}"))
        except http.EhrTerminal as exc:
            out.put(_Msg("error", stream.pk, code=f"http_{exc.status or 'error'}"))
        except Exception:
            logger.exception("sync stream %s failed", stream.pk)
            out.put(_Msg("error", stream.pk, code="internal_error"))

    def _fetch_page(self, fetching: _Fetching, ready: _Ready, out: queue.Queue[_Msg]) -> None:
        """One page of a stream, handed to the writer; the stream goes back in line for its
        next page, or ends."""
        stream, url = fetching.stream, fetching.url
        if self.stop.is_set():
            raise Cancelled()
        if "_read" in stream.params:
            retries = int(S("FHIRLINK_SYNC_PAGE_RETRIES", 2))
            try:
                resource, size = self.client.read(
                    stream.resource_type, stream.params["_read"].split("/", 1)[1]
                )
            except FhirPageError:
                resource = self.client.read_retrying(
                    stream.resource_type, stream.params["_read"].split("/", 1)[1], retries=retries
                )
                size = 0
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": resource}],
            }
            out.put(
                _Msg("page", stream.pk, page=Page(url=url, bundle=bundle, next_url="", size=size))
            )
            out.put(_Msg("end", stream.pk))
            return
        if fetching.pages >= int(S("FHIRLINK_SYNC_MAX_PAGES", 5000)):
            raise LimitExceeded("too_many_pages")
        page_retries = int(S("FHIRLINK_SYNC_PAGE_RETRIES", 2))
        page: Page | None = None
        for attempt in range(page_retries + 1):
            try:
                page = self.client.page(url)
            except FhirPageError as exc:
                out.put(
                    _Msg("quarantine", stream.pk, code=exc.code, body=exc.body, status=exc.status)
                )
                if attempt == page_retries:
                    out.put(_Msg("error", stream.pk, code=exc.code))
                    return
                continue
            if page.next_url and (page.next_url in fetching.seen or page.next_url == url):
                # A looping next link: the page itself is fine; ask again for a good link.
                if attempt == page_retries:
                    out.put(_Msg("page", stream.pk, page=replace(page, next_url="")))
                    out.put(_Msg("error", stream.pk, code=LoopingNextLink.code))
                    return
                page = None
                continue
            break
        assert page is not None
        fetching.seen.add(url)
        fetching.pages += 1
        self._prepare(page)
        out.put(_Msg("page", stream.pk, page=page))
        if stream.params.get("_probe") or not page.next_url:
            # The end (a probe's rest is split into date windows by the writer).
            out.put(_Msg("end", stream.pk))
            return
        fetching.url = page.next_url
        ready.put(fetching)

    # -- the writer (this thread) --

    def _run_streams(self) -> bool:
        """Fetch and store every stream still to do; True when the attachments were fetched
        beside them (see `_EarlyExtras`)."""
        concurrency = max(1, int(S("FHIRLINK_SYNC_CONCURRENCY", 4)))
        threads = plan.fetch_threads(concurrency)
        out: queue.Queue[_Msg] = queue.Queue(maxsize=concurrency)
        ready = _Ready()
        active: dict[int, SyncStream] = {}

        def start(stream: SyncStream) -> None:
            active[stream.pk] = stream
            ready.put(_Fetching(stream, self._first_url(stream), stream.pages))

        streams = list(
            self.run.streams.exclude(status__in=[StreamStatus.DONE, StreamStatus.FAILED]).order_by(
                "id"
            )
        )
        # Binaries are fetched while the other streams run, once the DocumentReferences this
        # execution fetches are all stored (a resumed run whose DocumentReferences were done
        # fetches them after the streams, in `_fetch_extras`).
        early = self.early = _EarlyExtras(
            self,
            out,
            binaries_wanted=any(s.resource_type == "DocumentReference" for s in streams),
            references_stored=self._references_stored(),
            reference_types=self._reference_types(),
            threads=concurrency,
        )
        # The references the run knew of at its start (the previous run's unresolved ones, a
        # resumed run's earlier pages'): fetched when a page names them, or once the streams
        # are stored (not first: the run's first requests go to its pages).
        known_at_start = {(t, i) for t, _, i in (r.partition("/") for r in self.run.references)}
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fhir-sync") as pool:
            for stream in streams:
                start(stream)
            for _ in range(threads):
                pool.submit(self._fetch_pages, ready, out)
            try:
                self._write(out, active, early, start, known_at_start)
            except BaseException:
                self.stop.set()
                early.close()
                # Drain so that fetch threads blocked on put() can go on: each stream still in
                # line ends with "cancelled" at its next turn.
                while active or early.running:
                    try:
                        msg = out.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if msg.kind in {"end", "error"}:
                        active.pop(msg.stream_id, None)
                    elif msg.kind == "extras_end":
                        early.running = False
                raise
            finally:
                ready.close(threads)
        return early.binaries_started

    def _write(
        self,
        out: queue.Queue[_Msg],
        active: dict[int, SyncStream],
        early: _EarlyExtras,
        start: Callable[[SyncStream], None],
        known_at_start: set[tuple[str, str]],
    ) -> None:
        """Store what the fetch threads hand over, until every stream and extra is done."""
        while active or early.running or not early.closed:
            if not active and not early.closed:
                # Every stream stored: the references no page named, and then no more.
                early.references(known_at_start)
                early.close()
                continue  # done, unless that (or an earlier job) keeps the feeder running
            msg = out.get()
            if msg.kind == "extra":
                job, data, error = msg.extra
                self._extra_fetched(job, data, error, early.documents, early.batches)
                continue
            if msg.kind == "extras_end":
                self._store_extras(early.batches)
                early.running = False
                continue
            stream = active[msg.stream_id]
            if msg.kind == "page":
                assert msg.page is not None
                for child in self._store_page(stream, msg.page):
                    start(child)
            elif msg.kind == "quarantine":
                self._quarantine(stream, msg)
            elif msg.kind == "error":
                self._stream_failed(stream, msg.code)
                active.pop(stream.pk)
                if msg.code in RUN_ENDING_CODES:
                    raise StopRun(self._stop_reason(msg.code))
            else:
                self._stream_done(stream)
                active.pop(stream.pk)
            if early.binaries_wanted and not any(
                s.resource_type == "DocumentReference" for s in active.values()
            ):
                early.binaries()

    def _stop_reason(self, code: str) -> str:
        if code != "cancelled":
            return code
        run = (
            SyncRun.objects.filter(pk=self.run.pk).values("cancel_requested", "lease_owner").first()
        )
        if run and run["cancel_requested"]:
            # Cancelled by the consent revocation handler, or by a disconnect erasing the data.
            if not consent_is_granted(patient=self.connection.patient_id, purpose=Purpose.EHR_SYNC):
                return "consent_revoked"
            return "cancelled"
        return getattr(self, "_stop_code", "cancelled")

    def _check_still_ours(self) -> None:
        """Before every page: stop if the run was cancelled (consent revoked, data erased) or
        taken over, or the connection is no longer usable (one read). The lease is renewed,
        and consent re-checked, when a quarter of it has passed (a write per page cost the
        SQLite writer a commit each)."""
        lease = timedelta(seconds=int(S("FHIRLINK_SYNC_LEASE_SECONDS", 60)))
        state = run_state(self.run.pk)
        if (
            state is None
            or state.lease_owner != self.owner
            or state.status != SyncRunStatus.RUNNING
            or state.cancel_requested
        ):
            if state is None or not state.cancel_requested:
                self._stop_code = "lease_lost"
            self.stop.set()
            raise StopRun(self._stop_reason("cancelled"))
        if state.connection_status not in USABLE:
            self.stop.set()
            raise StopRun(f"connection_{state.connection_status or 'gone'}")
        now = time.monotonic()
        if now - self.renewed_at < lease.total_seconds() / 4:
            return
        renewed = SyncRun.objects.filter(
            pk=self.run.pk,
            lease_owner=self.owner,
            status=SyncRunStatus.RUNNING,
            cancel_requested=False,
        ).update(lease_until=timezone.now() + lease)
        if not renewed:
            self._stop_code = "lease_lost"
            self.stop.set()
            raise StopRun(self._stop_reason("cancelled"))
        self.renewed_at = now
        if not consent_is_granted(patient=self.connection.patient_id, purpose=Purpose.EHR_SYNC):
            self.stop.set()
            raise StopRun("consent_revoked")

    @staticmethod
    def _prepare(page: Page) -> None:
        """On the fetch thread: the page's resources, and their preparation (canonical JSON,
        columns, validation, references) started in the preparation pool, so the writer only
        writes. The thread does not wait for it: it goes on to fetch the next page while the
        pool validates this one (waiting cost a quarter of the requests in flight)."""
        page.resources = page_resources(page.bundle)
        page.preparing = prepare_start(
            page.resources,
            body=page.body,
            wanted=plan.REFERENCE_TYPES,
            processes=int(S("FHIRLINK_SYNC_PREPARE_PROCESSES", 0)),
            digest_key=payload_digest_key(),
        )
        page.body = None  # the pool has it (pages in flight: what a sync's memory peak is made of)

    def _store_page(self, stream: SyncStream, page: Page) -> list[SyncStream]:
        reset_queries()  # DEBUG (dev) keeps every query, bulk inserts included: bound memory
        self._check_still_ours()
        if page.preparing is None:
            self._prepare(page)
        resources = page.resources or []
        prepared = page.preparing.get()
        refs = page.preparing.references()
        children: list[SyncStream] = []
        with transaction.atomic():
            result = resource_upsert_page(
                connection=self.connection,
                resources=resources,
                source_base_url=self.base,
                sync_run_id=self.run.pk,
                mark_seen=stream.mode == StreamMode.FULL,
                prepared=prepared,
            )
            if refs:
                known = set(self.run.references)
                new = {f"{t}/{i}" for t, i in refs} - known
                if new and len(known) < int(S("FHIRLINK_SYNC_MAX_REFERENCES", 2000)):
                    self.run.references = sorted(known | new)
                    SyncRun.objects.filter(pk=self.run.pk).update(references=self.run.references)
                    known |= new
                if self.early is not None:
                    # The recorded ones this page names (the feeder skips those it has).
                    self.early.references({(t, i) for t, i in refs if f"{t}/{i}" in known})
            if stream.watermark_candidate is None:
                stream.watermark_candidate = _server_time(page.server_date)
            stream.pages += 1
            stream.bytes += page.size
            stream.fetched += result.fetched
            stream.created += result.created
            stream.updated += result.updated
            stream.unchanged += result.unchanged
            stream.invalid += result.invalid
            stream.next_url = page.next_url
            if not page.next_url:
                stream.status = StreamStatus.DONE  # last page stored: never fetched again
            if stream.params.get("_probe"):
                children = self._split_observation(stream, page, resources)
                stream.status = StreamStatus.DONE
                stream.next_url = ""
            row_update(stream, CHECKPOINT_FIELDS)
            run_page_counted(self.run.pk, size=page.size, requests=self.client.requests_made)
        return children

    def _split_observation(
        self, stream: SyncStream, page: Page, resources: list[dict[str, Any]]
    ) -> list[SyncStream]:
        if not page.next_url:
            return []
        dates = [
            d
            for d in (
                fhir_datetime(
                    r.get("effectiveDateTime")
                    or (r.get("effectivePeriod") or {}).get("start")
                    or r.get("effectiveInstant")
                )
                for r in resources
            )
            if d is not None
        ]
        if not dates:
            # Nothing to split on: follow the server's own paging instead.
            child = SyncStream.objects.create(
                run=self.run,
                resource_type=stream.resource_type,
                key=f"{stream.key}:rest",
                mode=stream.mode,
                params={k: v for k, v in stream.params.items() if k != "_probe"},
                next_url=page.next_url,
                watermark_candidate=stream.watermark_candidate,
            )
            return [child]
        last = fhir_datetime(
            resources[-1].get("effectiveDateTime")
            or (resources[-1].get("effectivePeriod") or {}).get("start")
        ) or min(dates)
        windows = plan.observation_windows(
            newest_on_first_page=max(dates), oldest_on_first_page=last, page_size=len(resources)
        )
        base = {k: v for k, v in stream.params.items() if k != "_probe"}
        children = [
            SyncStream(
                run=self.run,
                resource_type=stream.resource_type,
                key=f"{stream.key}:{w.key}",
                mode=stream.mode,
                params={**base, "date": w.dates},
                watermark_candidate=stream.watermark_candidate,
            )
            for w in windows
        ]
        SyncStream.objects.bulk_create(children)
        return list(
            SyncStream.objects.filter(run=self.run, key__in=[c.key for c in children]).order_by(
                "id"
            )
        )

    def _quarantine(self, stream: SyncStream, msg: _Msg) -> None:
        cap = int(S("FHIRLINK_SYNC_QUARANTINE_BYTES", 256 * 1024))
        body = msg.body[:cap]
        blob = None
        if body:
            cipher = vault.patient_cipher(patient_id=self.connection.patient_id)
            blob = cipher.encrypt(body, aad=f"fhirlink.quarantine:{self.connection.pk}")
        SyncQuarantine.objects.create(
            run=self.run,
            connection=self.connection,
            resource_type=stream.resource_type,
            error=msg.code,
            status=msg.status,
            body_size=len(msg.body),
            body=blob,
        )
        self._add_error(stream.resource_type, msg.code, quarantined=True)

    def _add_error(self, resource_type: str, code: str, **extra: Any) -> None:
        with transaction.atomic():
            run = SyncRun.objects.select_for_update().get(pk=self.run.pk)
            run.errors = [*run.errors, {"type": resource_type, "code": code, **extra}][-100:]
            run.save(update_fields=["errors"])

    def _stream_failed(self, stream: SyncStream, code: str) -> None:
        stream.status = StreamStatus.FAILED
        stream.error = code[:64]
        stream.save(update_fields=["status", "error"])
        if code != "cancelled":
            self._add_error(stream.resource_type, code)

    def _stream_done(self, stream: SyncStream) -> None:
        if stream.status != StreamStatus.DONE:
            stream.status = StreamStatus.DONE
            stream.save(update_fields=["status"])


# A stream's checkpoint, written with the page it follows.
CHECKPOINT_FIELDS = (
    "pages",
    "bytes",
    "fetched",
    "created",
    "updated",
    "unchanged",
    "invalid",
    "next_url",
    "status",
    "watermark_candidate",
)


# A stream's place in line (`_Ready`): streams that unlock more work first.
FIRST_PROBE, FIRST_DOCUMENTS, IN_TURN, LAST = range(4)


def _stream_priority(stream: SyncStream) -> int:
    """Observation's probe page (its date windows, most of a large record's pages, follow it),
    then the DocumentReferences (their attachments are fetched once they are stored); the rest
    in turn."""
    if stream.params.get("_probe"):
        return FIRST_PROBE
    if stream.resource_type == "DocumentReference":
        return FIRST_DOCUMENTS
    return IN_TURN


def _server_time(date_header: str) -> datetime:
    if date_header:
        try:
            return parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            pass
    return timezone.now()
