"""Shared fixtures. Domain fixtures live in tests/fixtures/ and are registered here."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.api",
    "tests.fixtures.celery_worker",
    "tests.fixtures.sandbox",
    "tests.fixtures.browser",
]


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Throttle counters and cached discovery documents never leak between tests."""
    from django.core.cache import cache

    cache.clear()


def pytest_report_header() -> list[str]:
    from django.conf import settings

    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    return [f"database: {db}; broker: {broker}; CI={os.environ.get('CI', '')}"]
