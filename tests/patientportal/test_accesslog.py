"""Access log: rows, append-only guards, hash chain and tamper detection, retention, the
patient's view, the auditor's admin and exports, PostgreSQL trigger and concurrency."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from fhir.resources.R4B.auditevent import AuditEvent

from patientportal.accesslog import services
from patientportal.accesslog.models import (
    AccessAction,
    AccessEvent,
    AccessLogAnchor,
    ActorKind,
    AppendOnlyError,
)
from patientportal.accesslog.selectors import access_event_public_id
from patientportal.consent.models import Purpose
from tests.factories import PatientFactory, StaffFactory

pytestmark = pytest.mark.django_db


def record(patient=None, **kwargs):
    values = {
        "actor_kind": ActorKind.SYSTEM,
        "actor_label": "fhirlink.sync_connection",
        "action": AccessAction.SYNC_WRITE,
        "patient": patient,
        "purpose": Purpose.EHR_SYNC,
        "resource_type": "Observation",
        "resource_ids": ["obs-1", "obs-2"],
    }
    values.update(kwargs)
    return services.access_log_record(**values)


def verify_problems() -> list[str]:
    return services.access_log_verify().problems


def raw_sql(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# --- Writing -------------------------------------------------------------------------------------


def test_a_row_keeps_who_what_whose_why_and_the_request(rf, patient):
    staff = StaffFactory.create(role="Care team", first_name="Grace", last_name="Hopper")
    request = rf.get("/admin/x", HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="198.51.100.7")
    request.request_id = "req-0000-abcd"
    request.user = staff

    event = services.access_log_record(
        actor_kind=ActorKind.STAFF,
        action=AccessAction.READ,
        patient=patient,
        purpose=Purpose.CARE_TEAM_ACCESS,
        resource_type="Observation",
        resource_ids=[uuid.UUID("00000000-0000-0000-0000-000000000001"), 7],
        query={"code": "8867-4", "score": 1.5},
        request=request,
    )

    event = AccessEvent.objects.get(pk=event.pk)
    assert event.seq == 1
    assert event.actor_kind == "staff"
    assert event.actor_user_id == staff.pk
    assert event.actor_role == "Care team"
    assert event.actor_name == "Grace Hopper"
    assert event.patient_id == patient.pk
    assert event.action == "read"
    assert event.purpose == "care_team_access"
    assert event.resource_ids == ["00000000-0000-0000-0000-000000000001", "7"]
    assert event.query == {"code": "8867-4", "score": "1.5"}
    assert event.request_id == "req-0000-abcd"
    assert event.ip_address == "198.51.100.7"
    assert event.user_agent == "Mozilla/5.0"
    assert event.outcome == "success"
    assert event.prev_hash == services.GENESIS_HASH
    assert len(event.hash) == 64


def test_behind_the_proxy_the_client_address_comes_from_x_forwarded_for(rf, settings, patient):
    settings.TRUSTED_PROXY_COUNT = 1
    # The front end appends the address it saw; anything a client sent stays to the left.
    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.44", REMOTE_ADDR="10.0.0.2")
    event = record(patient, request=request)
    assert event.ip_address == "192.0.2.44"


def test_without_a_proxy_x_forwarded_for_is_ignored(rf, settings, patient):
    settings.TRUSTED_PROXY_COUNT = 0
    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR="10.0.0.2")
    event = record(patient, request=request)
    assert event.ip_address == "10.0.0.2"


def test_long_id_lists_are_capped_and_counted(patient, settings):
    settings.ACCESS_LOG_MAX_RESOURCE_IDS = 3
    event = record(patient, resource_ids=range(10))
    assert event.resource_ids == ["0", "1", "2"]
    assert event.query == {"resource_count": 10}


def test_one_insert_per_record(patient, django_assert_max_num_queries):
    record(patient)
    # savepoint, (PostgreSQL: advisory lock), chain head, insert, release
    with django_assert_max_num_queries(5) as captured:
        record(patient)
    writes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(writes) == 1


def test_rows_chain_to_each_other(patient):
    first, second, third = record(patient), record(patient), record(None)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert verify_problems() == []


# --- Append-only in the ORM and the admin --------------------------------------------------------


def test_the_orm_refuses_to_edit_or_delete(patient):
    event = record(patient)
    event.action = AccessAction.DELETE
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AccessEvent.objects.filter(pk=event.pk).update(action="delete")
    with pytest.raises(AppendOnlyError):
        AccessEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AccessEvent.objects.bulk_update([event], ["action"])
    assert AccessEvent.objects.get().action == "sync_write"
    assert verify_problems() == []


def test_the_admin_offers_no_add_change_or_delete(client, patient):
    event = record(patient)
    admin_user = StaffFactory.create(is_superuser=True)
    client.force_login(admin_user)
    assert client.get("/admin/accesslog/accessevent/add/").status_code == 403
    assert client.post(f"/admin/accesslog/accessevent/{event.pk}/delete/").status_code == 403
    response = client.post(f"/admin/accesslog/accessevent/{event.pk}/change/", {"action": "delete"})
    assert response.status_code == 403
    page = client.get(f"/admin/accesslog/accessevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert AccessEvent.objects.get(pk=event.pk).action == "sync_write"


# --- Tamper detection ----------------------------------------------------------------------------


@pytest.fixture
def chain(patient):
    return [record(patient, resource_ids=[f"obs-{i}"]) for i in range(5)]


def test_verify_command_passes_on_an_intact_chain(chain):
    out = io.StringIO()
    call_command("accesslog_verify", stdout=out)
    assert out.getvalue().splitlines() == [
        "OK: 5 rows verified (seq 1..5, from the first row).",
        f"Head: 5:{chain[4].hash}",
    ]


def test_rows_cut_from_the_end_are_caught_against_a_recorded_head(chain):
    recorded = f"5:{chain[4].hash}"
    _bypass_delete(5)
    assert verify_problems() == []  # the chain alone cannot tell a shorter log
    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("accesslog_verify", f"--expect={recorded}", stdout=io.StringIO(), stderr=err)
    assert "TAMPERED: seq 5: recorded earlier, now missing (rows cut from the chain)" in (
        err.getvalue()
    )


def test_a_changed_row_is_detected(chain):
    _bypass_update(3)
    assert verify_problems() == ["seq 3: content does not match its hash (row changed or forged)"]
    err = io.StringIO()
    with pytest.raises(SystemExit) as excinfo:
        call_command("accesslog_verify", stdout=io.StringIO(), stderr=err)
    assert excinfo.value.code == 1
    assert "TAMPERED: seq 3: content does not match its hash" in err.getvalue()


def test_a_deleted_row_is_detected(chain):
    _bypass_delete(3)
    assert verify_problems() == [
        "seq 3..3 missing (rows deleted)",
        "seq 4: does not link to the row before it (row deleted or inserted)",
    ]


def test_an_inserted_row_is_detected(chain, settings):
    # A forger who can write to the database but does not hold the chain key: they link the
    # new row correctly to the head and compute its hash with a key of their own.
    head = AccessEvent.objects.latest("seq")
    values = {name: getattr(head, name) for name in services.HASHED_FIELDS}
    values.update(seq=6, action="read", resource_ids=["forged"])
    settings.ACCESS_LOG_CHAIN_KEY = "attacker-guess"
    forged = services.event_hash(values, head.hash)
    settings.ACCESS_LOG_CHAIN_KEY = ""
    AccessEvent.objects.bulk_create([AccessEvent(**values, prev_hash=head.hash, hash=forged)])
    assert verify_problems() == ["seq 6: content does not match its hash (row changed or forged)"]


def test_a_row_inserted_in_the_middle_is_detected(chain):
    # Renumber the tail to make room (bypassing the guards), then insert a well-formed row.
    _bypass_shift_after(2)
    second = AccessEvent.objects.get(seq=2)
    values = {name: getattr(second, name) for name in services.HASHED_FIELDS}
    values.update(seq=3)
    AccessEvent.objects.bulk_create(
        [
            AccessEvent(
                **values, prev_hash=second.hash, hash=services.event_hash(values, second.hash)
            )
        ]
    )
    problems = verify_problems()
    assert "seq 4: does not link to the row before it (row deleted or inserted)" in problems
    assert "seq 4: content does not match its hash (row changed or forged)" in problems


def _bypass_update(seq: int) -> None:
    """Tampering by someone with database rights (on PostgreSQL: who can disable triggers)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent DISABLE TRIGGER USER")
        cursor.execute("UPDATE accesslog_accessevent SET action = 'read' WHERE seq = %s", [seq])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent ENABLE TRIGGER USER")


