"""IDOR on every id-bearing route (OWASP ASVS 5.0 V8.2.2, object-level authorization; HIPAA
164.312(a)(1)): patient B, holding every API scope, names each of patient A's objects by id on
every route that takes one, with every method the route allows. Each answer is a 4xx that
reveals nothing of A, and afterwards A's objects are exactly as they were.

The walk enumerates the URL patterns: a new id-bearing route fails this test until it has a
case below."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from oauth2_provider.models import RefreshToken

from patientportal.accounts.models import Patient
from tests.factories import PatientFactory
from tests.patientportal.test_access_logging_coverage import (
    _connection_for,
    _delivery_for,
    _export_for,
    _record_for,
    api_routes,
)

pytestmark = pytest.mark.django_db

# URL arguments that name a kind, not an object (every patient may use the same value).
NOT_OBJECT_IDS = {"purpose", "record_type"}


def _session_for(patient: Patient, mobile_app: Any) -> uuid.UUID:
    family = uuid.uuid4()
    RefreshToken.objects.create(
        user=patient.user,
        application=mobile_app,
        token=secrets.token_urlsafe(24),
        token_family=family,
    )
    return family


def _device_for(patient: Patient) -> uuid.UUID:
    from engagement.services.patients import device_register

    return device_register(patient=patient, platform="fcm", token=secrets.token_hex(40)).pk


def cases(mobile_app: Any) -> dict[str, Callable[[Patient], dict[str, Any]]]:
    deliveries: dict[Any, Any] = {}

    def reminder(patient: Patient) -> dict[str, Any]:
        if patient.pk not in deliveries:  # one reminder of A for the three reminder routes
            deliveries[patient.pk] = _delivery_for(patient).pk
        return {"reminder_id": deliveries[patient.pk]}

    return {
        "accounts-me-session-revoke": lambda p: {"session_id": _session_for(p, mobile_app)},
        "fhirlink-connection-detail": lambda p: {"connection_id": _connection_for(p).pk},
        "fhirlink-connection-sync": lambda p: {"connection_id": _connection_for(p).pk},
        "fhirlink-records-export-detail": lambda p: {"export_id": _export_for(p, ready=False)},
        "fhirlink-records-export-download": lambda p: {"export_id": _export_for(p, ready=True)},
        "fhirlink-records-document-content": lambda p: {
            "record_id": _record_for(p, "DocumentReference").pk
        },
        "fhirlink-records-detail": lambda p: {
            "record_type": "observations",
            "record_id": _record_for(p, "Observation").pk,
        },
        "engagement:device-remove": lambda p: {"device_id": _device_for(p)},
        "engagement:reminder-open": reminder,
        "engagement:reminder-acknowledge": reminder,
        "engagement:reminder-snooze": reminder,
    }


def _fingerprint(patient: Patient) -> dict[str, Any]:
    """What B's requests could change of A's: connections, sessions, devices, reminders."""
    from engagement.models import Delivery, Device
    from fhirlink.models import Connection, SyncedResource, SyncRun

    return {
        "connections": sorted(
            Connection.objects.filter(patient=patient).values_list(
                "pk", "status", "relationship", "label_blob", "updated_at"
            )
        ),
        "runs": SyncRun.objects.filter(connection__patient=patient).count(),
        "records": SyncedResource.objects.filter(patient=patient).count(),
        "sessions": sorted(
            RefreshToken.objects.filter(user=patient.user).values_list("pk", "revoked")
        ),
        "devices": sorted(Device.objects.filter(patient=patient).values_list("pk", flat=True)),
        "reminders": sorted(
            Delivery.objects.filter(patient=patient).values_list(
                "pk", "status", "opened_at", "acknowledged_at", "snoozed_until"
            )
        ),
    }


def _id_routes() -> list[Any]:
    return [
        route for route in api_routes() if set(route.pattern.pattern.converters) - NOT_OBJECT_IDS
    ]


def test_every_id_bearing_route_has_an_idor_case(mobile_app):
    missing = sorted(r.name for r in _id_routes() if r.name not in cases(mobile_app))
    assert missing == []


def test_idor_another_patient_cannot_read_or_change_anything_by_id(api_client_for, mobile_app):
    victim = PatientFactory.create()
    attacker = api_client_for(PatientFactory.create())  # every scope
    table = cases(mobile_app)
    targets = [(route, table[route.name](victim)) for route in _id_routes()]
    before = _fingerprint(victim)
    answered: list[tuple[str, str, int]] = []
    for route, kwargs in targets:
        url = reverse(route.name, kwargs=kwargs)
        for method in ("get", "post", "patch", "put", "delete"):
            if not hasattr(route.view, method):
                continue
            response = getattr(attacker, method)(url, {}, format="json")
            answered.append((route.name, method, response.status_code))
            assert 400 <= response.status_code < 500, (route.name, method, response.content)
            body = response.content.decode(errors="replace")
            assert str(victim.pk) not in body
            assert victim.user.email not in body
    # Every object-level refusal is a 404 (exactly like a missing id) or a 400 on the body.
    assert {code for *_, code in answered} <= {400, 404}
    assert sum(1 for *_, code in answered if code == 404) >= len(targets)
    assert _fingerprint(victim) == before
    # Sanity: the same requests by the owner do reach the objects (the walk tests something).
    owner = api_client_for(victim)
    route, kwargs = next((r, k) for r, k in targets if r.name == "fhirlink-connection-detail")
    assert owner.get(reverse(route.name, kwargs=kwargs)).status_code == 200


def test_idor_expired_or_unknown_ids_answer_like_another_patients(api_client_for):
    """A missing id and another patient's id are indistinguishable (no existence oracle)."""
    victim = PatientFactory.create()
    attacker = api_client_for(PatientFactory.create())
    theirs = attacker.get(
        reverse("fhirlink-connection-detail", kwargs={"connection_id": _connection_for(victim).pk})
    )
    missing = attacker.get(
        reverse("fhirlink-connection-detail", kwargs={"connection_id": uuid.uuid4()})
    )
    assert (theirs.status_code, theirs.json()["code"]) == (
        missing.status_code,
        missing.json()["code"],
    )
    assert theirs.status_code == 404
