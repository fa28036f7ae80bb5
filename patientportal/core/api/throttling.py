"""Per-user throttling. Keyed by the user's id, never by a token or an e-mail address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import throttling

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


class UserRateThrottle(throttling.UserRateThrottle):
    scope = "user"


class AnonRateThrottle(throttling.AnonRateThrottle):
    scope = "anon"


class SyncRequestThrottle(throttling.UserRateThrottle):
    """On-demand sync requests (e.g. once per 5 minutes per user)."""

    scope = "sync_request"

    def parse_rate(self, rate: str | None) -> tuple[int | None, int | None]:
        """Accept DRF's "N/period" plus a multiplier: "1/5min", "3/10s"."""
        if rate is None:
            return (None, None)
        num, period = rate.split("/")
        digits = "".join(ch for ch in period if ch.isdigit())
        unit = period[len(digits) :][:1]
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return int(num), seconds * int(digits or 1)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
