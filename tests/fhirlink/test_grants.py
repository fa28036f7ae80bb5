"""Grants that last (issue #20): a scheduled forced refresh keeps every offline grant in use, and
a grant the patient revoked at the health system is found within the check interval."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from fhirlink.models import Connection, ConnectionStatus
from fhirlink.tasks import grants_check, refresh_connection
from tests.fhirlink.conftest import connection_of

pytestmark = pytest.mark.django_db

NOTIFIED: list[str] = []


def record_needs_reauth(*, connection_id: str) -> None:
    NOTIFIED.append(connection_id)


def _last_attempt(connection: Connection, minutes_ago: float | None) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        last_refresh_attempt_at=(
            None if minutes_ago is None else timezone.now() - timedelta(minutes=minutes_ago)
        )
    )


def test_check_picks_only_usable_connections_not_refreshed_within_the_interval(
    consenting_patient, connect, ehr, settings
):
    settings.FHIRLINK_GRANT_CHECK_MINUTES = 55
    settings.FHIRLINK_GRANT_CHECK_TICK_MINUTES = 5
    connection = connection_of(connect(consenting_patient))
    _last_attempt(connection, 10)
    with mock.patch.object(refresh_connection, "apply_async") as enqueue:
        assert grants_check.apply().get() == 0
    enqueue.assert_not_called()

    _last_attempt(connection, 56)
    with mock.patch.object(refresh_connection, "apply_async") as enqueue:
        assert grants_check.apply().get() == 1
    enqueue.assert_called_once_with(args=(str(connection.pk), True), countdown=0)

    # Never refreshed counts as due; a connection that needs reconnecting or holds no refresh
    # token has nothing to check.
    _last_attempt(connection, None)
    with mock.patch.object(refresh_connection, "apply_async") as enqueue:
        assert grants_check.apply().get() == 1
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_REAUTH)
    with mock.patch.object(refresh_connection, "apply_async") as enqueue:
        assert grants_check.apply().get() == 0
    Connection.objects.filter(pk=connection.pk).update(
        status=ConnectionStatus.ACTIVE, refresh_token_blob=None
    )
    with mock.patch.object(refresh_connection, "apply_async") as enqueue:
        assert grants_check.apply().get() == 0
    enqueue.assert_not_called()


def test_check_spreads_the_refreshes_over_one_tick(consenting_patient, connect, ehr, settings):
    settings.FHIRLINK_GRANT_CHECK_TICK_MINUTES = 5
    connection = connection_of(connect(consenting_patient))
    others = []
    for _ in range(3):
        clone = Connection.objects.get(pk=connection.pk)
        clone.pk = None
        clone.fhir_patient_id = ""
        clone.save()
        others.append(clone)
    calls: list[dict[str, Any]] = []
    with mock.patch.object(
        refresh_connection, "apply_async", side_effect=lambda **kw: calls.append(kw)
    ):
        assert grants_check.apply().get() == 4
    assert sorted(c["countdown"] for c in calls) == [0, 67, 135, 202]  # within 270 s


def test_grant_revoked_at_the_health_system_is_found_and_the_patient_told(
    consenting_patient, connect, ehr, settings, django_capture_on_commit_callbacks
):
    settings.FHIRLINK_NEEDS_REAUTH_HANDLERS = ["tests.fhirlink.test_grants.record_needs_reauth"]
    NOTIFIED.clear()
    connection = connection_of(connect(consenting_patient))
    _last_attempt(connection, 60)
    ehr.revoke_grant_at_server()  # the patient revoked the app at the health system
    with (
        django_capture_on_commit_callbacks(execute=True),
        mock.patch.object(
            refresh_connection,
            "apply_async",
            side_effect=lambda args, countdown: refresh_connection.apply(args=args),
        ),
    ):
        assert grants_check.apply().get() == 1
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert connection.last_refresh_error == "invalid_grant"
    assert not connection.has_tokens
    assert [str(connection.pk)] == NOTIFIED


def test_live_grant_is_refreshed_and_kept_in_use(consenting_patient, connect, ehr):
    connection = connection_of(connect(consenting_patient))
    _last_attempt(connection, 60)
    before = timezone.now()
    with mock.patch.object(
        refresh_connection,
        "apply_async",
        side_effect=lambda args, countdown: refresh_connection.apply(args=args),
    ):
        assert grants_check.apply().get() == 1
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.grant_last_used_at is not None
    assert connection.grant_last_used_at >= before
    refreshes = [r for r in ehr.token_requests if r["form"]["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1
