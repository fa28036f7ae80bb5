"""Whitelisted placeholders: nothing else is interpreted."""

from __future__ import annotations

import pytest

from engagement import templating
from engagement.models import Delivery, Device
from engagement.services import patient_reminders_stop
from tests.factories import PatientFactory


def test_render_substitutes_only_whitelisted_names():
    text = "Hi {first_name}, {{literal}} {app_name} on {reminder_date}"
    context = {"first_name": "Nancy", "app_name": "Portal", "reminder_date": "9 March 2026"}
    assert templating.render(text, context) == "Hi Nancy, {literal} Portal on 9 March 2026"


@pytest.mark.parametrize(
    "text",
    ["{user.password}", "{first_name!r}", "{first_name", "{% load x %}", "{0}", "a } b"],
)
def test_anything_else_is_refused(text):
    with pytest.raises(templating.TemplateError):
        templating.placeholders_in(text)


def test_django_template_syntax_is_inert():
    assert templating.render("{{ settings.SECRET_KEY }}", {}) == "{ settings.SECRET_KEY }"


@pytest.mark.django_db
def test_account_deletion_stops_reminders_and_removes_devices():
    from engagement.services import device_register

    patient = PatientFactory.create()
    device_register(patient=patient, platform="fcm", token="x" * 30)
    patient_reminders_stop(patient_id=str(patient.pk))
    assert not Device.objects.filter(patient=patient).exists()
    assert not Delivery.objects.filter(patient=patient).exists()
