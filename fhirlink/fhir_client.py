"""FHIR search/read/paging for the sync engine, on top of `fhirlink.http` (the one HTTP client).

* Paging only through the server's ``next`` links (never a built URL); a next link that was
  already followed in this chain is a loop (`LoopingNextLink`).
* Retryable failures (network, timeout, 429, 5xx) are retried with exponential backoff and full
  jitter, honouring Retry-After, at most `max_attempts` times; then `EhrRetryable` propagates.
* A 401 calls `on_unauthorized` (refresh the token) once per request and retries with the new
  token; a second 401 is terminal.
* Every request takes a slot of the health system's shared concurrency limit and respects its
  requests-per-second limit (`HealthSystemLimiter`, cache-based so all workers share it).
* Bounds: a page larger than `max_page_bytes` or a Binary larger than `max_binary_bytes` is
  refused with a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache

from fhirlink import fhirjson, http

logger = logging.getLogger(__name__)


class FhirPageError(Exception):
    """A 200 page that is not JSON or not a FHIR searchset. `code` is a stable error code."""

    def __init__(self, code: str, *, body: bytes = b"", status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.body = body
        self.status = status

    def __repr__(self) -> str:
        return f"FhirPageError({self.code!r})"


class LoopingNextLink(Exception):
    code = "looping_next_link"


class LimitExceeded(Exception):
    """A configured bound was hit (`code`: page_too_large, binary_too_large, too_many_pages)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Cancelled(Exception):
    code = "cancelled"


RATE_KEYS = 8  # per-second counters, reused in turn: older than their 5 s life when reused


def limiter_cache() -> BaseCache:
    """The limiter's cache: its own alias where settings define one (the embedded file cache),
    else the default (Redis in production)."""
    return caches["fhirlink-limiter" if "fhirlink-limiter" in settings.CACHES else "default"]


