"""Engagement fixtures: consent, templates, campaigns, and a clean channel-backend cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, time, timedelta

import pytest
from django.utils import timezone

from engagement import channels
from engagement.models import Audience, Campaign, MessageTemplate
from patientportal.accounts.models import Patient
from patientportal.consent.models import ConsentDocument, Purpose
from patientportal.consent.services import consent_grant


@pytest.fixture(autouse=True)
def _fresh_channel_backends() -> Iterator[None]:
    channels.reset_backends()
    yield
    channels.reset_backends()


@pytest.fixture
def grant_engagement(db: None) -> Callable[[Patient], None]:
    """grant_engagement(patient): the patient accepts the current engagement consent."""

    def grant(patient: Patient) -> None:
        document, _ = ConsentDocument.objects.get_or_create(
            purpose=Purpose.ENGAGEMENT,
            version=1,
            language="en",
            defaults={
                "title": "Reminders",
                "body": "We may send you reminders.",
                "effective_at": timezone.now() - timedelta(days=1),
            },
        )
        consent_grant(patient=patient, purpose=Purpose.ENGAGEMENT, version=document.version)

    return grant


@pytest.fixture
def template(db: None) -> MessageTemplate:
    return MessageTemplate.objects.create(
        name="Check-in",
        title="Hello {first_name}",
        body="Time for your check-in on {reminder_date}.",
    )


@pytest.fixture
def make_campaign(template: MessageTemplate) -> Callable[..., Campaign]:
    def make(**fields: object) -> Campaign:
        values: dict[str, object] = {
            "name": "Campaign",
            "template": template,
            "audience": Audience.ALL_PATIENTS,
            "starts_on": date(2026, 3, 7),
            "send_time": time(9, 0),
            "send_push": False,
            "send_email": False,
            "send_inbox": True,
            "status": Campaign.Status.SCHEDULED,
            "activated_at": timezone.now() - timedelta(days=400),
        }
        values.update(fields)
        return Campaign.objects.create(**values)

    return make
