"""The order of a sync's messages on the broker: a summary stream's steps go first (issue #21
item 4), everything else after them; the Celery tasks send the message's priority. A step
that finds no slot of its health system's limits waits for one, briefly."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from fhirlink.sync import context, queue, tasks


@pytest.mark.parametrize(
    ("key", "priority"),
    [
        ("Condition", queue.FIRST),
        ("MedicationRequest", queue.FIRST),
        ("AllergyIntolerance", queue.FIRST),
        ("Observation", queue.FIRST),  # the probe page: the newest results and vitals
        ("Observation:w03", queue.LATER),  # a date window of the history
        ("Encounter", queue.LATER),
        ("", queue.LATER),
    ],
)
def test_stream_step_priority(key: str, priority: int) -> None:
    message = queue.stream_step(7, 2, 1, 0, key=key)
    assert message == queue.Message(queue.STREAM_STEP, [7, 2, 1, 0], 0.0, priority)
    # A retry keeps its stream's place.
    assert message._replace(countdown=0.5).priority == priority


def test_other_messages_go_after_the_summary() -> None:
    assert queue.run_finish("r1").priority == queue.LATER
    assert queue.FIRST < queue.LATER  # kombu's Redis transport takes the lower number first


def test_messages_send_passes_countdown_and_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    for name, task in tasks.TASKS.items():
        monkeypatch.setattr(
            task, "apply_async", lambda name=name, **kwargs: sent.append((name, kwargs))
        )
    tasks.messages_send(
        [
            queue.stream_step(1, 0, key="Condition"),
            queue.stream_step(2, 3, key="Encounter")._replace(countdown=0.05),
            queue.run_finish("r1"),
        ]
    )
    assert sent == [
        (queue.STREAM_STEP, {"args": [1, 0, 0, 0], "countdown": None, "priority": queue.FIRST}),
        (queue.STREAM_STEP, {"args": [2, 3, 0, 0], "countdown": 0.05, "priority": queue.LATER}),
        (queue.RUN_FINISH, {"args": ["r1", ""], "countdown": None, "priority": queue.LATER}),
    ]


def test_a_step_waits_briefly_for_a_slot_then_gives_up(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """No slot free: the step asks again every SLOT_POLL_SECONDS (a slot frees when another
    worker's request ends) and takes it then; none for SLOT_WAIT_SECONDS_MAX: None (the step
    re-enqueues itself). A clock, not time passing."""
    settings.FHIRLINK_SYNC_LIMITER_URL = "memory://"
    settings.FHIRLINK_SYNC_CONCURRENCY = 1
    run: Any = SimpleNamespace(connection=SimpleNamespace(health_system_id=uuid.uuid4()))
    held = context.slot_take(run)
    assert held is not None
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds
        if len(sleeps) == 3:
            context.slot_release(held)  # the other worker's request ended

    monkeypatch.setattr(context.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(context.time, "sleep", sleep)
    second = context.slot_take(run)
    assert second is not None
    assert sleeps == [context.SLOT_POLL_SECONDS] * 3
    sleeps.clear()
    start = clock[0]
    assert context.slot_take(run) is None  # `second` is never released
    assert clock[0] - start == pytest.approx(context.SLOT_WAIT_SECONDS_MAX, abs=0.021)
    context.slot_release(second)
