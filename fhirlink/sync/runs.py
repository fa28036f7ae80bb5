"""Starting, claiming, planning and stopping sync runs: at most one active run per connection.

A run is claimed with a lease (`lease_until`), renewed by its steps; a run whose lease ran out
(its worker died, or a step's message was lost) is taken over by the next
`fhirlink.sync_connection` of the connection (`sync_resume_stale` sends it), which enqueues a
step for each stream from its checkpoint and the extras still to fetch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from fhirlink import http
from fhirlink.conf import sync_settings
from fhirlink.exceptions import ConnectionGone, ConnectionNotFound, ReauthRequired
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncTrigger,
    SyncWatermark,
)
from fhirlink.models.sync import ACTIVE_RUN_STATUSES, StreamMode, StreamStatus
from fhirlink.scopes import granted_categories
from fhirlink.services.sync import plan
from fhirlink.services.tokens import connection_access_token
from fhirlink.sync import extras, queue
from fhirlink.sync.finish import run_finish
from fhirlink.sync.queue import Message
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted

logger = logging.getLogger(__name__)

USABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING)


def sync_request(*, connection_id: Any, trigger: str = SyncTrigger.PATIENT) -> SyncRun | None:
    """Queue a sync of the connection (after commit, the task runs it). Returns the queued run,
    or the already active one (a second request never starts a second sync)."""
    from fhirlink.sync.tasks import sync_connection

    active = SyncRun.objects.filter(connection_id=connection_id, status__in=ACTIVE_RUN_STATUSES)
    existing = active.first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            run = SyncRun.objects.create(connection_id=connection_id, trigger=trigger)
    except IntegrityError:
        return active.first()
    cid = str(connection_id)
    transaction.on_commit(lambda: sync_connection.apply_async(args=(cid,)))
    return run


def sync_stop_for_patient(*, patient_id: Any) -> int:
    """CONSENT_REVOCATION_HANDLERS["ehr_sync"]: running syncs stop at their next step."""
    return SyncRun.objects.filter(
        connection__patient_id=patient_id, status__in=ACTIVE_RUN_STATUSES
    ).update(cancel_requested=True)


def sync_resume_stale() -> list[str]:
    """Connections whose running run lost its worker or its step messages (lease expired), or
    whose queued run was never picked up: to be sent to `fhirlink.sync_connection` again."""
    now = timezone.now()
    running = SyncRun.objects.filter(status=SyncRunStatus.RUNNING).filter(_stale(now))
    queued = SyncRun.objects.filter(
        status=SyncRunStatus.QUEUED, created_at__lt=now - timedelta(minutes=10)
    )
    return [str(c) for c in running.values_list("connection_id", flat=True)] + [
        str(c) for c in queued.values_list("connection_id", flat=True)
    ]


def run_start(*, connection_id: Any, trigger: str = SyncTrigger.CONNECT) -> list[Message] | str:
    """Claim the connection's run (or take over one whose lease ran out), plan it if new, and
    return the steps to enqueue; or a code saying why not."""
    claimed = sync_claim(connection_id=connection_id, trigger=trigger)
    if isinstance(claimed, str):
        logger.info("connection %s: sync not started (%s)", connection_id, claimed)
        return claimed
    run = claimed
    try:
        connection_access_token(connection_id=run.connection_id)
    except (ReauthRequired, ConnectionGone, ConnectionNotFound) as exc:
        run_finish(run_id=run.pk, fatal=exc.code)
        return exc.code
    except (http.EhrHttpError, Exception) as exc:
        logger.warning("connection %s: no access token (%s)", connection_id, type(exc).__name__)
        run_finish(run_id=run.pk, fatal="token_unavailable")
        return "token_unavailable"
    with transaction.atomic():
        run = (
            SyncRun.objects.select_for_update()
            .select_related("connection__health_system")
            .get(pk=run.pk)
        )
        if not run.streams.exists():
            _plan(run)
        return _steps_to_resume(run)


def sync_claim(*, connection_id: Any, trigger: str = SyncTrigger.CONNECT) -> SyncRun | str:
    """Claim the connection's active run (creating one if none), or say why not."""
    now = timezone.now()
    cfg = sync_settings()
    with transaction.atomic():
        connection = Connection.objects.select_for_update().filter(pk=connection_id).first()
        if connection is None:
            return "connection_not_found"
        reason = _usable_or_reason(connection)
        if reason:
            SyncRun.objects.filter(connection=connection, status=SyncRunStatus.QUEUED).update(
                status=SyncRunStatus.FAILED, finished_at=now, errors=[{"code": reason}]
            )
            return reason
        run = (
            SyncRun.objects.select_for_update(skip_locked=True)
            .filter(connection=connection, status__in=ACTIVE_RUN_STATUSES)
            .first()
        )
        if run is None:
            if SyncRun.objects.filter(
                connection=connection, status__in=ACTIVE_RUN_STATUSES
            ).exists():
                return "already_running"
            try:
                with transaction.atomic():
                    run = SyncRun.objects.create(connection=connection, trigger=trigger)
            except IntegrityError:
                return "already_running"
        if (
            run.status == SyncRunStatus.RUNNING
            and not SyncRun.objects.filter(pk=run.pk).filter(_stale(now)).exists()
        ):
            return "already_running"
        if run.attempts >= cfg.max_attempts:
            run.status = SyncRunStatus.FAILED
            run.finished_at = now
            run.errors = [*run.errors, {"code": "too_many_attempts"}]
            run.save(update_fields=["status", "finished_at", "errors"])
            return "too_many_attempts"
        run.status = SyncRunStatus.RUNNING
        run.lease_until = now + timedelta(seconds=cfg.lease_seconds)
        run.attempts += 1
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "lease_until", "attempts", "started_at"])
    return run


