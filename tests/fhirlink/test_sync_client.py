"""The FHIR client under the sync engine: retries with Retry-After, a bound, one token refresh
on 401, pages that are not FHIR, and the per-health-system concurrency limit."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import responses

from fhirlink import http
from fhirlink.fhir_client import (
    Cancelled,
    FairGate,
    FhirClient,
    FhirPageError,
    HealthSystemLimiter,
    RetryPolicy,
)

BASE = "https://fhir.example.test/r4/t1"
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": []}


def client(**kw: Any) -> FhirClient:
    return FhirClient(
        base_url=BASE, token="t0", retry=RetryPolicy(max_attempts=3, base_delay=0.01), **kw
    )


@responses.activate
def test_retries_429_honouring_retry_after_then_succeeds():
    url = f"{BASE}/Observation?patient=1"
    responses.get(url, status=429, headers={"Retry-After": "1"})
    responses.get(url, status=503)
    responses.get(url, json=BUNDLE)
    started = time.monotonic()
    page = client().page(url)
    assert page.bundle == BUNDLE
    assert time.monotonic() - started >= 1.0
    assert len(responses.calls) == 3


@responses.activate
def test_retries_are_bounded():
    url = f"{BASE}/Observation?patient=1"
    responses.get(url, status=500)
    with pytest.raises(http.EhrRetryable):
        client().page(url)
    assert len(responses.calls) == 3


@responses.activate
def test_401_refreshes_once_and_resumes():
    url = f"{BASE}/Condition?patient=1"
    responses.get(url, status=401)
    responses.get(url, json=BUNDLE)
    refreshed: list[str] = []

    def refresh() -> str:
        refreshed.append("x")
        return "t1"

    c = client(on_unauthorized=refresh)
    assert c.page(url).bundle == BUNDLE
    assert refreshed == ["x"]
    assert responses.calls[1].request.headers["Authorization"] == "Bearer t1"
    responses.get(url, status=401)
    responses.get(url, status=401)
    with pytest.raises(http.EhrTerminal):
        c.page(url)


@responses.activate
def test_non_fhir_pages_are_refused_with_their_body():
    url = f"{BASE}/Observation?patient=1"
    responses.get(url, body=b"<html>proxy</html>")
    with pytest.raises(FhirPageError) as not_json:
        client().page(url)
    assert not_json.value.code == "page_not_json"
    assert not_json.value.body == b"<html>proxy</html>"
    responses.get(url, json={"resourceType": "Bundle", "type": "other"})
    with pytest.raises(FhirPageError) as not_fhir:
        client().page(url)
    assert not_fhir.value.code == "page_not_fhir_searchset"


def test_health_system_limiter_is_shared_and_bounded():
    hs = f"hs-{uuid.uuid4().hex}"
    one = HealthSystemLimiter(hs, concurrency=2, rate_per_second=1000)
    two = HealthSystemLimiter(hs, concurrency=2, rate_per_second=1000)
    a = one.acquire()
    b = two.acquire()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(two.acquire()))
    waiter.start()
    time.sleep(0.3)
    assert got == []  # both slots taken (by two different "workers")
    one.release(a)
    waiter.join(timeout=5)
    assert got == [a]
    two.release(b)
    two.release(got[0])


def test_the_limiter_in_a_file_cache_counts_per_second_with_a_fixed_set_of_keys(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded setup's limiter: a file cache of its own, whose per-second counters are
    reused in turn (a file cache's incr would otherwise keep one past its turn)."""
    from django.core.cache.backends.filebased import FileBasedCache

    limiter = HealthSystemLimiter("hs-file", concurrency=2, rate_per_second=2)
    limiter.cache = FileBasedCache(str(tmp_path), {})
    limiter._incr_keeps_expiry = False
    clock = [1000.2]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert len(waits) < 5, "the limiter kept waiting"
        clock[0] += seconds

    monkeypatch.setattr(time, "time", lambda: clock[0])  # the cache's expiry reads it too
    monkeypatch.setattr(time, "sleep", sleep)
    for _ in range(3):
        limiter.release(limiter.acquire())
    assert len(waits) == 1
    assert int(clock[0]) == 1001  # the third waited for the next second
    for second in range(1002, 1040):
        clock[0] = second + 0.5
        limiter.release(limiter.acquire())
        limiter.release(limiter.acquire())
    assert len(waits) == 1  # every reused counter started afresh
    assert len(list(tmp_path.iterdir())) <= 8 + 2  # rate counters and slots, nothing more


