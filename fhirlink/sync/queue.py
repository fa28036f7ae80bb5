"""What a sync step asks to run next: a task name, its JSON arguments, a countdown, a priority."""

from __future__ import annotations

from typing import Any, NamedTuple

SYNC_CONNECTION = "fhirlink.sync_connection"
STREAM_STEP = "fhirlink.sync_stream_step"
EXTRA_STEP = "fhirlink.sync_extra_step"
RUN_FINISH = "fhirlink.sync_run_finish"

# A step that found every slot of its health system held asks again after this long.
SLOT_WAIT_SECONDS = 0.05

# What the patient's summary shows, fetched first: conditions, medications, allergies, then
# Observation (its probe page is the newest results and vitals; its date windows follow,
# newest first). The other types follow in name order.
SUMMARY_TYPES = ("Condition", "MedicationRequest", "AllergyIntolerance", "Observation")

# Broker priorities. On Redis (kombu's priority lists, steps 0, 3, 6, 9) the lower number is
# taken first, so a summary stream's next page goes before the queued pages of the long
# history instead of behind them (FIFO). The SQLAlchemy transport of the embedded default
# ignores priorities: there the order stays the order of sending.
FIRST = 0
LATER = 6


class Message(NamedTuple):
    task: str
    args: list[Any]
    countdown: float = 0.0
    priority: int = LATER


def stream_step(
    stream_id: int, pages: int, attempt: int = 0, bad: int = 0, *, key: str = ""
) -> Message:
    """The step of stream `stream_id` at checkpoint `pages`; `key` is the stream's key (a
    summary type's own stream goes FIRST)."""
    priority = FIRST if key in SUMMARY_TYPES else LATER
    return Message(STREAM_STEP, [stream_id, pages, attempt, bad], priority=priority)


def run_finish(run_id: Any, fatal: str = "") -> Message:
    return Message(RUN_FINISH, [str(run_id), fatal])
