"""The sync engine: a run is a `SyncRun` and its `SyncStream` rows, moved on by small Celery
tasks, each idempotent and `acks_late`.

* `fhirlink.sync_connection` [connection_id]: claim (or take over) the connection's run, plan
  its streams and enqueue one step per stream (`runs.py`).
* `fhirlink.sync_stream_step` [stream_id, pages, attempt, bad]: fetch ONE page of a stream,
  store it and checkpoint the stream (its `next_url`) in one transaction, then enqueue the next
  step (`steps.py`). `pages` is the checkpoint the message was sent for: a duplicate delivery,
  or a step of a run taken over since, finds the stream moved on and does nothing.
* `fhirlink.sync_extra_step` [run_id, generation, kind, item, attempt]: one referenced
  resource or one DocumentReference attachment (`extras.py`).
* `fhirlink.sync_run_finish` [run_id, fatal]: counts, reconcile, watermarks, status, the
  access-log entry (`finish.py`); idempotent.

A step returns the messages to send next (`queue.Message`); the tasks (`tasks.py`) send them
after the step's transaction committed, and `inline.py` runs them in-process (tests, the
benchmark's reference loop). Politeness per health system: `fhirlink.ehr.limiter`.
"""
