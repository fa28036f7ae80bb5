"""Thin Celery tasks of the sync engine (registered through `fhirlink.tasks`).

* ``fhirlink.sync_connection`` [connection_id]: claim the connection's sync run (or resume a dead
  worker's) and execute it. Idempotent through the database (one active run per connection,
  leases, per-page checkpoints), hence `acks_late`.
* ``fhirlink.schedule_incremental_syncs``: beat; queues incremental syncs of connections whose
  last sync is older than the interval, spread over the interval (countdown), skipping
  connections that need reconnection or lack consent; re-enqueues runs whose worker died.
* ``fhirlink.sync_resume_stale``: re-enqueue runs whose worker died (lease expired).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_process_init, worker_shutting_down
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)


@shared_task(
    name="fhirlink.sync_connection",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=int(getattr(settings, "FHIRLINK_SYNC_SOFT_TIME_LIMIT", 25 * 60)),
    time_limit=int(getattr(settings, "FHIRLINK_SYNC_TIME_LIMIT", 30 * 60)),
)
def sync_connection(connection_id: str, trigger: str = "connect") -> str:
    from fhirlink.services.sync.engine import sync_connection_run

    return sync_connection_run(connection_id=connection_id, trigger=trigger)


_worker_stopping = False


@worker_shutting_down.connect
def sync_worker_stopping(**_: object) -> None:
    """The worker's main process is shutting down: the processes it forks from now on inherit
    this, and start no preparation pool. (A supervisor that signals the whole process group,
    as `make demo`'s does, kills the pool's processes too; Celery replaces them while it shuts
    down, and each replacement spawned two processes loading every model, which delayed the
    shutdown past the supervisor's patience.)"""
    global _worker_stopping
    _worker_stopping = True


@worker_process_init.connect
def sync_preparation_start(**_: object) -> None:
    """A worker process starts its preparation pool as it starts (see
    FHIRLINK_SYNC_PREPARE_AT_WORKER_START), so that its first sync does not wait for it."""
    if getattr(settings, "FHIRLINK_SYNC_PREPARE_AT_WORKER_START", True) and not _worker_stopping:
        from fhirlink.services.sync.engine import preparation_start

        preparation_start()


@shared_task(name="fhirlink.sync_resume_stale", soft_time_limit=120, time_limit=180)
def sync_resume_stale() -> int:
    from fhirlink.services.sync.runs import sync_resume_stale as stale

    ids = stale()
    for connection_id in ids:
        sync_connection.apply_async(args=(connection_id, "schedule"))
    return len(ids)


@shared_task(name="fhirlink.schedule_incremental_syncs", soft_time_limit=300, time_limit=360)
def schedule_incremental_syncs() -> int:
    from fhirlink.models import Connection, ConnectionStatus, SyncRun
    from fhirlink.models.sync import ACTIVE_RUN_STATUSES
    from patientportal.consent.models import Purpose
    from patientportal.consent.services import consent_is_granted

    interval = timedelta(minutes=int(getattr(settings, "FHIRLINK_SYNC_INTERVAL_MINUTES", 360)))
    spread = int(getattr(settings, "FHIRLINK_SYNC_SPREAD_SECONDS", 3000))
    batch = int(getattr(settings, "FHIRLINK_SYNC_SCHEDULE_BATCH", 500))
    now = timezone.now()
    busy = SyncRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).values("connection_id")
    due = (
        Connection.objects.filter(status=ConnectionStatus.ACTIVE)
        .filter(Q(last_synced_at__isnull=True) | Q(last_synced_at__lt=now - interval))
        .exclude(pk__in=busy)
        .order_by("last_synced_at")
        .values_list("pk", "patient_id")[:batch]
    )
    queued = 0
    for connection_id, patient_id in due:
        if not consent_is_granted(patient=patient_id, purpose=Purpose.EHR_SYNC):
            continue
        countdown = random.randint(0, max(spread, 0))  # noqa: S311 (spreading load, not crypto)
        sync_connection.apply_async(args=(str(connection_id), "schedule"), countdown=countdown)
        queued += 1
    sync_resume_stale.delay()
    return queued
