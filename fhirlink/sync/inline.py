"""A run driven in this process, without a broker: each message is run here, in order, a
countdown waited for on the clock. What the tests of the engine and the benchmark's reference
loop use; production sends the same messages to Celery (`tasks.py`)."""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

from fhirlink.models import SyncRun, SyncTrigger
from fhirlink.sync import queue
from fhirlink.sync.dispatch import message_run


def sync_connection_run(*, connection_id: Any, trigger: str = SyncTrigger.CONNECT) -> str:
    """Start (or take over) the connection's run and run every step to its end; the run's
    status, or the code saying why no run started."""
    started = message_run(queue.Message(queue.SYNC_CONNECTION, [str(connection_id), trigger]))
    if isinstance(started, str):
        return started
    order = itertools.count()
    due: list[tuple[float, int, queue.Message]] = []
    for message in started:
        heapq.heappush(due, (time.monotonic() + message.countdown, next(order), message))
    while due:
        at, _, message = heapq.heappop(due)
        wait = at - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # a retry's backoff or a slot's wait, as the broker would
        result = message_run(message)
        for follow in result if isinstance(result, list) else []:
            heapq.heappush(due, (time.monotonic() + follow.countdown, next(order), follow))
    run = SyncRun.objects.filter(connection_id=connection_id).order_by("-created_at").first()
    return str(run.status) if run is not None else "gone"