def _bypass_delete(seq: int) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent DISABLE TRIGGER USER")
        cursor.execute("DELETE FROM accesslog_accessevent WHERE seq = %s", [seq])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent ENABLE TRIGGER USER")


def _bypass_shift_after(seq: int) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent DISABLE TRIGGER USER")
        # Two steps so the unique constraint on seq never sees a duplicate.
        cursor.execute("UPDATE accesslog_accessevent SET seq = -seq WHERE seq > %s", [seq])
        cursor.execute("UPDATE accesslog_accessevent SET seq = 1 - seq WHERE seq < 0")
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE accesslog_accessevent ENABLE TRIGGER USER")


# --- Retention -----------------------------------------------------------------------------------


def test_purge_keeps_the_rest_verifiable_through_an_anchor(patient, settings):
    settings.ACCESS_LOG_RETENTION_DAYS = 30
    now = timezone.now()
    old = [record(patient, occurred_at=now - timedelta(days=40 - i)) for i in range(3)]
    recent = [record(patient, occurred_at=now - timedelta(days=5)) for _ in range(2)]

    result = services.access_log_purge(now=now)

    assert (result.rows_purged, result.through_seq) == (3, 3)
    assert list(AccessEvent.objects.order_by("seq").values_list("seq", flat=True)) == [4, 5]
    anchor = AccessLogAnchor.objects.get()
    assert (anchor.through_seq, anchor.through_hash, anchor.rows_purged) == (3, old[2].hash, 3)
    report = services.access_log_verify()
    assert (report.ok, report.checked, report.anchor_seq) == (True, 2, 3)
    # Appending continues the chain; purging again finds nothing.
    nxt = record(patient)
    assert (nxt.seq, nxt.prev_hash) == (6, recent[1].hash)
    assert services.access_log_purge(now=now).rows_purged == 0
    assert services.access_log_verify().ok


