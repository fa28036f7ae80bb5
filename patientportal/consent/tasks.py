"""Consent jobs (thin wrappers)."""

from __future__ import annotations

from celery import shared_task

from .services import consent_apply_reconsent


@shared_task(name="consent.apply_reconsent", ignore_result=True, acks_late=True)
def apply_reconsent() -> int:
    """Move grants older than an effective re-consent version to "consent needed" (idempotent)."""
    return consent_apply_reconsent()
