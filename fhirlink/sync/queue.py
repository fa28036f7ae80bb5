"""What a sync step asks to run next: a task name, its JSON arguments, a countdown."""

from __future__ import annotations

from typing import Any, NamedTuple

SYNC_CONNECTION = "fhirlink.sync_connection"
STREAM_STEP = "fhirlink.sync_stream_step"
EXTRA_STEP = "fhirlink.sync_extra_step"
RUN_FINISH = "fhirlink.sync_run_finish"

# A step that found every slot of its health system held asks again after this long.
SLOT_WAIT_SECONDS = 0.05


class Message(NamedTuple):
    task: str
    args: list[Any]
    countdown: float = 0.0


def stream_step(stream_id: int, pages: int, attempt: int = 0, bad: int = 0) -> Message:
    return Message(STREAM_STEP, [stream_id, pages, attempt, bad])


def run_finish(run_id: Any, fatal: str = "") -> Message:
    return Message(RUN_FINISH, [str(run_id), fatal])
