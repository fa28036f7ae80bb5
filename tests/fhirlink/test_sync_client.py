"""The FHIR client under the sync (one request, a 401 refreshes once, pages that are not FHIR,
the bounds), the retry delay, and the per-health-system limiter on Redis and in memory."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import responses
from django.conf import settings
from limits import RateLimitItemPerSecond

from fhirlink import http
from fhirlink.ehr import limiter as limiter_module
from fhirlink.ehr.fhir import FhirClient, FhirPageError, LimitExceeded, retry_delay
from fhirlink.ehr.limiter import HealthSystemLimiter

BASE = "https://fhir.example.test/r4/t1"
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": []}


def client(**kw: Any) -> FhirClient:
    return FhirClient(base_url=BASE, token="t0", **kw)


@responses.activate
def test_a_retryable_failure_is_raised_with_its_retry_after_not_waited_for():
    url = f"{BASE}/Observation?patient=1"
    responses.get(url, status=429, headers={"Retry-After": "7"})
    with pytest.raises(http.EhrRetryable) as exc:
        client().page(url)
    assert (exc.value.status, exc.value.retry_after) == (429, 7)
    assert len(responses.calls) == 1


def test_the_retry_delay_honours_retry_after_and_backs_off_with_jitter_within_its_cap():
    assert retry_delay(0, 7, base=0.5, cap=30) == 7.0
    assert retry_delay(0, 90, base=0.5, cap=30) == 30.0
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        delays = {retry_delay(attempt, None, base=0.5, cap=30) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


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
    assert c.page(url).resources == []
    assert refreshed == ["x"]
    assert responses.calls[1].request.headers["Authorization"] == "Bearer t1"
    assert c.requests_made == 2
    responses.get(url, status=401)
    responses.get(url, status=401)
    with pytest.raises(http.EhrTerminal):
        c.page(url)
    assert refreshed == ["x", "x"]


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


@responses.activate
def test_a_page_over_the_bound_is_refused_and_search_warnings_are_not_resources():
    url = f"{BASE}/Observation?patient=1"
    page = {
        **BUNDLE,
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "a"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
        ],
        "link": [{"relation": "next", "url": f"{url}&page=2"}],
    }
    responses.get(url, json=page)
    got = client().page(url)
    assert [r["id"] for r in got.resources] == ["a"]
    assert got.next_url == f"{url}&page=2"
    with pytest.raises(LimitExceeded) as exc:
        client(max_page_bytes=10).page(url)
    assert exc.value.code == "page_too_large"


def test_the_token_is_never_in_the_clients_repr():
    assert "t0" not in repr(client())


@pytest.fixture(params=["redis", "memory"])
def limiter_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if not settings.REDIS_URL:
        pytest.skip("no Redis")
    return str(settings.REDIS_URL)


def test_the_limiter_bounds_requests_in_flight_across_limiters_and_frees_slots(limiter_url):
    hs = f"hs-{uuid.uuid4().hex}"
    one = HealthSystemLimiter(url=limiter_url, concurrency=2, rate_per_second=1000, lease=30)
    two = HealthSystemLimiter(url=limiter_url, concurrency=2, rate_per_second=1000, lease=30)
    a, b = one.try_acquire(hs), two.try_acquire(hs)
    assert a is not None
    assert b is not None
    assert one.try_acquire(hs) is None  # both slots held (by two "workers")
    assert two.try_acquire("another-health-system") is not None  # a limit per health system
    one.release(a)
    c = two.try_acquire(hs)
    assert c is not None
    assert one.try_acquire(hs) is None
    two.release(b)
    two.release(c)
    assert one.try_acquire(hs) is not None


def test_a_slot_whose_holder_died_frees_itself_when_its_lease_ends(limiter_url, monkeypatch):
    hs = f"hs-{uuid.uuid4().hex}"
    if limiter_url == "memory://":
        clock = [1000.0]
        monkeypatch.setattr(limiter_module.time, "monotonic", lambda: clock[0])
    limiter = HealthSystemLimiter(url=limiter_url, concurrency=1, rate_per_second=1000, lease=30)
    assert limiter.try_acquire(hs) is not None  # never released: its worker was killed
    assert limiter.try_acquire(hs) is None
    if limiter_url == "memory://":
        clock[0] += 31
    else:
        # Redis dates the leases by its own clock: move the lease's end into the past.
        slots = limiter.slots
        assert isinstance(slots, limiter_module._RedisSlots)
        key = f"{limiter_module.PREFIX}:{hs}:slots"
        held: Any = slots.client.zrange(key, 0, -1, withscores=True)
        assert len(held) == 1
        slots.client.zadd(key, {held[0][0]: 1})
    assert limiter.try_acquire(hs) is not None


def test_the_rate_is_counted_per_second_across_limiters(limiter_url, monkeypatch):
    """The rate comes from `limits` (moving window); a request refused by it gives its slot
    back at once."""
    hs = f"hs-{uuid.uuid4().hex}"
    one = HealthSystemLimiter(url=limiter_url, concurrency=10, rate_per_second=3, lease=30)
    two = HealthSystemLimiter(url=limiter_url, concurrency=10, rate_per_second=3, lease=30)
    granted = [s for s in (one.try_acquire(hs), two.try_acquire(hs), one.try_acquire(hs)) if s]
    assert len(granted) == 3
    assert two.try_acquire(hs) is None  # the second's three requests are spent
    for slot in granted:
        one.release(slot)
    assert one.try_acquire(hs) is None  # released slots do not give the rate back
    # Its slot went back when the rate refused it: the semaphore holds nothing.
    item = RateLimitItemPerSecond(3)
    window = one.rate_limiter.get_window_stats(item, limiter_module.PREFIX, hs)
    assert window.remaining == 0
    assert one.slots.take(f"{limiter_module.PREFIX}:{hs}:slots", "probe", limit=1, lease=5)