def test_purge_of_everything_continues_from_the_anchor(patient, settings):
    now = timezone.now()
    last = [record(patient, occurred_at=now - timedelta(days=3000)) for _ in range(2)][-1]
    assert services.access_log_purge(now=now, retention_days=10).rows_purged == 2
    nxt = record(patient)
    assert (nxt.seq, nxt.prev_hash) == (3, last.hash)
    assert services.access_log_verify().ok


def test_a_forged_anchor_hiding_deleted_rows_is_detected(chain):
    # Delete the first two rows and plant an anchor claiming a purge, without the chain key.
    _bypass_delete(1)
    _bypass_delete(2)
    AccessLogAnchor.objects.bulk_create(
        [
            AccessLogAnchor(
                created_at=timezone.now(),
                through_seq=2,
                through_hash=chain[1].hash,
                purged_before=timezone.now(),
                rows_purged=2,
                hash="f" * 64,
            )
        ]
    )
    assert verify_problems() == ["anchor through seq 2: forged or changed"]


def test_deleting_the_first_rows_without_an_anchor_is_detected(chain):
    _bypass_delete(1)
    assert verify_problems() == [
        "seq 1..1 missing (rows deleted)",
        "seq 2: does not link to the row before it (row deleted or inserted)",
    ]


def test_purge_command_and_beat_entry(patient, settings):
    from patientportal.accesslog.tasks import purge

    assert settings.CELERY_BEAT_SCHEDULE["accesslog-purge"]["task"] == "accesslog.purge"
    assert settings.ACCESS_LOG_RETENTION_DAYS == 6 * 366
    record(patient, occurred_at=timezone.now() - timedelta(days=7 * 365))
    record(patient)
    assert purge() == 1
    out = io.StringIO()
    call_command("accesslog_purge", stdout=out)
    assert out.getvalue().startswith("Nothing older than")


# --- The patient's view --------------------------------------------------------------------------


