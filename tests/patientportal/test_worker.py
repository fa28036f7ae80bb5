"""The real Celery worker round trip the integration tests rely on."""

from __future__ import annotations

import time
import uuid

import pytest
from django.core.cache import cache

from patientportal.core.tasks import ping

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_real_worker_process_runs_tasks_from_the_broker(celery_worker_process):
    nonce = uuid.uuid4().hex
    ping.delay(nonce)
    assert wait_for(lambda: cache.get(f"worker-ping:{nonce}") is not None)


def test_a_killed_worker_can_be_restarted(celery_worker_process):
    celery_worker_process.kill()
    nonce = uuid.uuid4().hex
    ping.delay(nonce)  # queued while no worker runs
    time.sleep(0.5)
    assert cache.get(f"worker-ping:{nonce}") is None
    celery_worker_process.start()
    assert wait_for(lambda: cache.get(f"worker-ping:{nonce}") is not None)
