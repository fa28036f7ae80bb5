"""Starting, claiming and stopping sync runs: at most one active run per connection."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache
from typing import Any, NamedTuple

from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Field, Model
from django.utils import timezone

from fhirlink import sqlnames
from fhirlink.models import (
    Connection,
    ConnectionStatus,
    SyncRun,
    SyncRunStatus,
    SyncTrigger,
)
from fhirlink.models.sync import ACTIVE_RUN_STATUSES
from fhirlink.services.sync import plan
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_is_granted

logger = logging.getLogger(__name__)

S = plan.setting

USABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING)


# A fetch that fails with one of these ends the whole run (no other request can succeed).
RUN_ENDING_CODES = frozenset({"connection_needs_reauth", "connection_disconnected", "cancelled"})


class StopRun(Exception):
    """Ends a run early with a code (cancelled, consent revoked, needs reauth, ...)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def sync_request(*, connection_id: Any, trigger: str = SyncTrigger.PATIENT) -> SyncRun | None:
    """Queue a sync of the connection (after commit, the task runs it). Returns the queued run,
    or the already active one (a second request never starts a second sync)."""
    from fhirlink.sync_tasks import sync_connection

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


def _usable_or_reason(connection: Connection) -> str:
    if connection.status not in USABLE:
        return f"connection_{connection.status}"
    if not consent_is_granted(patient=connection.patient_id, purpose=Purpose.EHR_SYNC):
        return "no_consent"
    return ""


def sync_claim(
    *, connection_id: Any, owner: str, trigger: str = SyncTrigger.CONNECT
) -> SyncRun | str:
    """Claim the connection's active run (creating one if none), or say why not."""
    now = timezone.now()
    lease = timedelta(seconds=int(S("FHIRLINK_SYNC_LEASE_SECONDS", 60)))
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
        if run.status == SyncRunStatus.RUNNING and run.lease_until and run.lease_until > now:
            return "already_running"
        if run.attempts >= int(S("FHIRLINK_SYNC_MAX_ATTEMPTS", 5)):
            run.status = SyncRunStatus.FAILED
            run.finished_at = now
            run.errors = [*run.errors, {"code": "too_many_attempts"}]
            run.save(update_fields=["status", "finished_at", "errors"])
            return "too_many_attempts"
        run.status = SyncRunStatus.RUNNING
        run.lease_owner = owner
        run.lease_until = now + lease
        run.attempts += 1
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "lease_owner", "lease_until", "attempts", "started_at"])
        # The connection's status stays `active` while it syncs: progress is `sync` in the
        # connections API (hooks.sync_progress). A `syncing` status left by an older version is
        # put back to `active` when the run finishes.
    return run


def sync_stop_for_patient(*, patient_id: Any) -> int:
    """CONSENT_REVOCATION_HANDLERS["ehr_sync"]: running syncs stop at their next page."""
    return SyncRun.objects.filter(
        connection__patient_id=patient_id, status__in=ACTIVE_RUN_STATUSES
    ).update(cancel_requested=True)


def sync_resume_stale() -> list[str]:
    """Connections whose running run lost its worker (lease expired): to be re-enqueued."""
    now = timezone.now()
    return [
        str(c)
        for c in SyncRun.objects.filter(
            status=SyncRunStatus.RUNNING, lease_until__lt=now
        ).values_list("connection_id", flat=True)
    ] + [
        str(c)
        for c in SyncRun.objects.filter(
            status=SyncRunStatus.QUEUED, created_at__lt=now - timedelta(minutes=10)
        ).values_list("connection_id", flat=True)
    ]


# --- The writer's per-page statements --------------------------------------------------------
# Written as SQL here, not through the ORM: they run for every page, and building and compiling
# their ORM queries cost ten times running them (0.34 against 0.03 ms for the state read,
# measured on SQLite; about a second of a large first sync's writer thread, which is the
# pipeline's bottleneck). Table and column names come from the models; values are bound
# parameters, adapted by their model fields.


class RunState(NamedTuple):
    cancel_requested: bool
    lease_owner: str
    status: str
    connection_status: str | None  # None: the connection is gone


def run_state(run_id: Any) -> RunState | None:
    """What the writer checks before every page, or None when the run is gone."""
    with db.cursor() as cursor:
        cursor.execute(_run_state_sql(), [_run_id(run_id)])
        row = cursor.fetchone()
    if row is None:
        return None
    return RunState(bool(row[0]), str(row[1]), str(row[2]), None if row[3] is None else str(row[3]))


def row_update(instance: Model, fields: tuple[str, ...]) -> None:
    """UPDATE the instance's row with its current values of `fields` (a stream's checkpoint)."""
    meta = instance._meta
    values = []
    for name in fields:
        field = meta.get_field(name)
        assert isinstance(field, Field)
        values.append(field.get_db_prep_save(getattr(instance, field.attname), db))
    assert meta.pk is not None
    values.append(meta.pk.get_db_prep_value(instance.pk, db))
    with db.cursor() as cursor:
        cursor.execute(_update_sql(type(instance), fields), values)


def run_page_counted(run_id: Any, *, size: int, requests: int) -> None:
    """A stored page in the run's counters: pages + 1, bytes + size, requests so far."""
    with db.cursor() as cursor:
        cursor.execute(_run_page_sql(), [size, requests, _run_id(run_id)])


def _run_id(run_id: Any) -> Any:
    assert SyncRun._meta.pk is not None
    return SyncRun._meta.pk.get_db_prep_value(run_id, db)


@cache
def _run_state_sql() -> str:
    r, c = sqlnames.table(SyncRun), sqlnames.table(Connection)
    run, conn = sqlnames.columns(SyncRun), sqlnames.columns(Connection)
    return (
        f"SELECT {r}.{run['cancel_requested']}, {r}.{run['lease_owner']}, "  # noqa: S608 (names)
        f"{r}.{run['status']}, {c}.{conn['status']} FROM {r} LEFT JOIN {c} "
        f"ON {c}.{conn['id']} = {r}.{run['connection']} WHERE {r}.{run['id']} = %s"
    )


@cache
def _update_sql(model: type[Model], fields: tuple[str, ...]) -> str:
    column = sqlnames.columns(model)
    assert model._meta.pk is not None
    sets = ", ".join(f"{column[name]} = %s" for name in fields)
    return (
        f"UPDATE {sqlnames.table(model)} SET {sets} "  # noqa: S608 (names)
        f"WHERE {column[model._meta.pk.name]} = %s"
    )


@cache
def _run_page_sql() -> str:
    run = sqlnames.columns(SyncRun)
    pages, size, requests = run["pages"], run["bytes"], run["requests"]
    return (
        f"UPDATE {sqlnames.table(SyncRun)} SET {pages} = {pages} + 1, "  # noqa: S608 (names)
        f"{size} = {size} + %s, {requests} = %s WHERE {run['id']} = %s"
    )
