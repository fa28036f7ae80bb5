"""fhirlink's settings for the sync, read in one place with their types.

Every value is defined (with its default and an explanation) in
`patientportal/settings/base.py`; this module only reads them, so a default is never repeated
(and never drifts) in the code that uses it. `sync_settings()` is cached, and the cache is
cleared when a test changes a setting (`setting_changed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class SyncSettings:
    concurrency: int  # requests in flight per health system, across every worker
    rate_per_second: int  # requests per second per health system, across every worker
    limiter_url: str  # where the two limits above are kept: redis://... or memory://
    max_attempts_per_request: int  # 429/5xx/timeouts: tries of one request
    backoff_base: float
    backoff_max: float
    page_retries: int  # a page that is not JSON/FHIR is quarantined and asked for again
    page_size: int
    max_pages: int  # per stream
    max_page_bytes: int
    max_binary_bytes: int
    binary_content_types: tuple[str, ...]
    max_references: int
    window_pages: int
    max_windows: int
    window_years: int
    watermark_overlap_seconds: int
    reconcile_days: float
    lease_seconds: int
    max_attempts: int  # takeovers of a run whose worker died
    quarantine_bytes: int
    interval_minutes: int
    spread_seconds: int
    schedule_batch: int
    soft_time_limit: int  # one step task
    time_limit: int
    http_connect_timeout: float
    http_read_timeout: float


def _get(name: str) -> Any:
    return getattr(settings, name)


@cache
def sync_settings() -> SyncSettings:
    return SyncSettings(
        concurrency=max(1, int(_get("FHIRLINK_SYNC_CONCURRENCY"))),
        rate_per_second=max(1, int(_get("FHIRLINK_SYNC_RATE_PER_SECOND"))),
        limiter_url=str(_get("FHIRLINK_SYNC_LIMITER_URL")),
        max_attempts_per_request=max(1, int(_get("FHIRLINK_SYNC_MAX_ATTEMPTS_PER_REQUEST"))),
        backoff_base=float(_get("FHIRLINK_SYNC_BACKOFF_BASE")),
        backoff_max=float(_get("FHIRLINK_SYNC_BACKOFF_MAX")),
        page_retries=int(_get("FHIRLINK_SYNC_PAGE_RETRIES")),
        page_size=int(_get("FHIRLINK_SYNC_PAGE_SIZE")),
        max_pages=int(_get("FHIRLINK_SYNC_MAX_PAGES")),
        max_page_bytes=int(_get("FHIRLINK_SYNC_MAX_PAGE_BYTES")),
        max_binary_bytes=int(_get("FHIRLINK_SYNC_MAX_BINARY_BYTES")),
        binary_content_types=tuple(_get("FHIRLINK_SYNC_BINARY_CONTENT_TYPES")),
        max_references=int(_get("FHIRLINK_SYNC_MAX_REFERENCES")),
        window_pages=int(_get("FHIRLINK_SYNC_WINDOW_PAGES")),
        max_windows=int(_get("FHIRLINK_SYNC_MAX_WINDOWS")),
        window_years=int(_get("FHIRLINK_SYNC_WINDOW_YEARS")),
        watermark_overlap_seconds=int(_get("FHIRLINK_SYNC_WATERMARK_OVERLAP_SECONDS")),
        reconcile_days=float(_get("FHIRLINK_SYNC_RECONCILE_DAYS")),
        lease_seconds=int(_get("FHIRLINK_SYNC_LEASE_SECONDS")),
        max_attempts=int(_get("FHIRLINK_SYNC_MAX_ATTEMPTS")),
        quarantine_bytes=int(_get("FHIRLINK_SYNC_QUARANTINE_BYTES")),
        interval_minutes=int(_get("FHIRLINK_SYNC_INTERVAL_MINUTES")),
        spread_seconds=int(_get("FHIRLINK_SYNC_SPREAD_SECONDS")),
        schedule_batch=int(_get("FHIRLINK_SYNC_SCHEDULE_BATCH")),
        soft_time_limit=int(_get("FHIRLINK_SYNC_STEP_SOFT_TIME_LIMIT")),
        time_limit=int(_get("FHIRLINK_SYNC_STEP_TIME_LIMIT")),
        http_connect_timeout=float(_get("FHIRLINK_HTTP_CONNECT_TIMEOUT")),
        http_read_timeout=float(_get("FHIRLINK_HTTP_READ_TIMEOUT")),
    )


@receiver(setting_changed)
def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting.startswith("FHIRLINK_"):
        sync_settings.cache_clear()
