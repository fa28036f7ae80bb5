"""Politeness per health system, shared by every worker process: at most `concurrency`
requests in flight and `rate_per_second` requests a second.

* The rate: the `limits` library's moving window, in the storage its URL names
  (`FHIRLINK_SYNC_LIMITER_URL`: `redis://...` in production, `memory://` in the embedded
  default, where it holds per worker process).
* The concurrency: a semaphore of leased slots. `limits` counts requests, not requests in
  flight, and the Redis lock libraries (python-redis-lock, redis-py's `Lock`) are mutexes; a
  counting semaphore with a lease is one sorted set (member: the holder's token, score: when its
  lease ends) changed by one Lua script (atomic on the server: drop expired holders, count,
  add), so a killed worker's slot frees itself when its lease ends. In memory: the same with a
  dict under a lock. Both are behind one interface and tested alike.

`try_acquire` never waits (None: no slot now). The sync's step asks again every 20 ms for
up to 2 s (a slot frees when another worker's request ends), then re-enqueues itself with a
short countdown (`fhirlink.sync.context.slot_take`), so a busy health system holds a worker
process for a bounded time only.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import redis
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

PREFIX = "fhirlink:hs"


@dataclass(frozen=True)
class Slot:
    key: str
    token: str


class _Slots(Protocol):
    def take(self, key: str, token: str, *, limit: int, lease: float) -> bool: ...

    def give_back(self, key: str, token: str) -> None: ...


# KEYS[1]: the semaphore's sorted set. ARGV: token, limit, lease (seconds). The server's clock
# dates the leases, so the hosts' clocks need not agree.
_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
  return 1
end
return 0
"""


class _RedisSlots:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.script = self.client.register_script(_TAKE)

    def take(self, key: str, token: str, *, limit: int, lease: float) -> bool:
        return bool(self.script(keys=[key], args=[token, limit, lease]))

    def give_back(self, key: str, token: str) -> None:
        self.client.zrem(key, token)


class _MemorySlots:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, dict[str, float]] = {}

    def take(self, key: str, token: str, *, limit: int, lease: float) -> bool:
        now = time.monotonic()
        with self.lock:
            holders = {t: end for t, end in self.held.get(key, {}).items() if end > now}
            self.held[key] = holders
            if len(holders) >= limit:
                return False
            holders[token] = now + lease
            return True

    def give_back(self, key: str, token: str) -> None:
        with self.lock:
            self.held.get(key, {}).pop(token, None)


@cache
def _backends(url: str) -> tuple[_Slots, MovingWindowRateLimiter]:
    slots: _Slots = (
        _RedisSlots(url) if url.startswith(("redis://", "rediss://")) else _MemorySlots()
    )
    return slots, MovingWindowRateLimiter(storage_from_string(url))


class HealthSystemLimiter:
    def __init__(self, *, url: str, concurrency: int, rate_per_second: int, lease: float) -> None:
        self.slots, self.rate_limiter = _backends(url)
        self.concurrency = max(1, concurrency)
        self.rate = RateLimitItemPerSecond(max(1, rate_per_second))
        self.lease = lease

    def try_acquire(self, health_system_id: str) -> Slot | None:
        """A slot for one request now, or None (all slots held, or the second's rate spent)."""
        slot = Slot(f"{PREFIX}:{health_system_id}:slots", uuid.uuid4().hex)
        if not self.slots.take(slot.key, slot.token, limit=self.concurrency, lease=self.lease):
            return None
        if not self.rate_limiter.hit(self.rate, PREFIX, health_system_id):
            self.release(slot)
            return None
        return slot

    def release(self, slot: Slot) -> None:
        self.slots.give_back(slot.key, slot.token)
