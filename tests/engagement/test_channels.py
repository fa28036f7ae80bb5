"""Channels against real or faithfully mocked providers: e-mail to a real local SMTP server
(aiosmtpd), FCM HTTP v1 through pyfcm with mocked HTTP (`responses`), APNs over httpx with a
mock transport."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import httpx
import jwt
import pytest
import responses
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.utils import timezone

from engagement import channels, services
from engagement.channels.base import OutgoingMessage, RetryableSendError, TerminalSendError
from engagement.channels.email import EmailChannel
from engagement.channels.push import ApnsClient, FcmClient, PushChannel, collapse_id
from engagement.models import Delivery, Device, Occurrence
from engagement.services.patients import device_register
from tests.factories import PatientFactory

FCM_SEND = "https://fcm.googleapis.com/v1/projects/demo-project/messages:send"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_with: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield collector
    finally:
        controller.stop()


def message(**overrides) -> OutgoingMessage:
    values = {
        "delivery_id": "8b0c1c4e-1111-4222-8333-944445555666",
        "idempotency_key": "7:patient:push",
        "patient_id": "",
        "title": "New reminder",
        "body": "You have a new reminder in Patient Portal. Open the app to read it.",
    }
    values.update(overrides)
    return OutgoingMessage(**values)


class TestEmail:
    def test_sends_through_a_real_smtp_server(self, smtp_server, db):
        patient = PatientFactory.create(user__email="nancy@example.test")
        result = EmailChannel().send(message(patient_id=str(patient.pk)))
        assert len(smtp_server.messages) == 1
        mail_from, rcpt, content = smtp_server.messages[0]
        assert (mail_from, rcpt) == ("no-reply@patientportal.invalid", ["nancy@example.test"])
        parsed = message_from_bytes(content)
        assert parsed["Subject"] == "New reminder"
        assert parsed["Message-ID"] == result.provider_message_id
        assert parsed["Auto-Submitted"] == "auto-generated"
        assert str(parsed.get_payload()).startswith(
            "You have a new reminder in Patient Portal. Open the app to read it."
        )

    def test_a_permanent_refusal_is_terminal(self, smtp_server, db):
        smtp_server.refuse_with = "550 No such user"
        patient = PatientFactory.create()
        with pytest.raises(TerminalSendError) as raised:
            EmailChannel().send(message(patient_id=str(patient.pk)))
        assert raised.value.code == "smtp_recipient_refused"
        assert smtp_server.messages == []

    def test_a_temporary_refusal_is_retried(self, smtp_server, db):
        smtp_server.refuse_with = "451 Try again later"
        patient = PatientFactory.create()
        with pytest.raises(RetryableSendError) as raised:
            EmailChannel().send(message(patient_id=str(patient.pk)))
        assert raised.value.code == "smtp_recipient_deferred"

    def test_no_server_is_retried(self, settings, db):
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
        patient = PatientFactory.create()
        with pytest.raises(RetryableSendError) as raised:
            EmailChannel().send(message(patient_id=str(patient.pk)))
        assert raised.value.code == "smtp_unavailable"

    def test_end_to_end_email_reminder_shows_only_generic_text(
        self, smtp_server, make_campaign, grant_engagement
    ):
        patient = PatientFactory.create(user__email="nancy@example.test", time_zone="UTC")
        grant_engagement(patient)
        services.preferences_update(patient=patient, email=True)
        local = datetime.now(UTC) - timedelta(minutes=1)
        campaign = make_campaign(
            starts_on=local.date(),
            send_time=local.time().replace(second=0, microsecond=0),
            send_email=True,
            send_inbox=False,
        )
        campaign.template.title = "Your HbA1c test"
        campaign.template.save()
        services.occurrences_plan()
        services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
        services.deliveries_dispatch(max_seconds=30)
        row = Delivery.objects.get(campaign=campaign)
        assert row.status == "sent"
        assert len(smtp_server.messages) == 1
        content = smtp_server.messages[0][2].decode()
        assert "HbA1c" not in content
        assert "Subject: New reminder" in content


@pytest.fixture
def service_account_file(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "demo-project",
                "private_key_id": "key-1",
                "private_key": pem,
                "client_email": "push@demo-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": GOOGLE_TOKEN,
            }
        )
    )
    return str(path)


class TestFcm:
    @responses.activate
    def test_sends_a_v1_message_with_collapse_key(self, service_account_file):
        responses.post(GOOGLE_TOKEN, json={"access_token": "ya29.t", "expires_in": 3600})
        responses.post(FCM_SEND, json={"name": "projects/demo-project/messages/42"})
        client = FcmClient(service_account_file=service_account_file, project_id="demo-project")
        outcome = client.send(device_token="fcm-token-1", message=message())
        assert (outcome.ok, outcome.message_id) == (True, "projects/demo-project/messages/42")
        sent = json.loads(responses.calls[-1].request.body or b"")
        assert responses.calls[-1].request.headers["Authorization"] == "Bearer ya29.t"
        assert sent["message"]["token"] == "fcm-token-1"
        assert sent["message"]["notification"] == {
            "title": "New reminder",
            "body": "You have a new reminder in Patient Portal. Open the app to read it.",
        }
        assert sent["message"]["data"] == {
            "delivery_id": "8b0c1c4e-1111-4222-8333-944445555666",
            "reminder_id": "",
        }
        assert sent["message"]["android"] == {"collapse_key": collapse_id("7:patient:push")}

    @pytest.mark.parametrize(
        ("status", "headers", "expected"),
        [
            (404, {}, (False, False, True, "fcm_unregistered")),
            (503, {}, (False, True, False, "fcm_unavailable")),
            (429, {"Retry-After": "30"}, (False, True, False, "fcm_unavailable")),
            (400, {}, (False, False, False, "fcm_invalid")),
        ],
    )
    @responses.activate
    def test_errors_are_classified(self, service_account_file, status, headers, expected):
        responses.post(GOOGLE_TOKEN, json={"access_token": "ya29.t", "expires_in": 3600})
        responses.post(FCM_SEND, status=status, json={"error": {}}, headers=headers)
        client = FcmClient(service_account_file=service_account_file, project_id="demo-project")
        outcome = client.send(device_token="fcm-token-1", message=message())
        assert (outcome.ok, outcome.retryable, outcome.unregistered, outcome.code) == expected
        assert len([c for c in responses.calls if c.request.url == FCM_SEND]) == 1  # no retry here

    @responses.activate
    def test_push_channel_disables_an_unregistered_device(self, service_account_file, db):
        responses.post(GOOGLE_TOKEN, json={"access_token": "ya29.t", "expires_in": 3600})
        responses.post(FCM_SEND, status=404, json={"error": {"status": "NOT_FOUND"}})
        patient = PatientFactory.create()
        device = device_register(patient=patient, platform="fcm", token="stale-token-1")
        client = FcmClient(service_account_file=service_account_file, project_id="demo-project")
        channel = PushChannel(fcm=client, configure=False)
        with pytest.raises(TerminalSendError) as raised:
            channel.send(message(patient_id=str(patient.pk)))
        assert raised.value.code == "fcm_unregistered"
        device.refresh_from_db()
        assert device.disabled_at is not None
        assert channel.available_for(patient_ids=[str(patient.pk)]) == set()


@pytest.fixture
def apns_key():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


class TestApns:
    def make(self, pem, handler):
        return ApnsClient(
            key_pem=pem,
            key_id="KEY123",
            team_id="TEAM456",
            topic="org.patientportal.app",
            transport=httpx.MockTransport(handler),
        )

    def test_posts_an_alert_with_a_signed_provider_token(self, apns_key):
        key, pem = apns_key
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, headers={"apns-id": request.headers["apns-id"]})

        outcome = self.make(pem, handler).send(device_token="ab" * 32, message=message())
        assert (outcome.ok, outcome.message_id) == (True, "8b0c1c4e-1111-4222-8333-944445555666")
        request = seen[0]
        assert str(request.url) == f"https://api.push.apple.com/3/device/{'ab' * 32}"
        assert request.headers["apns-topic"] == "org.patientportal.app"
        assert request.headers["apns-push-type"] == "alert"
        assert request.headers["apns-collapse-id"] == collapse_id("7:patient:push")
        token = request.headers["authorization"].removeprefix("bearer ")
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
        assert claims["iss"] == "TEAM456"
        assert jwt.get_unverified_header(token)["kid"] == "KEY123"
        assert json.loads(request.content) == {
            "aps": {
                "alert": {
                    "title": "New reminder",
                    "body": "You have a new reminder in Patient Portal. Open the app to read it.",
                },
                "sound": "default",
            },
            "delivery_id": "8b0c1c4e-1111-4222-8333-944445555666",
            "reminder_id": "",
        }

    @pytest.mark.parametrize(
        ("status", "reason", "expected"),
        [
            (410, "Unregistered", (False, False, True, "apns_unregistered")),
            (400, "BadDeviceToken", (False, False, True, "apns_unregistered")),
            (503, "ServiceUnavailable", (False, True, False, "apns_503")),
            (429, "TooManyRequests", (False, True, False, "apns_429")),
            (400, "PayloadTooLarge", (False, False, False, "apns_400_PayloadTooLarge")),
        ],
    )
    def test_errors_are_classified(self, apns_key, status, reason, expected):
        _, pem = apns_key
        client = self.make(pem, lambda request: httpx.Response(status, json={"reason": reason}))
        outcome = client.send(device_token="ab" * 32, message=message())
        assert (outcome.ok, outcome.retryable, outcome.unregistered, outcome.code) == expected

    def test_a_network_error_is_retryable(self, apns_key):
        _, pem = apns_key

        def handler(request):
            raise httpx.ConnectError("refused")

        outcome = self.make(pem, handler).send(device_token="ab" * 32, message=message())
        assert (outcome.ok, outcome.retryable, outcome.code) == (False, True, "apns_unreachable")

    def test_push_end_to_end_to_two_devices(self, apns_key, make_campaign, grant_engagement):
        _, pem = apns_key
        seen: list[tuple[str, dict]] = []

        def handler(request):
            seen.append((request.url.path, json.loads(request.content)))
            return httpx.Response(200, headers={"apns-id": request.headers["apns-id"]})

        channels._BACKENDS["push"] = PushChannel(apns=self.make(pem, handler), configure=False)
        patient = PatientFactory.create(time_zone="UTC")
        grant_engagement(patient)
        device_register(patient=patient, platform="apns", token="aa" * 32)
        device_register(patient=patient, platform="apns", token="bb" * 32)
        local = datetime.now(UTC) - timedelta(minutes=1)
        campaign = make_campaign(
            starts_on=local.date(),
            send_time=local.time().replace(second=0, microsecond=0),
            send_push=True,
            send_inbox=True,
        )
        services.occurrences_plan()
        services.occurrence_expand(occurrence_id=Occurrence.objects.get(campaign=campaign).pk)
        services.deliveries_dispatch(max_seconds=30)
        push = Delivery.objects.get(campaign=campaign, channel="push")
        inbox = Delivery.objects.get(campaign=campaign, channel="inbox")
        assert (push.status, push.provider_message_id) == ("sent", str(push.pk))
        assert inbox.status == "delivered"
        assert sorted(path for path, _ in seen) == [
            f"/3/device/{'aa' * 32}",
            f"/3/device/{'bb' * 32}",
        ]
        # The notification opens the inbox item; its text is the generic one.
        assert {payload["reminder_id"] for _, payload in seen} == {str(inbox.pk)}
        assert {payload["aps"]["alert"]["title"] for _, payload in seen} == {"New reminder"}
        assert Device.objects.filter(disabled_at__isnull=True).count() == 2
        assert push.sent_at is not None
        assert push.sent_at <= timezone.now()
