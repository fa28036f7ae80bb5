"""The sync's Celery tasks: thin, JSON arguments, `acks_late` (each is idempotent through the
database), bounded retries of database hiccups only; a step's own retries (429, 5xx, a busy
health system) are messages it returns, sent with a countdown.

* ``fhirlink.sync_connection`` [connection_id, trigger]: start or take over a run.
* ``fhirlink.sync_stream_step`` [stream_id, pages, attempt, bad]: one page of a stream.
* ``fhirlink.sync_extra_step`` [run_id, generation, kind, item, document, attempt].
* ``fhirlink.sync_run_finish`` [run_id, fatal].
* ``fhirlink.sync_resume_stale``: take over runs whose worker or step message was lost.
* ``fhirlink.schedule_incremental_syncs``: beat; incremental syncs of connections not synced
  for the interval, spread over it (countdown), skipping those without consent and those whose
  health system the endpoint checks find down (the connection's `ehr_status` tells the patient;
  a sync the patient asks for still runs).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from fhirlink.conf import sync_settings
from fhirlink.sync import queue
from fhirlink.sync.dispatch import message_run
from fhirlink.sync.queue import Message

logger = logging.getLogger(__name__)

_cfg = sync_settings()
STEP_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": _cfg.soft_time_limit,
    "time_limit": _cfg.time_limit,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
    "ignore_result": True,
}


def messages_send(messages: list[Message]) -> None:
    for message in messages:
        TASKS[message.task].apply_async(
            args=message.args, countdown=message.countdown or None, priority=message.priority
        )


def _run(message: Message) -> str:
    result = message_run(message)
    if isinstance(result, str):
        return result
    messages_send(result)
    return "ok"


@shared_task(name=queue.SYNC_CONNECTION, **STEP_OPTIONS)
def sync_connection(connection_id: str, trigger: str = "connect") -> str:
    return _run(Message(queue.SYNC_CONNECTION, [connection_id, trigger]))


@shared_task(name=queue.STREAM_STEP, **STEP_OPTIONS)
def sync_stream_step(stream_id: int, pages: int, attempt: int = 0, bad: int = 0) -> str:
    return _run(Message(queue.STREAM_STEP, [stream_id, pages, attempt, bad]))


@shared_task(name=queue.EXTRA_STEP, **STEP_OPTIONS)
def sync_extra_step(
    run_id: str, generation: int, kind: str, item: str, document: str, attempt: int = 0
) -> str:
    return _run(Message(queue.EXTRA_STEP, [run_id, generation, kind, item, document, attempt]))


@shared_task(name=queue.RUN_FINISH, **STEP_OPTIONS)
def sync_run_finish(run_id: str, fatal: str = "") -> str:
    return _run(Message(queue.RUN_FINISH, [run_id, fatal]))


TASKS = {
    queue.SYNC_CONNECTION: sync_connection,
    queue.STREAM_STEP: sync_stream_step,
    queue.EXTRA_STEP: sync_extra_step,
    queue.RUN_FINISH: sync_run_finish,
}


@shared_task(name="fhirlink.sync_resume_stale", soft_time_limit=120, time_limit=180)
def sync_resume_stale() -> int:
    from fhirlink.sync.runs import sync_resume_stale as stale

    ids = stale()
    for connection_id in ids:
        sync_connection.apply_async(args=(connection_id, "schedule"))
    return len(ids)


@shared_task(name="fhirlink.schedule_incremental_syncs", soft_time_limit=300, time_limit=360)
def schedule_incremental_syncs() -> int:
    from fhirlink.directory.health import endpoints_down
    from fhirlink.models import Connection, ConnectionStatus, SyncRun
    from fhirlink.models.sync import ACTIVE_RUN_STATUSES
    from patientportal.consent.models import Purpose
    from patientportal.consent.services import consent_is_granted

    cfg = sync_settings()
    now = timezone.now()
    busy = SyncRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).values("connection_id")
    due = (
        Connection.objects.filter(status=ConnectionStatus.ACTIVE)
        .filter(
            Q(last_synced_at__isnull=True)
            | Q(last_synced_at__lt=now - timedelta(minutes=cfg.interval_minutes))
        )
        .exclude(pk__in=busy)
        .exclude(health_system__fhir_base_url__in=endpoints_down())
        .order_by("last_synced_at")
        .values_list("pk", "patient_id")[: cfg.schedule_batch]
    )
    queued = 0
    for connection_id, patient_id in due:
        if not consent_is_granted(patient=patient_id, purpose=Purpose.EHR_SYNC):
            continue
        countdown = random.randint(0, max(cfg.spread_seconds, 0))  # noqa: S311 (load, not crypto)
        sync_connection.apply_async(args=(str(connection_id), "schedule"), countdown=countdown)
        queued += 1
    sync_resume_stale.delay()
    return queued
