"""Which service runs a sync message: one table for the Celery tasks and the inline driver."""

from __future__ import annotations

from fhirlink.sync import queue
from fhirlink.sync.extras import extra_step
from fhirlink.sync.finish import run_finish
from fhirlink.sync.queue import Message
from fhirlink.sync.runs import run_start
from fhirlink.sync.steps import stream_step


def message_run(message: Message) -> list[Message] | str:
    """Run the message's service; the messages it asks to send next (or run_start's code)."""
    args = message.args
    if message.task == queue.STREAM_STEP:
        return stream_step(stream_id=args[0], pages=args[1], attempt=args[2], bad=args[3])
    if message.task == queue.EXTRA_STEP:
        run_id, generation, kind, item, document, attempt = args
        return extra_step(
            run_id=run_id,
            generation=generation,
            kind=kind,
            item=item,
            document=document,
            attempt=attempt,
        )
    if message.task == queue.RUN_FINISH:
        run_finish(run_id=args[0], fatal=args[1])
        return []
    if message.task == queue.SYNC_CONNECTION:
        return run_start(connection_id=args[0], trigger=args[1])
    raise ValueError(f"not a sync message: {message.task}")
