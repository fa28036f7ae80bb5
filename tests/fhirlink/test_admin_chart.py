"""The patient chart in the admin: contents, logging, documents, staff actions, break-glass,
and no token or secret on any fhirlink admin page."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from fhirlink.models import Connection, HealthSystem, SyncedResource, SyncRun
from fhirlink.services.registry import health_system_set_secret
from patientportal.accesslog.models import AccessEvent
from patientportal.careteams.models import BreakGlassGrant
from patientportal.consent import services as consent_services
from patientportal.consent.models import Purpose
from tests.factories import StaffFactory
from tests.fhirlink.test_records_api import PDF, document, upsert
from tests.patientportal.test_careteams import World, client_for, make_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: None) -> World:
    return make_world()


def chart_url(world: World) -> str:
    return reverse("admin:fhirlink_patient_chart", args=[world.victim.pk])


def last_event() -> AccessEvent:
    event = AccessEvent.objects.order_by("-seq").first()
    assert event is not None
    return event


def test_chart_shows_the_record_and_writes_one_treatment_row(world):
    client = client_for(world.staff_a)
    before = AccessEvent.objects.count()
    response = client.get(chart_url(world))
    assert response.status_code == 200
    body = response.content.decode()
    for text in (
        "SmartV",  # demographics from the synced Patient
        "Test-Health Health",  # the connection's health system
        "Diabetes mellitus type 2",
        "metformin 500 mg tablet",
        "Penicillin",
        "Latest vital signs",
        "130/85",  # the latest blood pressure
        "Recent results",
        "Timeline",
        "Discharge Summary",
        "plain note",
        '<svg class="trend"',
    ):
        assert text in body, text
    assert body.count('<svg class="trend"') >= 3  # temperature, weight, blood pressure
    assert "cdn" not in body.lower()
    # Read-only: the only forms are the two staff actions per connection (and sign-out).
    actions = sorted(re.findall(r'<form[^>]* action="([^"]+)"', body))
    resync = reverse("admin:fhirlink_patient_chart_resync", args=[world.victim.pk])
    nudge = reverse("admin:fhirlink_patient_chart_nudge", args=[world.victim.pk])
    assert actions == sorted([reverse("admin:logout"), nudge, resync])
    assert AccessEvent.objects.count() == before + 1
    event = last_event()
    assert (event.actor_user_id, event.patient_id, event.purpose, event.action) == (
        world.staff_a.pk,
        world.victim.pk,
        "treatment",
        "read",
    )
    assert event.actor_kind == "staff"
    assert event.resource_type == "PatientChart"
    assert len(event.resource_ids) > 5


def test_chart_of_another_teams_patient_is_404_and_logged_without_the_patient(world):
    client = client_for(world.staff_b)
    response = client.get(chart_url(world))
    assert response.status_code == 404
    assert "SmartV" not in response.content.decode()
    event = last_event()
    assert (event.patient_id, event.outcome, event.actor_user_id) == (
        None,
        "not_found",
        world.staff_b.pk,
    )


def test_pdf_document_is_served_inline_same_origin_with_a_strict_csp(world):
    client = client_for(world.staff_a)
    row = SyncedResource.objects.get(patient=world.victim, fhir_id="V-D1")
    response = client.get(
        reverse("admin:fhirlink_patient_chart_document", args=[world.victim.pk, row.pk])
    )
    assert response.status_code == 200
    assert response.content == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'inline; filename="document-{row.pk}.pdf"'
    assert response["Content-Security-Policy"].startswith("default-src 'none'")
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    event = last_event()
    assert (event.patient_id, event.purpose, event.resource_type, event.resource_ids) == (
        world.victim.pk,
        "treatment",
        "DocumentReference",
        [str(row.pk)],
    )
    # The chart embeds it from the same origin.
    chart = client.get(chart_url(world)).content.decode()
    assert 'type="application/pdf"' in chart
    assert reverse("admin:fhirlink_patient_chart_document", args=[world.victim.pk, row.pk]) in chart


def test_document_of_another_patient_or_team_is_404(world):
    other_row = SyncedResource.objects.get(patient=world.other, fhir_id="O-D1")
    own_row = SyncedResource.objects.get(patient=world.victim, fhir_id="V-D1")
    client = client_for(world.staff_a)
    # Another patient's document under this patient's URL.
    url = reverse("admin:fhirlink_patient_chart_document", args=[world.victim.pk, other_row.pk])
    assert client.get(url).status_code == 404
    # This patient's document for a user of another team.
    url = reverse("admin:fhirlink_patient_chart_document", args=[world.victim.pk, own_row.pk])
    response = client_for(world.staff_b).get(url)
    assert response.status_code == 404
    assert PDF not in response.content
    # A document whose Binary was never synced.
    missing = SyncedResource.objects.get(patient=world.victim, fhir_id="V-D3")
    url = reverse("admin:fhirlink_patient_chart_document", args=[world.victim.pk, missing.pk])
    assert client.get(url).status_code == 404


def test_text_documents_are_shown_escaped(world):
    upsert(
        world.connection,
        [document("V-D9", "2024-03-01T12:00:00Z", inline=b"<script>alert(1)</script> note")],
    )
    body = client_for(world.staff_a).get(chart_url(world)).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; note" in body
    assert "<script>alert(1)" not in body


def test_resync_calls_the_sync_engine_and_is_logged(world):
    client = client_for(world.staff_a)
    url = reverse("admin:fhirlink_patient_chart_resync", args=[world.victim.pk])
    assert client.get(url).status_code == 405
    with mock.patch("fhirlink.sync.runs.sync_request") as sync_request:
        sync_request.return_value = SyncRun(pk="00000000-0000-0000-0000-000000000001")
        response = client.post(url, {"connection": str(world.connection.pk)})
    assert response.status_code == 302
    sync_request.assert_called_once_with(connection_id=world.connection.pk, trigger="staff")
    event = last_event()
    assert (event.patient_id, event.purpose, event.resource_type) == (
        world.victim.pk,
        "treatment",
        "Connection",
    )
    assert event.query["staff_action"] == "resync"


def test_resync_queues_a_real_staff_run(world):
    client = client_for(world.staff_a)
    url = reverse("admin:fhirlink_patient_chart_resync", args=[world.victim.pk])
    client.post(url, {"connection": str(world.connection.pk)})
    assert list(SyncRun.objects.filter(connection=world.connection).values_list("trigger")) == [
        ("staff",)
    ]


def test_reconnect_nudge_calls_engagement_and_is_logged(world):
    client = client_for(world.staff_a)
    url = reverse("admin:fhirlink_patient_chart_nudge", args=[world.victim.pk])
    with mock.patch("engagement.services.events.reconnect_reminder_send") as send:
        send.return_value = object()
        response = client.post(url, {"connection": str(world.connection.pk)})
    assert response.status_code == 302
    send.assert_called_once_with(connection_id=world.connection.pk)
    event = last_event()
    assert (event.patient_id, event.purpose, event.query["staff_action"]) == (
        world.victim.pk,
        "treatment",
        "reconnect_nudge",
    )


def test_staff_actions_on_another_teams_patient_do_nothing(world):
    client = client_for(world.staff_b)
    with (
        mock.patch("fhirlink.sync.runs.sync_request") as sync_request,
        mock.patch("engagement.services.events.reconnect_reminder_send") as send,
    ):
        for name in ("admin:fhirlink_patient_chart_resync", "admin:fhirlink_patient_chart_nudge"):
            url = reverse(name, args=[world.victim.pk])
            response = client.post(url, {"connection": str(world.connection.pk)})
            assert response.status_code == 404
    sync_request.assert_not_called()
    send.assert_not_called()
    assert not SyncRun.objects.exists()


def test_break_glass_through_the_chart_opens_it_logged_as_emergency_until_expiry(world):
    client = client_for(world.staff_b)
    assert client.get(chart_url(world)).status_code == 404
    # No reason: refused.
    response = client.post(
        reverse("admin:fhirlink_patient_chart_break_glass"),
        {"patient_id": str(world.victim.pk), "reason": "x"},
    )
    assert response.status_code == 400
    assert not BreakGlassGrant.objects.exists()
    response = client.post(
        reverse("admin:fhirlink_patient_chart_break_glass"),
        {"patient_id": str(world.victim.pk), "reason": "Collapsed in clinic, team A unreachable"},
    )
    assert response.status_code == 302
    assert response["Location"] == chart_url(world)
    grant = BreakGlassGrant.objects.get()
    assert (grant.user_id, grant.patient_id) == (world.staff_b.pk, world.victim.pk)
    chart = client.get(chart_url(world))
    assert chart.status_code == 200
    body = chart.content.decode()
    assert "SmartV" in body
    assert 'id="emergency-banner"' in body
    event = last_event()
    assert (event.patient_id, event.purpose, event.actor_user_id) == (
        world.victim.pk,
        "emergency",
        world.staff_b.pk,
    )
    emergency = AccessEvent.objects.filter(patient_id=world.victim.pk, purpose="emergency")
    assert emergency.count() == 2  # the grant and the chart view
    # Expired: gone again.
    BreakGlassGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(chart_url(world)).status_code == 404


def test_break_glass_for_an_unknown_patient_answers_like_any_404(world):
    client = client_for(world.staff_b)
    response = client.post(
        reverse("admin:fhirlink_patient_chart_break_glass"),
        {"patient_id": "2d7c5b4e-0000-4000-8000-000000000000", "reason": "Emergency in the ED"},
    )
    assert response.status_code == 404
    assert not BreakGlassGrant.objects.exists()


def test_users_without_the_care_team_role_cannot_break_glass(world):
    engagement = StaffFactory.create(role="Engagement")
    response = client_for(engagement).post(
        reverse("admin:fhirlink_patient_chart_break_glass"),
        {"patient_id": str(world.victim.pk), "reason": "Just curious about this one"},
    )
    assert response.status_code == 403
    assert not BreakGlassGrant.objects.exists()
    assert client_for(engagement).get(chart_url(world)).status_code == 404


def test_revoked_consent_closes_the_chart_even_for_break_glass(world):
    BreakGlassGrant.objects.create(
        user=world.staff_b,
        patient=world.victim,
        reason="Emergency",
        granted_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=30),
    )
    client = client_for(world.staff_b)
    assert client.get(chart_url(world)).status_code == 200
    consent_services.consent_revoke(patient=world.victim, purpose=Purpose.CARE_TEAM_ACCESS)
    assert client.get(chart_url(world)).status_code == 404
    assert client_for(world.staff_a).get(chart_url(world)).status_code == 404


# --- Hygiene: no token, key or secret on any fhirlink admin page --------------------------------


def test_no_token_or_secret_on_any_fhirlink_admin_page(world):
    secret = "client-secret-do-not-show-9f3b"
    health_system = HealthSystem.objects.get(slug="test-health")
    health_system_set_secret(health_system, secret)
    health_system.save()
    Connection.objects.filter(pk=world.connection.pk).update(
        access_token_blob=b"sealed-access-token-bytes",
        refresh_token_blob=b"sealed-refresh-token-bytes",
        token_key_id="key-id-visible-nowhere",
    )
    health_system.refresh_from_db()
    forbidden: list[Any] = [
        secret,
        "sealed-access-token-bytes",
        "sealed-refresh-token-bytes",
        "key-id-visible-nowhere",
        base64.b64encode(b"sealed-access-token-bytes").decode(),
        bytes(health_system.secret_blob).hex() if health_system.secret_blob else "never",
        "access_token",
        "refresh_token",
        "secret_blob",
    ]
    superuser = StaffFactory.create(is_superuser=True)
    pages = [
        reverse("admin:fhirlink_healthsystem_changelist"),
        reverse("admin:fhirlink_healthsystem_change", args=[health_system.pk]),
        reverse("admin:fhirlink_healthsystem_add"),
        reverse("admin:fhirlink_connection_changelist"),
        reverse("admin:fhirlink_connection_change", args=[world.connection.pk]),
        reverse("admin:fhirlink_syncrun_changelist"),
        chart_url(world),
    ]
    for user in (superuser, world.staff_a):
        client = client_for(user)
        for url in pages:
            response = client.get(url)
            body = response.content.decode()
            shown = [f for f in forbidden if f in body]
            assert shown == [], f"{url} as {user.email} shows {shown}"


def test_the_patient_sees_the_chart_view_in_their_access_log(world, api_client_for):
    client_for(world.staff_a).get(chart_url(world))
    response = api_client_for(world.victim, scope="audit:read").get(reverse("access-log"))
    assert response.status_code == 200
    staff_rows = [
        row for row in response.json()["results"] if row["resource_type"] == "PatientChart"
    ]
    assert len(staff_rows) == 1
    assert staff_rows[0]["purpose"] == "treatment"
    assert staff_rows[0]["actor"]["kind"] == "staff"
    assert staff_rows[0]["action"] == "read"