def test_patient_sees_who_when_and_why(api_client_for, patient, settings):
    staff = StaffFactory.create(role="Care team", first_name="Grace", last_name="Hopper")
    other = PatientFactory.create()
    services.access_log_record(
        actor_kind=ActorKind.STAFF,
        actor_user=staff,
        action=AccessAction.READ,
        patient=patient,
        purpose=Purpose.CARE_TEAM_ACCESS,
        resource_type="Patient",
    )
    record(patient, resource_ids=["a", "b", "c"])
    record(other)
    client = api_client_for(patient, scope="audit:read")

    response = client.get("/api/v1/access-log")

    assert response.status_code == 200
    results = response.json()["results"]
    # Opaque ids, not the installation-wide seq (issue #19 item 10).
    public = {seq: access_event_public_id(AccessEvent.objects.get(seq=seq)) for seq in (1, 2)}
    assert [(r["id"], r["action"]) for r in results] == [
        (public[2], "sync_write"),
        (public[1], "read"),
    ]
    assert len(set(public.values())) == 2
    assert all(len(v) == 36 for v in public.values())
    assert results[0]["actor"] == {
        "kind": "system",
        "display": "Automatic sync with your health system",
    }
    assert results[0]["resource_count"] == 3
    assert results[1]["actor"] == {"kind": "staff", "display": "Grace Hopper (Care team)"}
    assert results[1]["purpose"] == "care_team_access"
    # Reading the log is itself logged (after the page was read, so it is not on it).
    own = AccessEvent.objects.latest("seq")
    assert (own.seq, own.action, own.actor_kind, own.patient_id) == (
        4,
        "list",
        "patient",
        patient.pk,
    )
    assert own.resource_ids == ["2", "1"]

    settings.ACCESS_LOG_STAFF_DISPLAY = "role"
    staff_row = client.get("/api/v1/access-log?actor_kind=staff").json()["results"]
    assert [r["actor"]["display"] for r in staff_row] == ["Care team"]
    settings.ACCESS_LOG_STAFF_DISPLAY = "name"
    staff_row = client.get("/api/v1/access-log?actor_kind=staff").json()["results"]
    assert [r["actor"]["display"] for r in staff_row] == ["Grace Hopper"]


def test_patient_view_filters_and_validation(api_client_for, patient):
    record(patient, occurred_at=timezone.now() - timedelta(days=3))
    client = api_client_for(patient, scope="audit:read")
    since = (timezone.now() - timedelta(days=1)).isoformat()
    response = client.get("/api/v1/access-log", {"since": since, "action": "sync_write"})
    assert response.json()["results"] == []
    bad = client.get("/api/v1/access-log?action=peek")
    assert bad.status_code == 400
    assert bad.json()["code"] == "validation_failed"
    assert bad.json()["errors"]["action"][0]["code"] == "invalid_choice"


def test_patient_view_needs_the_audit_scope(api_client_for, patient):
    record(patient)
    response = api_client_for(patient, scope="consent").get("/api/v1/access-log")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


def test_an_unauthenticated_request_writes_nothing(client, patient):
    assert client.get("/api/v1/access-log").status_code == 401
    assert AccessEvent.objects.count() == 0


# --- The auditor's view --------------------------------------------------------------------------


@pytest.fixture
def auditor(client):
    user = StaffFactory.create(role="Auditor", first_name="Ada", last_name="Byron")
    client.force_login(user)
    return user


def test_auditor_list_filters_by_patient_actor_action_and_dates(client, auditor, patient):
    other = PatientFactory.create()
    staff = StaffFactory.create(role="Care team")
    record(patient, occurred_at=timezone.now() - timedelta(days=10))
    services.access_log_record(
        actor_kind=ActorKind.STAFF, actor_user=staff, action="read", patient=patient
    )
    record(other)
    base = "/admin/accesslog/accessevent/"

    def seqs(query: str) -> list[int]:
        response = client.get(base + query)
        assert response.status_code == 200
        return [e.seq for e in response.context["cl"].result_list]

    assert seqs(f"?patient={patient.pk}") == [2, 1]
    assert seqs(f"?actor={staff.pk}") == [2]
    assert seqs("?action__exact=sync_write") == [3, 1]
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    # Since yesterday for this patient: the staff read and the first two page views above (they
    # showed only this patient's rows, so they name the patient; the third showed two patients).
    assert seqs(f"?since={since}&patient={patient.pk}") == [5, 4, 2]
    # Each page view was logged, with the auditor as actor.
    viewed = AccessEvent.objects.filter(actor_user_id=auditor.pk)
    assert viewed.count() == 4
    first = viewed.earliest("seq")
    assert (first.actor_kind, first.actor_role, first.action) == ("staff", "Auditor", "list")
    assert first.patient_id == patient.pk


