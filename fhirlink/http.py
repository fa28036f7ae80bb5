"""The one outbound HTTP client for everything that talks to an EHR (discovery, OAuth, FHIR).

* Explicit connect/read timeouts on every call, no automatic redirects (a 3xx is an error).
* Only https, except loopback hosts while the sandbox is enabled (dev, demo, tests).
* Errors split into `EhrRetryable` (network, 429, 5xx: may succeed later) and `EhrTerminal`
  (every other non-2xx: will not). Neither ever carries a request or response body; a terminal
  OAuth error keeps only the server's `error` code (e.g. ``invalid_grant``).
* Nothing is logged but method, host, path and status.

Nothing else in the code base calls `requests` directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

USER_AGENT = "PatientPortal-fhirlink/1.0"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class EhrHttpError(Exception):
    """Base of outbound errors. `str()` is safe to log: no bodies, no query strings."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        oauth_error: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.oauth_error = oauth_error
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, oauth_error={self.oauth_error!r})"


class EhrRetryable(EhrHttpError):
    """Network failure, timeout, 429 or 5xx: try again later."""

    retryable = True


class EhrTerminal(EhrHttpError):
    """Any other failure (4xx, a redirect, an unusable body): retrying will not help."""


def _safe_target(url: str) -> str:
    # Host and the last path segment only: paths carry tenant ids, queries may carry secrets.
    parts = urlsplit(url)
    return f"{parts.hostname} …/{parts.path.rstrip('/').rsplit('/', 1)[-1]}"


def check_url(url: str) -> None:
    """Refuses URLs we must never call: non-https (bar the sandbox on loopback), credentials."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise EhrTerminal("URL must not carry credentials")
    if parts.scheme == "https":
        return
    if (
        parts.scheme == "http"
        and parts.hostname in _LOOPBACK
        and getattr(settings, "SANDBOX_ENABLED", False)
    ):
        return
    raise EhrTerminal(f"refusing non-https URL for {parts.hostname}")


@dataclass
class EhrResponse:
    status: int
    headers: dict[str, str]
    content: bytes = field(repr=False)  # a token response or PHI: never in a repr
    url: str
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            try:
                self._json = json.loads(self.content)
            except ValueError:
                raise EhrTerminal("response is not JSON", status=self.status) from None
        return self._json

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise EhrTerminal("response is not a JSON object", status=self.status)
        return data


def _timeouts() -> tuple[float, float]:
    return (
        float(getattr(settings, "FHIRLINK_HTTP_CONNECT_TIMEOUT", 5.0)),
        float(getattr(settings, "FHIRLINK_HTTP_READ_TIMEOUT", 20.0)),
    )


def _retry_after(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None


def _oauth_error(content: bytes) -> str | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        # Only the registered error code (a short token), never the description or error_uri.
        code = data["error"]
        return code if code.replace("_", "").isalnum() and len(code) <= 64 else "invalid_response"
    return None


_session = requests.Session()
_session.trust_env = False  # no proxies or .netrc credentials picked up from the environment


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: dict[str, str] | str | None = None,
    params: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    accept: str = "application/json",
) -> EhrResponse:
    """One outbound call. Returns 2xx responses; raises `EhrRetryable` or `EhrTerminal`."""
    check_url(url)
    send_headers = {"Accept": accept, "User-Agent": USER_AGENT}
    send_headers.update(headers or {})
    target = _safe_target(url)
    try:
        response = _session.request(
            method,
            url,
            headers=send_headers,
            data=data,
            params=params,
            auth=auth,
            timeout=_timeouts(),
            allow_redirects=False,
        )
    except (requests.Timeout, requests.ConnectionError) as exc:
        logger.warning("EHR %s %s failed: %s", method, target, type(exc).__name__)
        raise EhrRetryable(f"network error calling {target}") from None
    except requests.RequestException as exc:
        logger.warning("EHR %s %s failed: %s", method, target, type(exc).__name__)
        raise EhrTerminal(f"request to {target} failed") from None
    status = response.status_code
    logger.log(
        logging.DEBUG if status < 400 else logging.INFO, "EHR %s %s -> %s", method, target, status
    )
    if 200 <= status < 300:
        return EhrResponse(
            status=status,
            headers=dict(response.headers),
            content=response.content,
            url=url,
        )
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if status == 429 or status >= 500:
        raise EhrRetryable(
            f"{target} answered {status}",
            status=status,
            oauth_error=_oauth_error(response.content),
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        raise EhrTerminal(f"{target} answered a redirect ({status})", status=status)
    raise EhrTerminal(
        f"{target} answered {status}",
        status=status,
        oauth_error=_oauth_error(response.content),
    )


def get_json(url: str, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return request("GET", url, headers=headers).json_object()


def post_form(
    url: str,
    *,
    data: dict[str, str] | str,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> EhrResponse:
    send = {"Content-Type": "application/x-www-form-urlencoded"}
    send.update(headers or {})
    return request("POST", url, data=data, auth=auth, headers=send)