class CountingCache:
    """The limiter's cache, recording the key of every call."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.cache, name)

        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            self.keys.append(key)
            return attr(key, *args, **kwargs)

        return call

    def slot_calls(self) -> int:
        return sum(":slot:" in key for key in self.keys)

    def rate_calls(self) -> int:
        return sum(":rate:" in key for key in self.keys)


def test_a_slot_released_while_a_thread_of_the_same_sync_waits_is_handed_on():
    """Handed on, a slot stays held in the shared cache (another sync still waits) and the next
    request takes it without asking the cache; closing gives back a slot nobody came for."""
    hs = f"hs-{uuid.uuid4().hex}"
    mine = HealthSystemLimiter(hs, concurrency=1, rate_per_second=1000, lease=30)
    other = HealthSystemLimiter(hs, concurrency=1, rate_per_second=1000)
    key = mine.acquire()
    mine.release(key, hand_on=True)
    with pytest.raises(Cancelled):
        other.acquire(cancelled=lambda: True)
    counting = CountingCache(mine.cache)
    mine.cache = counting  # type: ignore[assignment]
    for _ in range(5):
        assert mine.acquire() == key
        mine.release(key, hand_on=True)
    assert counting.slot_calls() == 0
    mine.close()
    taken = other.acquire()  # given back: free at once
    assert taken == key
    mine.release(key, hand_on=True)  # not its slot any more: nothing happens
    with pytest.raises(Cancelled):
        mine.acquire(cancelled=lambda: True)
    other.release(taken)


def test_a_slot_goes_back_to_the_cache_once_held_for_hold_seconds():
    """Other syncs of the health system get their turn, and the lease still covers the last
    request made in a handed-on slot."""
    hs = f"hs-{uuid.uuid4().hex}"
    assert HealthSystemLimiter(hs, concurrency=1, rate_per_second=1, lease=30).hold == 2.0
    mine = HealthSystemLimiter(hs, concurrency=1, rate_per_second=1000, hold=0.05)
    other = HealthSystemLimiter(hs, concurrency=1, rate_per_second=1000)
    key = mine.acquire()
    time.sleep(0.1)
    mine.release(key, hand_on=True)  # too old to hand on
    assert other.acquire() == key
    other.release(key)
    key = mine.acquire()
    mine.release(key, hand_on=True)  # kept, then nobody comes in time
    time.sleep(0.1)
    counting = CountingCache(mine.cache)
    mine.cache = counting  # type: ignore[assignment]
    assert mine.acquire() == key  # given back, and taken afresh from the cache
    assert counting.slot_calls() >= 3  # get and delete (given back), add (taken)
    mine.release(key)
    assert other.acquire() == key
    other.release(key)


def test_threads_of_one_sync_never_hold_one_slot_together_in_a_cache_without_atomic_add(
    tmp_path: Any,
) -> None:
    """The file cache's add is a look then a write: two threads of one sync could both take a
    slot, and each give it back (one of them while it was handed on)."""
    from django.core.cache.backends.filebased import FileBasedCache

    class SlowAdd(FileBasedCache):
        def add(self, key: str, value: Any, timeout: Any = None, version: Any = None) -> bool:
            if self.has_key(key, version):
                return False
            time.sleep(0.005)  # another thread looks now
            self.set(key, value, timeout, version)
            return True

    limiter = HealthSystemLimiter(f"hs-{uuid.uuid4().hex}", concurrency=2, rate_per_second=1000)
    limiter.cache = SlowAdd(str(tmp_path), {})
    limiter._incr_keeps_expiry = False
    lock = threading.Lock()
    held: set[str] = set()
    clashes: list[str] = []

    def work(n: int) -> None:
        for i in range(15):
            key = limiter.acquire()
            with lock:
                if key in held:
                    clashes.append(key)
                held.add(key)
            time.sleep(0.002)
            with lock:
                held.discard(key)
            limiter.release(key, hand_on=(n + i) % 2 == 0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert clashes == []
    limiter.close()
    assert limiter._taken == {}


@pytest.mark.parametrize("backend", ["default", "file"])
def test_rate_tokens_are_reserved_in_batches_and_the_rate_holds_across_syncs(
    backend: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache.backends.filebased import FileBasedCache

    hs = f"hs-{uuid.uuid4().hex}"
    one = HealthSystemLimiter(hs, concurrency=4, rate_per_second=40)
    two = HealthSystemLimiter(hs, concurrency=4, rate_per_second=40)
    assert one.batch == 4
    if backend == "file":
        shared = FileBasedCache(str(tmp_path), {})
        for limiter in (one, two):
            limiter.cache = shared
            limiter._incr_keeps_expiry = False
    counting = CountingCache(one.cache)
    one.cache = counting  # type: ignore[assignment]
    clock = [int(time.time()) + 0.5]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "time", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    one._rate_wait()  # reserves 4: 3 left for this second
    calls = counting.rate_calls()
    for _ in range(3):
        one._rate_wait()
    assert counting.rate_calls() == calls  # served from the batch
    for _ in range(36):
        two._rate_wait()
    assert waits == []
    two._rate_wait()  # the 41st request of this second waits for the next
    assert len(waits) == 1
    assert int(clock[0]) == int(clock[0] - waits[0]) + 1


@responses.activate
def test_the_gate_bounds_requests_in_flight_with_more_threads_than_slots():
    """The engine runs more fetch threads than requests in flight; the client's gate keeps the
    requests at its size (and a thread waiting at the gate stops when the run is cancelled)."""
    url = f"{BASE}/Observation?patient=1"
    lock = threading.Lock()
    in_flight, peak = [0], [0]

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(BUNDLE)

    responses.add_callback(responses.GET, url, callback=slow)
    hs = f"hs-{uuid.uuid4().hex}"
    limiter = HealthSystemLimiter(hs, concurrency=2, rate_per_second=1000, lease=30)
    counting = CountingCache(limiter.cache)
    limiter.cache = counting  # type: ignore[assignment]
    c = client(gate=FairGate(2), limiter=limiter)
    threads = [threading.Thread(target=lambda: [c.page(url) for _ in range(4)]) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(responses.calls) == 24
    assert peak[0] == 2
    # Slots went from one request to the next, mostly without the cache (each taken from it
    # costs an add, and a get and a delete when given back).
    assert counting.slot_calls() < 24
    c.close()
    other = HealthSystemLimiter(hs, concurrency=2, rate_per_second=1000)
    assert {other.acquire(), other.acquire()} == {f"fhirlink:hs:{hs}:slot:{n}" for n in (0, 1)}

    stop = threading.Event()
    blocked = client(gate=FairGate(1), cancelled=stop.is_set)
    assert blocked.gate is not None
    blocked.gate.acquire()  # every slot busy
    stop.set()
    with pytest.raises(Cancelled):
        blocked.page(url)


def test_the_fair_gate_serves_its_waiters_in_turn():
    """A thread that releases and asks again at once queues behind the threads already waiting
    (a plain semaphore let it take the permit back, starving the others)."""
    gate = FairGate(1)
    gate.acquire()
    order: list[object] = []

    def wait_in_turn(n: int) -> None:
        gate.acquire()
        order.append(n)
        gate.release()

    threads = []
    for n in range(3):
        threads.append(threading.Thread(target=wait_in_turn, args=(n,)))
        threads[-1].start()
        time.sleep(0.05)  # in line in this order
    gate.release()
    gate.acquire()
    order.append("again")
    gate.release()
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, "again"]


def test_a_cancelled_waiter_leaves_the_fair_gates_line():
    gate = FairGate(1)
    gate.acquire()
    stop = threading.Event()
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            gate.acquire(stop.is_set, poll=0.01)
        except Cancelled as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    stop.set()
    waiter.join(timeout=5)
    assert len(failed) == 1
    gate.release()  # back to one free permit: nobody is left in line to take it
    done = threading.Event()

    def take() -> None:
        gate.acquire()
        done.set()

    threading.Thread(target=take).start()
    assert done.wait(timeout=2)
