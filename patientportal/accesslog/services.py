"""Writing, verifying and purging the access log.

`access_log_record(...)` is the one way to write a row: one row per request, list, export or job
run (never one per item). It costs one INSERT; on PostgreSQL the append takes a transaction-level
advisory lock so two concurrent appends cannot fork the chain (SQLite serialises writers itself).
Call it outside long transactions: inside one, the lock is held until that transaction commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from patientportal.accounts.models import Patient, User
from patientportal.core.http import client_ip

from .models import AccessAction, AccessEvent, AccessLogAnchor, ActorKind, Outcome

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key for the chain head ("accesslog" as a 63-bit integer).
CHAIN_LOCK_KEY = int.from_bytes(hashlib.sha256(b"patientportal.accesslog").digest()[:8]) >> 1

# The fields the hash covers, in this order (plus the previous row's hash).
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "occurred_at",
    "actor_kind",
    "actor_user_id",
    "actor_role",
    "actor_name",
    "application_client_id",
    "patient_id",
    "action",
    "resource_type",
    "resource_ids",
    "query",
    "purpose",
    "outcome",
    "request_id",
    "ip_address",
    "user_agent",
)


@dataclass(frozen=True)
class RequestContext:
    """What the log keeps about the request behind an access (no cookies, no tokens)."""

    request_id: str = ""
    ip_address: str | None = None
    user_agent: str = ""
    application_client_id: str = ""


def request_context(request: HttpRequest | Any | None) -> RequestContext:
    """Request id, client IP, user agent and the OAuth app of a Django or DRF request."""
    if request is None:
        return RequestContext()
    django_request: HttpRequest = getattr(request, "_request", request)
    client_id = ""
    auth = getattr(request, "auth", None)
    application = getattr(auth, "application", None)
    if application is not None:
        client_id = str(application.client_id)[:100]
    return RequestContext(
        request_id=str(getattr(django_request, "request_id", "") or "")[:64],
        ip_address=_clean_ip(_client_address(django_request)),
        user_agent=str(django_request.META.get("HTTP_USER_AGENT", ""))[:256],
        application_client_id=client_id,
    )


_LOGGED_FLAG = "_access_logged"


def mark_request_logged(request: Any) -> None:
    """Note on the (Django) request that its access-log row has been written."""
    django_request = getattr(request, "_request", request)
    setattr(django_request, _LOGGED_FLAG, True)


def request_was_logged(request: Any) -> bool:
    """True once a row has been written for this request (the mixins then write no second)."""
    django_request = getattr(request, "_request", request)
    return bool(getattr(django_request, _LOGGED_FLAG, False))


def _client_address(request: HttpRequest) -> str | None:
    return client_ip(request)


def _clean_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        return None
    return clean_ipv6_address(value) if parsed.version == 6 else str(parsed)


def _chain_key() -> bytes:
    key = settings.ACCESS_LOG_CHAIN_KEY
    if key:
        return key.encode()
    return hashlib.sha256(b"accesslog-chain:" + settings.SECRET_KEY.encode()).digest()


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def event_hash(values: Mapping[str, Any], prev_hash: str) -> str:
    """HMAC-SHA256 over the previous hash and the row's content (canonical JSON)."""
    payload = json.dumps(
        {name: _canonical(values[name]) for name in HASHED_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    message = f"{prev_hash}\n{payload}".encode()
    return hmac.new(_chain_key(), message, hashlib.sha256).hexdigest()


def anchor_hash(
    *,
    through_seq: int,
    through_hash: str,
    purged_before: datetime,
    rows_purged: int,
    created_at: datetime,
    prev_anchor_hash: str,
) -> str:
    """HMAC-SHA256 of an anchor, chained to the previous anchor."""
    payload = json.dumps(
        {
            "through_seq": through_seq,
            "through_hash": through_hash,
            "purged_before": _canonical(purged_before),
            "rows_purged": rows_purged,
            "created_at": _canonical(created_at),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    message = f"anchor\n{prev_anchor_hash}\n{payload}".encode()
    return hmac.new(_chain_key(), message, hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    """Serialise appends (and purges) for the rest of the current transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    # SQLite: transactions start with BEGIN IMMEDIATE (settings), which takes the write lock.


def _lock_chain_and_read_head(*, own_transaction: bool) -> tuple[int, str]:
    """Take the chain lock, then read the head (PostgreSQL: one round trip, migration 0004).

    `own_transaction`: the transaction holds only this append, so unless
    ACCESS_LOG_SYNCHRONOUS_COMMIT its commit need not wait for the WAL flush (see settings).
    """
    if connection.vendor != "postgresql":
        _lock_chain()
        return _chain_head()
    async_commit = own_transaction and not settings.ACCESS_LOG_SYNCHRONOUS_COMMIT
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT head_seq, head_hash FROM accesslog_chain_head(%s, %s)",
            [CHAIN_LOCK_KEY, async_commit],
        )
        row = cursor.fetchone()
    if row is not None:
        return int(row[0]), str(row[1])
    return _chain_head()  # empty table: the anchor, or the genesis


_PG_CASTS = {"resource_ids": "::jsonb", "query": "::jsonb", "patient_id": "::uuid"}
_PG_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
# Built once from the constant column names above; every value is a bound parameter.
_PG_INSERT = "INSERT INTO accesslog_accessevent ({}) VALUES ({}) RETURNING id; COMMIT".format(  # noqa: S608
    ", ".join(_PG_COLUMNS), ", ".join("%s" + _PG_CASTS.get(c, "") for c in _PG_COLUMNS)
)


def _append_in_two_round_trips(build: Callable[[int, str], AccessEvent]) -> AccessEvent | None:
    """PostgreSQL, outside any transaction: the append in two round trips instead of five.

    `BEGIN; lock + head` in one message, `INSERT ...; COMMIT` in the second (psycopg's
    client-side binding allows several statements per message; Django's default). Returns None
    where that is not available, and the caller takes the ordinary path.
    """
    if connection.vendor != "postgresql":
        return None
    import psycopg

    with connection.cursor() as cursor:
        if not isinstance(cursor.cursor, psycopg.ClientCursor):
            return None
        try:
            cursor.execute(
                "BEGIN; SELECT head_seq, head_hash FROM accesslog_chain_head(%s, %s)",
                [CHAIN_LOCK_KEY, not settings.ACCESS_LOG_SYNCHRONOUS_COMMIT],
            )
            cursor.cursor.nextset()
            row = cursor.fetchone()
            event = build(*((int(row[0]), str(row[1])) if row else _chain_head()))
            params = [getattr(event, column) for column in _PG_COLUMNS]
            for index, column in enumerate(_PG_COLUMNS):
                if column in ("resource_ids", "query"):
                    params[index] = json.dumps(params[index])
                elif column == "patient_id" and params[index] is not None:
                    params[index] = str(params[index])
            cursor.execute(_PG_INSERT, params)
            inserted = cursor.fetchone()
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
    event.pk = inserted[0]
    event._state.adding = False
    event._state.db = connection.alias
    return event


def _chain_head() -> tuple[int, str]:
    last = AccessEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    if last is not None:
        return last
    anchor = AccessLogAnchor.objects.order_by("-through_seq").first()
    if anchor is not None:
        return anchor.through_seq, anchor.through_hash
    return 0, GENESIS_HASH


def _staff_role(user: User) -> str:
    names = sorted(group.name for group in user.groups.all())
    if names:
        return ", ".join(names)[:64]
    return "Administrator" if user.is_superuser else "Staff"


def _json_safe(value: Any) -> Any:
    """Only str/int/bool/None/lists/dicts go into the hashed JSON (floats do not round-trip)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def access_log_record(
    *,
    actor_kind: ActorKind | str,
    action: AccessAction | str,
    patient: Patient | uuid.UUID | str | None,
    purpose: str = "",
    outcome: Outcome | str = Outcome.SUCCESS,
    resource_type: str = "",
    resource_ids: Iterable[Any] = (),
    query: Mapping[str, Any] | None = None,
    actor_user: User | None = None,
    actor_user_id: int | None = None,
    actor_label: str = "",
    request: HttpRequest | Any | None = None,
    context: RequestContext | None = None,
    occurred_at: datetime | None = None,
) -> AccessEvent:
    """Append one row to the access log and return it.

    - `actor_kind`: patient, staff, system (a job; name it in `actor_label`, e.g.
      "fhirlink.sync_connection") or api_client (a machine client; name it in `actor_label`).
    - `actor_user` (or `actor_user_id`): who, for patient and staff actors. Staff rows snapshot
      the user's role (groups) and name so the patient's view survives later changes.
    - `patient`: whose data (a Patient, its id, or None for a multi-patient list page).
    - `action`: AccessAction; `purpose`: a consent Purpose value (or "").
    - `resource_type`, `resource_ids` (at most ACCESS_LOG_MAX_RESOURCE_IDS kept; the count is
      kept in `query["resource_count"]`) and/or `query`: a summary of the filters (no free text
      that could hold PHI).
    - `request` (Django or DRF) fills request id, IP, user agent and the OAuth app; or pass
      `context` (a RequestContext) from a job that has no request.
    """
    ctx = context or request_context(request)
    if actor_user is None and actor_user_id is None and request is not None:
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            actor_user = user
    actor_role, actor_name = "", ""
    if actor_user is not None:
        actor_user_id = actor_user.pk
        if str(actor_kind) == ActorKind.STAFF:
            actor_role = _staff_role(actor_user)
            actor_name = actor_user.get_full_name()[:150]
        elif str(actor_kind) == ActorKind.PATIENT:
            actor_role = "patient"
    if actor_label:
        actor_role = actor_label[:64]

    ids = [str(_canonical(item)) for item in resource_ids]
    summary: dict[str, Any] = _json_safe(dict(query or {}))
    limit = settings.ACCESS_LOG_MAX_RESOURCE_IDS
    if len(ids) > limit:
        summary["resource_count"] = len(ids)
        ids = ids[:limit]
    if isinstance(patient, Patient):
        patient_id: uuid.UUID | None = patient.pk
    elif patient is None:
        patient_id = None
    else:
        patient_id = uuid.UUID(str(patient))

    def build(last_seq: int, last_hash: str) -> AccessEvent:
        values: dict[str, Any] = {
            "seq": last_seq + 1,
            "occurred_at": occurred_at or timezone.now(),
            "actor_kind": str(actor_kind),
            "actor_user_id": actor_user_id,
            "actor_role": actor_role,
            "actor_name": actor_name,
            "application_client_id": ctx.application_client_id,
            "patient_id": patient_id,
            "action": str(action),
            "resource_type": resource_type[:64],
            "resource_ids": ids,
            "query": summary,
            "purpose": str(purpose),
            "outcome": str(outcome),
            "request_id": ctx.request_id,
            "ip_address": ctx.ip_address,
            "user_agent": ctx.user_agent,
        }
        return AccessEvent(**values, prev_hash=last_hash, hash=event_hash(values, last_hash))

    own_transaction = not connection.in_atomic_block
    event = _append_in_two_round_trips(build) if own_transaction else None
    if event is None:
        with transaction.atomic():
            event = build(*_lock_chain_and_read_head(own_transaction=own_transaction))
            event.save(force_insert=True)
    if request is not None:
        mark_request_logged(request)
    return event


# --- Verification --------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = ""
    anchor_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def access_log_verify(
    *,
    chunk_size: int = 2000,
    max_problems: int = 100,
    expect: dict[int, str] | None = None,
) -> VerifyReport:
    """Recompute the chain from the newest anchor (or the start) and report every break.

    Detects a changed row (its hash no longer matches its content), a deleted row (a gap in
    `seq` and a `prev_hash` that no longer links), an inserted row (a `seq` out of sequence, a
    `prev_hash` that does not link, or a hash not made with the chain key) and a purge that left
    no anchor (or a forged one). `expect` ({seq: hash}, heads recorded earlier outside the
    database) also catches rows cut from the end of the chain.
    """
    report = VerifyReport()
    prev_anchor_hash = GENESIS_HASH
    for candidate in AccessLogAnchor.objects.order_by("through_seq"):
        recomputed = anchor_hash(
            through_seq=candidate.through_seq,
            through_hash=candidate.through_hash,
            purged_before=candidate.purged_before,
            rows_purged=candidate.rows_purged,
            created_at=candidate.created_at,
            prev_anchor_hash=prev_anchor_hash,
        )
        if recomputed != candidate.hash:
            report.problems.append(f"anchor through seq {candidate.through_seq}: forged or changed")
        prev_anchor_hash = candidate.hash
    anchor = AccessLogAnchor.objects.order_by("-through_seq").first()
    expected_seq, expected_prev = (
        (anchor.through_seq + 1, anchor.through_hash) if anchor else (1, GENESIS_HASH)
    )
    report.anchor_seq = anchor.through_seq if anchor else None
    rows = (
        AccessEvent.objects.order_by("seq")
        .values(*HASHED_FIELDS, "prev_hash", "hash")
        .iterator(chunk_size=chunk_size)
    )

    def problem(message: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(message)

    for row in rows:
        seq = row["seq"]
        if report.first_seq is None:
            report.first_seq = seq
        report.last_seq = seq
        report.last_hash = row["hash"]
        report.checked += 1
        if seq != expected_seq:
            if seq > expected_seq:
                problem(f"seq {expected_seq}..{seq - 1} missing (rows deleted)")
            else:
                problem(f"seq {seq} out of order (row inserted)")
        if row["prev_hash"] != expected_prev:
            problem(f"seq {seq}: does not link to the row before it (row deleted or inserted)")
        if event_hash(row, row["prev_hash"]) != row["hash"]:
            problem(f"seq {seq}: content does not match its hash (row changed or forged)")
        if expect and seq in expect and expect.pop(seq) != row["hash"]:
            problem(f"seq {seq}: hash differs from the one recorded earlier")
        expected_seq, expected_prev = seq + 1, row["hash"]
    for seq in sorted(expect or {}):
        if report.anchor_seq is None or seq > report.anchor_seq:
            problem(f"seq {seq}: recorded earlier, now missing (rows cut from the chain)")
    return report


# --- Retention ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    rows_purged: int
    through_seq: int | None
    cutoff: datetime


def access_log_purge(
    *, now: datetime | None = None, retention_days: int | None = None
) -> PurgeResult:
    """Remove the rows older than the retention period and anchor the chain where they stop.

    Rows go in `seq` order only (a prefix of the chain), so what remains is one unbroken chain
    that starts at the anchor. The one path allowed past the append-only guards.
    """
    days = settings.ACCESS_LOG_RETENTION_DAYS if retention_days is None else retention_days
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    with transaction.atomic():
        _lock_chain()
        last = (
            AccessEvent.objects.filter(occurred_at__lt=cutoff)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
        if last is None:
            return PurgeResult(rows_purged=0, through_seq=None, cutoff=cutoff)
        through_seq, through_hash = last
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The trigger lets this transaction delete rows up to through_seq, nothing else.
                cursor.execute(
                    "SELECT set_config('accesslog.purge_through_seq', %s, true)",
                    [str(through_seq)],
                )
        doomed = AccessEvent.objects.filter(seq__lte=through_seq)
        purged = doomed._raw_delete(doomed.db)
        previous = AccessLogAnchor.objects.order_by("-through_seq").first()
        AccessLogAnchor(
            created_at=now,
            through_seq=through_seq,
            through_hash=through_hash,
            purged_before=cutoff,
            rows_purged=purged,
            hash=anchor_hash(
                through_seq=through_seq,
                through_hash=through_hash,
                purged_before=cutoff,
                rows_purged=purged,
                created_at=now,
                prev_anchor_hash=previous.hash if previous else GENESIS_HASH,
            ),
        ).save(force_insert=True)
    logger.info("Access log purge: %s rows through seq %s", purged, through_seq)
    return PurgeResult(rows_purged=purged, through_seq=through_seq, cutoff=cutoff)
