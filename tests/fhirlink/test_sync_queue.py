"""The order of a sync's messages on the broker: a summary stream's steps go first (issue #21
item 4), everything else after them; the Celery tasks send the message's priority."""

from __future__ import annotations

from typing import Any

import pytest

from fhirlink.sync import queue, tasks


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
