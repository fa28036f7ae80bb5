"""Refresh: proactive, single-flight across workers, throttled, Cerner's missing refresh token,
invalid_grant -> needs_reauth (+ the engagement hook after commit), 5xx -> retry later."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from fhirlink import http
from fhirlink.exceptions import ReauthRequired, RefreshInProgress, RefreshThrottled
from fhirlink.models import Connection, ConnectionStatus
from fhirlink.services.tokens import connection_access_token, connection_refresh, token_open
from fhirlink.tasks import refresh_connection
from tests.fhirlink.conftest import connection_of

pytestmark = pytest.mark.django_db

CALLS: list[str] = []


def record_needs_reauth(*, connection_id: str) -> None:
    CALLS.append(connection_id)


def failing_handler(*, connection_id: str) -> None:
    raise RuntimeError("engagement is down")


def _expire(connection: Connection) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )


def _refresh_requests(ehr) -> list[dict]:
    return [r for r in ehr.token_requests if r["form"]["grant_type"] == "refresh_token"]


def test_fresh_token_is_used_without_refresh(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    token = connection_access_token(connection_id=connection.pk)
    assert token == token_open(connection, "access_token")
    assert _refresh_requests(ehr) == []


def test_proactive_refresh_keeps_old_refresh_token(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    old_access = token_open(connection, "access_token")
    old_refresh = token_open(connection, "refresh_token")
    # Within the margin (120 s) before expiry: refreshed before use.
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() + timedelta(seconds=60)
    )
    token = connection_access_token(connection_id=connection.pk)
    connection.refresh_from_db()
    assert token != old_access
    assert token == token_open(connection, "access_token") == ehr.issued_tokens[-1]
    # Cerner returns no refresh_token on refresh: the original is kept.
    assert token_open(connection, "refresh_token") == old_refresh
    assert len(_refresh_requests(ehr)) == 1
    sent = _refresh_requests(ehr)[0]["form"]
    assert sent == {
        "grant_type": "refresh_token",
        "refresh_token": old_refresh,
        "client_id": "portal-test-client",
    }
    assert connection.last_refreshed_at is not None
    assert connection.grant_last_used_at == connection.last_refreshed_at
    assert connection.refresh_lease_owner == ""
    assert connection.access_token_expires_at is not None
    assert 560 <= (connection.access_token_expires_at - timezone.now()).total_seconds() <= 570


def test_refresh_throttled_within_a_minute(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    assert connection_refresh(connection_id=connection.pk, force=True) == "refreshed"
    # Again at once: no call to the server; the current token is still valid.
    assert connection_refresh(connection_id=connection.pk, force=True) == "throttled"
    assert len(_refresh_requests(ehr)) == 1
    # And if the token had expired meanwhile: refused with a retry-after, still no call.
    _expire(connection)
    with pytest.raises(RefreshThrottled) as excinfo:
        connection_refresh(connection_id=connection.pk)
    assert 1 <= excinfo.value.extra["retry_after"] <= 61
    assert len(_refresh_requests(ehr)) == 1
    # A minute later it goes through.
    Connection.objects.filter(pk=connection.pk).update(
        last_refresh_attempt_at=timezone.now() - timedelta(seconds=61)
    )
    assert connection_refresh(connection_id=connection.pk) == "refreshed"
    assert len(_refresh_requests(ehr)) == 2


def test_invalid_grant_marks_needs_reauth_and_notifies_after_commit(
    consenting_patient, connect, ehr, settings, django_capture_on_commit_callbacks
):
    settings.FHIRLINK_NEEDS_REAUTH_HANDLERS = [
        "tests.fhirlink.test_refresh.failing_handler",
        "tests.fhirlink.test_refresh.record_needs_reauth",
    ]
    CALLS.clear()
    connection = connection_of(connect(consenting_patient))
    ehr.revoke_grant_at_server()
    _expire(connection)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(ReauthRequired),
    ):
        connection_access_token(connection_id=connection.pk)
    assert len(callbacks) == 1
    assert [str(connection.pk)] == CALLS  # the failing handler did not stop the next one
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert connection.last_outcome == "invalid_grant"
    assert connection.last_refresh_error == "invalid_grant"
    assert connection.needs_reauth_at is not None
    assert not connection.has_tokens
    assert connection.token_key_id == ""


def test_needs_reauth_is_shown_by_the_api(consenting_patient, connect, ehr):
    run = connect(consenting_patient)
    connection = connection_of(run)
    ehr.revoke_grant_at_server()
    with pytest.raises(ReauthRequired):
        connection_refresh(connection_id=connection.pk, force=True)
    body = run["api"].get(f"/api/v1/connections/{connection.pk}").json()
    assert body["status"] == "needs_reauth"
    assert body["needs_reauth_at"] is not None


def test_server_error_is_retryable_and_keeps_the_connection(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    old_refresh = token_open(connection, "refresh_token")
    ehr.refresh_status = 503
    _expire(connection)
    with pytest.raises(http.EhrRetryable):
        connection_refresh(connection_id=connection.pk)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.refresh_failures == 1
    assert connection.last_refresh_error == "http_503"
    assert token_open(connection, "refresh_token") == old_refresh
    assert connection.refresh_lease_owner == ""  # the lease was released


def test_refresh_task_retries_retryable_errors(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    ehr.refresh_status = 502
    _expire(connection)
    from celery.exceptions import Retry

    with pytest.raises((Retry, http.EhrRetryable)):
        refresh_connection.apply(args=(str(connection.pk),), throw=True)
    ehr.refresh_status = None
    ehr.revoke_grant_at_server()
    Connection.objects.filter(pk=connection.pk).update(last_refresh_attempt_at=None)
    result = refresh_connection.apply(args=(str(connection.pk),)).get()
    assert result == "connection_needs_reauth"


def test_lease_held_by_another_worker(consenting_patient, connect, ehr, settings):
    settings.FHIRLINK_REFRESH_WAIT_SECONDS = 0
    connection = connection_of(connect(consenting_patient))
    Connection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=timezone.now() + timedelta(seconds=30), refresh_lease_owner="other"
    )
    _expire(connection)
    with pytest.raises(RefreshInProgress):
        connection_refresh(connection_id=connection.pk)
    assert _refresh_requests(ehr) == []
    # A lease whose holder died expires.
    Connection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert connection_refresh(connection_id=connection.pk) == "refreshed"


@pytest.mark.django_db(transaction=True)
def test_one_refresh_across_concurrent_workers(consenting_patient, connect, ehr):
    """Eight threads (own database connections) need a token at once: one refresh call."""
    connection = connection_of(connect(consenting_patient))
    _expire(connection)
    ehr.token_delay = 0.3
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(connection_access_token(connection_id=connection.pk))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(_refresh_requests(ehr)) == 1
    connection.refresh_from_db()
    assert set(results) == {token_open(connection, "access_token")}