class HealthSystemLimiter:
    """A concurrency semaphore and a per-second rate limit per health system, in the cache
    (Redis in production; a file cache of its own in dev, where add/incr are close to but not
    strictly atomic: good enough to stay polite, which is the point). Its keys are a fixed set
    per health system: the slots, and `RATE_KEYS` per-second counters used in turn.

    One limiter serves one sync's threads, and saves them most cache round trips (each cost
    milliseconds while the sync's writer held the GIL, between one request and the next):

    * a slot released while another of its threads waits for one (`release(hand_on=True)`) is
      kept, still held in the cache, and taken by that thread; only in the first `hold` seconds
      after it was taken from the cache, so the lease still covers the last request made in it,
      and the slot goes back to the cache, where other syncs wait for it, every `hold` seconds;
    * rate tokens are reserved `batch` at a time, for the second they were counted in."""

    def __init__(
        self,
        health_system_id: str,
        *,
        concurrency: int,
        rate_per_second: int,
        lease: int = 120,
        hold: float | None = None,
    ) -> None:
        self.prefix = f"fhirlink:hs:{health_system_id}"
        self.concurrency = max(1, concurrency)
        self.rate = max(1, rate_per_second)
        self.lease = lease
        self.hold = min(2.0, lease / 10) if hold is None else hold
        self.batch = max(1, min(self.concurrency, self.rate // 10))
        self.owner = uuid.uuid4().hex
        self.cache = limiter_cache()
        self._incr_keeps_expiry = isinstance(self.cache, RedisCache)
        self._lock = threading.Lock()  # the slots below
        self._asking = threading.Lock()  # one thread at a time asks the cache for a slot
        self._taken: dict[str, float] = {}  # slot key -> when taken from the cache (monotonic)
        self._kept: list[str] = []  # released by one request, handed on to the next
        self._closed = False
        # Slots this limiter released last, tried first: usually free, so a thread taking over
        # a slot another thread of the same sync just gave back asks the cache once, not once
        # per slot before it.
        self._released: deque[int] = deque(maxlen=self.concurrency)
        self._rate_lock = threading.Lock()
        self._tokens = 0
        self._tokens_second = -1

    def acquire(self, cancelled: Callable[[], bool] | None = None) -> str:
        delay = 0.005
        while True:
            kept = self._take_kept()
            if kept is not None:
                self._rate_wait()
                return kept
            key = self._take_free()
            if key is not None:
                self._rate_wait()
                return key
            if cancelled is not None and cancelled():
                raise Cancelled()
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter, not crypto)
            delay = min(delay * 2, 0.2)

    def release(self, key: str, *, hand_on: bool = False) -> None:
        """Give the slot back; with `hand_on` (another thread of this sync is about to ask),
        keep it for that thread while it is young enough."""
        with self._lock:
            taken = self._taken.get(key)
            if (
                hand_on
                and not self._closed
                and taken is not None
                and time.monotonic() - taken < self.hold
            ):
                self._kept.append(key)
                return
        self._give_back(key)

    def close(self) -> None:
        """Give back the slots kept for a thread that did not come (the sync is over)."""
        with self._lock:
            self._closed = True
            kept, self._kept = self._kept, []
        for key in kept:
            self._give_back(key)

    def _take_free(self) -> str | None:
        """A slot from the cache. This sync's threads ask in turn and skip the slots it holds:
        the file cache's add is not atomic, and two threads of one sync holding one slot would
        each give it back."""
        with self._asking:
            hinted = [*self._released]
            for slot in (*hinted, *(n for n in range(self.concurrency) if n not in hinted)):
                key = f"{self.prefix}:slot:{slot}"
                if key in self._taken:
                    continue
                if self.cache.add(key, self.owner, timeout=self.lease):
                    with self._lock:
                        self._taken[key] = time.monotonic()
                        with contextlib.suppress(ValueError):
                            self._released.remove(slot)
                    return key
        return None

    def _take_kept(self) -> str | None:
        stale: list[str] = []
        found = None
        with self._lock:
            while self._kept:
                key = self._kept.pop()
                taken = self._taken.get(key)
                if taken is not None and time.monotonic() - taken < self.hold:
                    found = key
                    break
                stale.append(key)
        for key in stale:
            self._give_back(key)
        return found

    def _give_back(self, key: str) -> None:
        with self._lock:
            self._taken.pop(key, None)
        if self.cache.get(key) == self.owner:
            self.cache.delete(key)
            self._released.append(int(key.rpartition(":")[2]))

    def _rate_wait(self) -> None:
        with self._rate_lock:
            while True:
                second = int(time.time())
                if self._tokens_second == second and self._tokens:
                    self._tokens -= 1
                    return
                granted = self._reserve(second)
                if granted:
                    self._tokens_second, self._tokens = second, granted - 1
                    return
                time.sleep(max(0.0, second + 1 - time.time()) + 0.001)

    def _reserve(self, second: int) -> int:
        """Count up to `batch` requests in this second's counter; how many fit under the rate.
        The counter of `RATE_KEYS` seconds ago, which this one reuses, has expired."""
        key = f"{self.prefix}:rate:{second % RATE_KEYS}"
        if self._incr_keeps_expiry:
            # Redis: created with its expiry, then INCR (atomic, keeps the expiry).
            self.cache.add(key, 0, timeout=5)
            try:
                used = self.cache.incr(key, self.batch)
            except ValueError:
                used = self.batch
            before = used - self.batch
        else:
            # A file cache's incr is a get and a set anyway (with the default expiry, which
            # would keep the counter past its turn): the same two, with the counter's expiry.
            before = int(self.cache.get(key) or 0)
            if before >= self.rate:
                return 0
            self.cache.set(key, before + min(self.batch, self.rate - before), timeout=5)
        return max(0, min(self.batch, self.rate - before))


class FairGate:
    """A counting semaphore that serves its waiters in the order they came: a release hands the
    permit straight to the longest waiter. `threading.Semaphore` lets the releasing thread take
    the permit back before the woken waiter runs; a sync's fetch threads, each releasing and
    asking again at once, kept some threads (and the streams they held) waiting for seconds."""

    def __init__(self, permits: int) -> None:
        self._lock = threading.Lock()
        self._free = max(1, permits)
        self._waiters: deque[threading.Lock] = deque()  # each held until given a permit

    def acquire(self, cancelled: Callable[[], bool] | None = None, poll: float = 0.2) -> None:
        """Wait for a permit, in turn; raises `Cancelled` (giving up the place in line) once
        `cancelled()` says so, checked every `poll` seconds."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        while not waiter.acquire(timeout=poll):
            if cancelled is not None and cancelled():
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                        raise Cancelled()
                # Handed a permit just now: pass it on.
                self.release()
                raise Cancelled()

    def waiting(self) -> bool:
        """Whether a thread waits in line (a hint: read without the lock)."""
        return bool(self._waiters)

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


@dataclass
class Page:
    url: str
    bundle: dict[str, Any]
    next_url: str
    size: int
    server_date: str = ""
    body: bytes | None = None  # the raw page, for the preparation pool to parse
    # Filled by the fetch thread when the engine prepares pages off the writer thread.
    resources: list[dict[str, Any]] | None = None
    preparing: Any = None  # the page's preparation under way (prepare.Preparing)


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: int | None) -> float:
        if retry_after is not None:
            return float(min(retry_after, self.max_delay))
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(cap / 2, cap)  # noqa: S311 (jitter, not crypto)


@dataclass
class FhirClient:
    """A FHIR R4 client for one connection. Thread-safe: the token is shared and refreshed once
    under a lock when a request gets a 401."""

    base_url: str
    token: str = field(repr=False)  # a bearer token: never in a repr, a log or an error report
    on_unauthorized: Callable[[], str] | None = None
    limiter: HealthSystemLimiter | None = None
    # This process's share of the limiter: a thread waits here (woken at once when a request
    # ends) before it asks the shared limiter (polled with backoff), so a run can keep more
    # threads than requests in flight and a slot never idles while its thread parses a page.
    gate: FairGate | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_page_bytes: int = 20 * 1024 * 1024
    max_binary_bytes: int = 10 * 1024 * 1024
    cancelled: Callable[[], bool] = lambda: False
    requests_made: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _token_generation: int = 0

    # --- requests ---------------------------------------------------------------------------

    def _send(self, url: str, *, accept: str) -> http.EhrResponse:
        refreshed = False
        attempt = 0
        while True:
            if self.cancelled():
                raise Cancelled()
            generation = self._token_generation
            self._gate_enter()
            try:
                slot = self.limiter.acquire(self.cancelled) if self.limiter else None
            except BaseException:
                self._gate_exit()
                raise
            try:
                with self._lock:
                    self.requests_made += 1
                return http.request(
                    "GET", url, headers={"Authorization": f"Bearer {self.token}"}, accept=accept
                )
            except http.EhrRetryable as exc:
                attempt += 1
                if attempt >= self.retry.max_attempts:
                    raise
                wait = self.retry.delay(attempt - 1, exc.retry_after)
                logger.info("FHIR %s, retrying in %.2fs (attempt %d)", exc.status, wait, attempt)
            except http.EhrTerminal as exc:
                if exc.status != 401 or refreshed or self.on_unauthorized is None:
                    raise
                refreshed = True
                self._refresh(generation)
                continue
            finally:
                if slot is not None and self.limiter is not None:
                    # The thread first in line at the gate takes this slot over, without a
                    # round trip to the shared cache.
                    hand_on = self.gate is not None and self.gate.waiting()
                    self.limiter.release(slot, hand_on=hand_on)
                self._gate_exit()
            self._sleep(wait)

    def close(self) -> None:
        """The sync is over: slots kept for a next request go back to the shared limiter."""
        if self.limiter is not None:
            self.limiter.close()

    def _gate_enter(self) -> None:
        if self.gate is not None:
            self.gate.acquire(self.cancelled)

    def _gate_exit(self) -> None:
        if self.gate is not None:
            self.gate.release()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.cancelled():
                raise Cancelled()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _refresh(self, generation: int) -> None:
        with self._lock:
            if self._token_generation != generation:
                return  # another thread refreshed already
            assert self.on_unauthorized is not None
            self.token = self.on_unauthorized()
            self._token_generation += 1

    # --- FHIR --------------------------------------------------------------------------------

    def search_url(self, resource_type: str, params: dict[str, Any]) -> str:
        return f"{self.base_url.rstrip('/')}/{resource_type}?{urlencode(params, doseq=True)}"

    def page(self, url: str) -> Page:
        """One search page. Raises FhirPageError for a body that is not a FHIR searchset."""
        response = self._send(url, accept="application/fhir+json")
        size = len(response.content)
        if size > self.max_page_bytes:
            raise LimitExceeded("page_too_large")
        try:
            bundle = fhirjson.loads(response.content)
        except ValueError:
            raise FhirPageError("page_not_json", body=response.content, status=200) from None
        if (
            not isinstance(bundle, dict)
            or bundle.get("resourceType") != "Bundle"
            or bundle.get("type") != "searchset"
            or not isinstance(bundle.get("entry", []), list)
            or not isinstance(bundle.get("link", []), list)
        ):
            raise FhirPageError("page_not_fhir_searchset", body=response.content, status=200)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if (
                not isinstance(resource, dict)
                or not isinstance(resource.get("resourceType"), str)
                or (resource.get("resourceType") != "OperationOutcome" and not resource.get("id"))
            ):
                raise FhirPageError("page_entry_not_fhir", body=response.content, status=200)
        next_url = ""
        for link in bundle.get("link", []):
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                next_url = str(link["url"]).strip()
        return Page(
            url=url,
            bundle=bundle,
            next_url=next_url,
            size=size,
            server_date=response.headers.get("Date", ""),
            body=response.content,
        )

    def read(self, resource_type: str, fhir_id: str) -> tuple[dict[str, Any], int]:
        url = f"{self.base_url.rstrip('/')}/{resource_type}/{fhir_id}"
        response = self._send(url, accept="application/fhir+json")
        if len(response.content) > self.max_page_bytes:
            raise LimitExceeded("page_too_large")
        data = _json_object(response, "read")
        if data.get("resourceType") != resource_type or not data.get("id"):
            raise FhirPageError("read_not_fhir", body=response.content, status=200)
        return data, len(response.content)

    def binary(self, url: str) -> tuple[dict[str, Any], int]:
        """A Binary as FHIR JSON (`Accept: application/fhir+json`, base64 `data`), by the exact
        URL the referring resource gave."""
        response = self._send(url, accept="application/fhir+json")
        size = len(response.content)
        # base64 inflates by 4/3: bound the encoded body accordingly.
        if size > self.max_binary_bytes * 4 // 3 + 4096:
            raise LimitExceeded("binary_too_large")
        data = _json_object(response, "binary")
        if data.get("resourceType") != "Binary" or not data.get("id"):
            raise FhirPageError("binary_not_fhir", body=b"", status=200)
        return data, size

    def read_retrying(self, resource_type: str, fhir_id: str, *, retries: int) -> dict[str, Any]:
        """`read`, asking again when the body is not JSON/FHIR (a proxy's error page)."""
        for attempt in range(retries + 1):
            try:
                return self.read(resource_type, fhir_id)[0]
            except FhirPageError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def binary_retrying(self, url: str, *, retries: int) -> dict[str, Any]:
        for attempt in range(retries + 1):
            try:
                return self.binary(url)[0]
            except FhirPageError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")


def _json_object(response: http.EhrResponse, what: str) -> dict[str, Any]:
    try:
        return response.json_object()
    except http.EhrTerminal:
        raise FhirPageError(f"{what}_not_json", body=response.content, status=200) from None
