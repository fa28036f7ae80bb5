"""The Django project and the patient side (accounts, consent, access log, API conventions)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
