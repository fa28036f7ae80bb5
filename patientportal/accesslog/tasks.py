"""Access-log jobs (thin wrappers)."""

from __future__ import annotations

from celery import shared_task

from .services import access_log_purge


@shared_task(name="accesslog.purge", ignore_result=True, acks_late=True)
def purge() -> int:
    """Daily: drop rows past ACCESS_LOG_RETENTION_DAYS and anchor the chain (idempotent)."""
    return access_log_purge().rows_purged
