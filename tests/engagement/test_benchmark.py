"""The benchmark command, small: batches, several worker processes, no duplicate."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from engagement.models import Delivery
from tests.fixtures.celery_worker import database_url_for

pytestmark = pytest.mark.integration


def test_small_run_delivers_each_patient_once(transactional_db, monkeypatch):
    # Spawned benchmark processes use this test's database.
    monkeypatch.setenv("DATABASE_URL", database_url_for(connection.settings_dict))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "patientportal.settings.test")
    out = io.StringIO()
    call_command(
        "engagement_benchmark",
        "--patients=240",
        "--workers=3",
        "--expand-batch=40",
        "--dispatch-batch=20",
        stdout=out,
    )
    lines = dict(
        (name.strip(), value.strip())
        for name, value in (
            line.rsplit("  ", 1) for line in out.getvalue().splitlines() if "  " in line
        )
    )
    assert lines["cohort (patients)"] == "240"
    assert lines["outbox rows"] == "240"
    assert lines["distinct patients"] == "240"
    assert lines["delivered"] == "240"
    assert lines["duplicates"] == "0"
    per_worker = [int(n.replace(",", "")) for n in lines["dispatch per worker"].split(", ")]
    assert (len(per_worker), sum(per_worker)) == (3, 240)
    assert "No duplicates; every patient got exactly one." in out.getvalue()
    assert Delivery.objects.filter(status="delivered").count() == 240