def test_auditor_exports_csv_and_fhir_auditevent_ndjson(client, auditor, patient):
    record(patient)
    record(PatientFactory.create())
    response = client.get(f"/admin/accesslog/accessevent/export.csv?patient={patient.pk}")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["seq"], r["patient_id"], r["action"]) for r in rows] == [
        ("1", str(patient.pk), "sync_write")
    ]
    export_row = AccessEvent.objects.latest("seq")
    assert (export_row.action, export_row.patient_id) == ("export", patient.pk)
    assert export_row.query == {"format": "csv", "params": ["patient"]}

    response = client.get(f"/admin/accesslog/accessevent/export.ndjson?patient={patient.pk}")
    assert response["Content-Type"] == "application/fhir+ndjson"
    lines = b"".join(response.streaming_content).decode().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        AuditEvent.model_validate(event)  # raises if not a valid R4B AuditEvent
    # The sync row and the CSV export of it (by the auditor) are both this patient's.
    assert [e["id"] for e in events] == ["accessevent-1", "accessevent-3"]
    sync, export = events
    assert sync["action"] == "U"
    assert sync["outcome"] == "0"
    assert sync["entity"][0]["what"] == {"reference": f"Patient/{patient.pk}"}
    assert sync["agent"][0]["who"] == {"display": "fhirlink.sync_connection"}
    assert sync["purposeOfEvent"][0]["coding"][0]["code"] == "ehr_sync"
    assert sync["subtype"] == [
        {"system": "urn:patientportal:accesslog:action", "code": "sync_write"}
    ]
    assert export["agent"][0]["who"]["identifier"]["value"] == str(auditor.pk)
    assert export["agent"][0]["role"] == [{"text": "Auditor"}]


def test_exports_need_the_view_permission(client, patient):
    client.force_login(StaffFactory.create(role="Engagement"))
    record(patient)
    assert client.get("/admin/accesslog/accessevent/export.csv").status_code == 403
    assert AccessEvent.objects.count() == 1


def test_csv_export_neutralises_formulas(client, auditor, patient):
    record(patient, actor_kind=ActorKind.API_CLIENT, actor_label="=HYPERLINK(1)")
    content = b"".join(
        client.get("/admin/accesslog/accessevent/export.csv").streaming_content
    ).decode()
    assert "'=HYPERLINK(1)" in content


def test_admin_verify_page_reports(client, auditor, patient):
    record(patient)
    response = client.get("/admin/accesslog/accessevent/verify/", follow=True)
    assert "Access log intact: 1 rows verified." in [str(m) for m in response.context["messages"]]


# --- Benchmark command ---------------------------------------------------------------------------


def test_benchmark_command_prints_the_table(settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    out = io.StringIO()
    call_command(
        "accesslog_benchmark",
        "--requests=16",
        "--warmup=1",
        "--rows=20",
        "--max-overhead=1000",
        stdout=out,
    )
    text = out.getvalue()
    assert "variant    requests    req/s" in text
    assert "extra writes per request: 1" in text
    assert text.rstrip().endswith("PASS")


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_trigger_refuses_update_and_delete(postgres, patient):
    from django.db.utils import DatabaseError

    event = record(patient)
    with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
        raw_sql("UPDATE accesslog_accessevent SET action = 'read' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
        raw_sql("DELETE FROM accesslog_accessevent WHERE id = %s", [event.pk])
    assert AccessEvent.objects.get().action == "sync_write"
    # The purge's gate only opens the rows it names, only inside its own transaction.
    with transaction.atomic():
        raw_sql("SELECT set_config('accesslog.purge_through_seq', '0', true)", [])
        with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
            raw_sql("DELETE FROM accesslog_accessevent WHERE id = %s", [event.pk])
    anchor = services.access_log_purge(retention_days=-1)
    assert anchor.rows_purged == 1
    with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
        raw_sql("UPDATE accesslog_accessloganchor SET through_hash = 'x'", [])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_concurrent_appends_never_fork_the_chain(postgres):
    patient = PatientFactory.create()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                record(patient)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(AccessEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, 91)
    )
    assert services.access_log_verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_append_outside_a_transaction_takes_two_round_trips(
    postgres, rf, django_assert_num_queries
):
    patient = PatientFactory.create()
    request = rf.get("/", REMOTE_ADDR="2001:db8::1", HTTP_USER_AGENT="ua")
    request.request_id = "req-two-trips"
    first = record(patient)
    with django_assert_num_queries(2):  # BEGIN + lock + head; INSERT + COMMIT
        second = record(patient, request=request, query={"count": 2, "filters": {"a": "b"}})

    stored = AccessEvent.objects.get(seq=2)
    assert stored.pk == second.pk
    assert stored.prev_hash == first.hash
    assert stored.hash == second.hash
    assert stored.patient_id == patient.pk
    assert stored.ip_address == "2001:db8::1"
    assert stored.query == {"count": 2, "filters": {"a": "b"}}
    assert stored.resource_ids == ["obs-1", "obs-2"]
    assert stored.occurred_at == second.occurred_at
    assert services.access_log_verify().ok
    # The connection is back in autocommit with no transaction left open.
    assert connection.get_autocommit() is True
    assert connection.connection.info.transaction_status == 0