def _stale(now: datetime) -> Q:
    """A running run that lost its worker (its lease ran out) or a step message (a pending
    stream that has not moved for a lease)."""
    before = now - timedelta(seconds=sync_settings().lease_seconds)
    stuck = SyncStream.objects.filter(
        run=OuterRef("pk"), status=StreamStatus.PENDING, stepped_at__lt=before
    )
    return Q(lease_until__lt=now) | Q(lease_until__isnull=True) | Q(Exists(stuck))


def _usable_or_reason(connection: Connection) -> str:
    if connection.status not in USABLE:
        return f"connection_{connection.status}"
    if not consent_is_granted(patient=connection.patient_id, purpose=Purpose.EHR_SYNC):
        return "no_consent"
    return ""


def _plan(run: SyncRun) -> None:
    """The run's streams: one per permitted type (full, incremental or refetch by its
    watermark); Observation's full pass starts with a probe page, split into date windows."""
    connection = run.connection
    cfg = sync_settings()
    supported = (connection.health_system.discovery or {}).get("resources") or None
    types = plan.permitted_types(
        granted=list(connection.granted_resources or []), supported=supported
    )
    marks = {w.resource_type: w for w in SyncWatermark.objects.filter(connection=connection)}
    stale_before = timezone.now() - timedelta(days=cfg.reconcile_days)
    pid = connection.fhir_patient_id
    # SMART v2 granular grants: only the granted categories are asked for.
    categories = granted_categories(connection.granted_scopes or "")
    streams: list[SyncStream] = []
    for rtype in sorted(types, key=_order):
        if rtype in plan.READ_TYPES:
            mode, params = StreamMode.REFETCH, {"_read": f"{rtype}/{pid}"}
        else:
            mark = marks.get(rtype)
            since = None
            if mark is None or mark.last_full_at is None or mark.last_full_at < stale_before:
                mode = StreamMode.FULL
            elif plan.TYPE_SPECS[rtype].last_updated and mark.since is not None:
                mode, since = StreamMode.INCREMENTAL, mark.since
            else:
                mode = StreamMode.REFETCH
            params = plan.search_params(
                rtype, patient_id=pid, since=since, categories=categories.get(rtype)
            )
            if rtype == "Observation" and mode == StreamMode.FULL:
                params = {**params, "_probe": "1"}
        streams.append(
            SyncStream(
                run=run,
                resource_type=rtype,
                key=rtype,
                mode=mode,
                params=params,
                stepped_at=timezone.now(),
            )
        )
    SyncStream.objects.bulk_create(streams)
    run.resource_types = types
    run.references_pending = extras.references_unresolved(run)
    run.save(update_fields=["resource_types", "references_pending"])


def _order(resource_type: str) -> tuple[int, str]:
    if resource_type in queue.SUMMARY_TYPES:
        return queue.SUMMARY_TYPES.index(resource_type), ""
    return len(queue.SUMMARY_TYPES), resource_type


def _steps_to_resume(run: SyncRun) -> list[Message]:
    """(Under the run's lock.) A step per pending stream at its checkpoint, summary types
    first; the extras a new run's pages named and did not store; the finish if nothing is
    left. A new run's extras count is zero; a taken-over run's is counted again (the old
    generation's extra steps do nothing)."""
    pending = sorted(
        run.streams.filter(status=StreamStatus.PENDING),
        key=lambda s: (_order(s.resource_type), s.pk),
    )
    messages = [queue.stream_step(s.pk, s.pages, key=s.key) for s in pending]
    SyncStream.objects.filter(pk__in=[s.pk for s in pending]).update(stepped_at=timezone.now())
    jobs = extras.jobs_left(run, streams_pending=bool(pending))
    if not pending:
        jobs += extras.references_carried(run)
    run.extras_pending = len(jobs)
    run.save(update_fields=["extras_pending", "references_pending"])
    messages += [extras.job_message(run, job) for job in jobs]
    if not messages:
        messages.append(queue.run_finish(run.pk))
    return messages
