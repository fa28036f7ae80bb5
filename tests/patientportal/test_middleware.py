"""Staff sessions end after the idle timeout; patient and anonymous requests are untouched."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import StaffFactory

pytestmark = pytest.mark.django_db


def test_staff_session_expires_after_idle_timeout(settings, monkeypatch):
    settings.STAFF_SESSION_IDLE_TIMEOUT = 600
    staff = StaffFactory.create(is_superuser=True)
    client = Client()
    client.force_login(staff)

    clock = [1_000_000.0]
    monkeypatch.setattr("patientportal.core.middleware.time.time", lambda: clock[0])
    assert client.get("/admin/").status_code == 200

    clock[0] += 599  # active within the window: still signed in
    assert client.get("/admin/").status_code == 200

    clock[0] += 601  # idle past the window: signed out, sent to the login page
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in client.session
