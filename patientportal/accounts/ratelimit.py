"""Small fixed-window counters in the cache, for the sign-in pages axes does not cover.

Keys are hashed so that no e-mail address or IP address is written into the cache in clear.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache
from django.http import HttpRequest

from patientportal.core.http import client_ip as core_client_ip


def _key(bucket: str, identity: str) -> str:
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    return f"accounts-rl:{bucket}:{digest}"


def hit(*, bucket: str, identity: str, limit: int, window_seconds: int) -> bool:
    """Counts one hit; returns True while the caller is within `limit` hits per window."""
    key = _key(bucket, identity)
    # add() is atomic: only the first hit of a window creates the counter (with its expiry).
    if cache.add(key, 1, timeout=window_seconds):
        return True
    try:
        count = cache.incr(key)
    except ValueError:  # the counter expired between add() and incr()
        cache.add(key, 1, timeout=window_seconds)
        return True
    return count <= limit


def client_ip(request: HttpRequest) -> str:
    """The client address the way django-axes sees it (one rule: patientportal.core.http)."""
    return core_client_ip(request) or ""
