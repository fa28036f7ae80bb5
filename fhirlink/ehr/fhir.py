"""FHIR search, read and Binary for the sync, one request at a time, on `fhirlink.http`.

* Paging only through the server's `next` links (never a built URL).
* No waiting here: a retryable failure (network, timeout, 429, 5xx) propagates as
  `http.EhrRetryable` and the sync's step is re-enqueued after `retry_delay` (Retry-After
  wins), so no worker process sleeps.
* A 401 calls `on_unauthorized` (refresh the token) once and asks again with the new token; a
  second 401 is terminal.
* Bounds: a page over `max_page_bytes`, a Binary over `max_binary_bytes` (`LimitExceeded`).
* A 200 that is not JSON or not FHIR raises `FhirPageError` with its body (quarantined).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fhirlink import fhirjson, http

FHIR_JSON = "application/fhir+json"


class FhirPageError(Exception):
    """A 200 page that is not JSON or not a FHIR searchset. `code` is a stable error code."""

    def __init__(self, code: str, *, body: bytes = b"", status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.body = body
        self.status = status

    def __repr__(self) -> str:
        return f"FhirPageError({self.code!r})"


class LimitExceeded(Exception):
    """A configured bound was hit (`code`: page_too_large, binary_too_large, too_many_pages)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def retry_delay(attempt: int, retry_after: int | None, *, base: float, cap: float) -> float:
    """Seconds before try `attempt + 1`: the server's Retry-After (at most `cap`), else
    exponential backoff with full jitter."""
    if retry_after is not None:
        return float(min(retry_after, cap))
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not crypto)


def page_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """A searchset page's resources, without OperationOutcomes (search warnings)."""
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") != "OperationOutcome"
        and (e.get("search") or {}).get("mode", "match") != "outcome"
    ]


@dataclass
class Page:
    url: str
    resources: list[dict[str, Any]]
    next_url: str
    size: int
    server_date: str = ""


@dataclass
class FhirClient:
    base_url: str
    token: str = field(repr=False)  # a bearer token: never in a repr, a log or an error report
    on_unauthorized: Callable[[], str] | None = None
    max_page_bytes: int = 20 * 1024 * 1024
    max_binary_bytes: int = 10 * 1024 * 1024
    requests_made: int = field(default=0)

    def _send(self, url: str) -> http.EhrResponse:
        refreshed = False
        while True:
            self.requests_made += 1
            try:
                return http.request(
                    "GET", url, headers={"Authorization": f"Bearer {self.token}"}, accept=FHIR_JSON
                )
            except http.EhrTerminal as exc:
                if exc.status != 401 or refreshed or self.on_unauthorized is None:
                    raise
                refreshed = True
                self.token = self.on_unauthorized()

    def search_url(self, resource_type: str, params: dict[str, Any]) -> str:
        return f"{self.base_url.rstrip('/')}/{resource_type}?{urlencode(params, doseq=True)}"

    def page(self, url: str) -> Page:
        """One search page. Raises FhirPageError for a body that is not a FHIR searchset."""
        response = self._send(url)
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
            resources=page_resources(bundle),
            next_url=next_url,
            size=size,
            server_date=response.headers.get("Date", ""),
        )

    def read(self, resource_type: str, fhir_id: str) -> tuple[dict[str, Any], int]:
        url = f"{self.base_url.rstrip('/')}/{resource_type}/{fhir_id}"
        response = self._send(url)
        if len(response.content) > self.max_page_bytes:
            raise LimitExceeded("page_too_large")
        data = _json_object(response, "read")
        if data.get("resourceType") != resource_type or not data.get("id"):
            raise FhirPageError("read_not_fhir", body=response.content, status=200)
        return data, len(response.content)

    def binary(self, url: str) -> tuple[dict[str, Any], int]:
        """A Binary as FHIR JSON (base64 `data`), by the exact URL the DocumentReference gave."""
        response = self._send(url)
        size = len(response.content)
        # base64 inflates by 4/3: bound the encoded body accordingly.
        if size > self.max_binary_bytes * 4 // 3 + 4096:
            raise LimitExceeded("binary_too_large")
        data = _json_object(response, "binary")
        if data.get("resourceType") != "Binary" or not data.get("id"):
            raise FhirPageError("binary_not_fhir", body=b"", status=200)
        return data, size


def _json_object(response: http.EhrResponse, what: str) -> dict[str, Any]:
    try:
        return response.json_object()
    except http.EhrTerminal:
        raise FhirPageError(f"{what}_not_json", body=response.content, status=200) from None
