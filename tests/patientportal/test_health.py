"""/healthz: the process is up. /readyz: database and broker reachable."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import Client

from patientportal.core import health


def test_healthz_needs_nothing():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_ready_when_database_and_broker_reachable():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok"},
    }


@pytest.mark.django_db
def test_readyz_fails_when_the_database_is_unreachable(monkeypatch):
    from django.db import connection

    def refuse(*args, **kwargs):
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"database": "unreachable", "broker": "ok"},
        "code": "not_ready",
    }


@pytest.mark.django_db
def test_readyz_fails_when_the_broker_is_unreachable(monkeypatch):
    from patientportal.celery import app

    # A port nothing listens on.
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None, raising=False)
    assert health.broker_ready() is False
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable"}


def test_readyz_refuses_post():
    assert Client().post("/readyz").status_code == 405
