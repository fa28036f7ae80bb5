"""Request helpers shared by the apps."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client address as the trusted front end saw it.

    Behind TRUSTED_PROXY_COUNT reverse proxies (production: the TLS front end, which overwrites
    X-Forwarded-For), the client is that many hops from the right of X-Forwarded-For; with no
    proxy (dev), REMOTE_ADDR. django-axes lockouts, sign-up rate limits and the access log all
    use this one rule.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR") or None
