"""The patient chart in a real headless Chromium, as a care-team user (screenshot kept)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from patientportal.accesslog.models import AccessEvent
from patientportal.accounts import roles
from tests.factories import TEST_PASSWORD
from tests.fhirlink.test_records_api import binary, document, upsert
from tests.patientportal.test_careteams import World, make_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def one_page_pdf(text: str) -> bytes:
    """A small valid PDF (with a correct xref table) showing one line of text."""
    stream = f"BT /F1 18 Tf 40 140 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


@pytest.fixture
def world(transactional_db: None) -> World:
    # A flush by an earlier transactional test removes the migration-made role groups.
    group, _ = Group.objects.get_or_create(name=roles.CARE_TEAM)
    for name in roles.ROLE_PERMISSIONS[roles.CARE_TEAM]:
        app_label, codename = name.split(".", 1)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )
    world = make_world()
    upsert(world.connection, [document("V-D8", "2024-03-02T12:00:00Z", binary_id="V-B8")])
    upsert(
        world.connection,
        [binary("V-B8", one_page_pdf("Discharge summary: Nancy SmartV"))],
        is_reference=True,
    )
    return world


def test_care_team_user_opens_the_chart_in_chromium(world, live_server, page, screenshot_dir):
    chart = reverse("admin:fhirlink_patient_chart", args=[world.victim.pk])
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{live_server.url}/admin/login/?next={chart}")
    page.fill("input[name=username]", world.staff_a.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#vitals")
    assert page.locator("svg.trend").count() >= 3
    assert "SmartV" in page.content()
    assert page.locator("#documents object[type='application/pdf']").count() == 2
    assert "plain note" in page.locator("#documents").inner_text()
    page.wait_for_timeout(1500)  # let the PDF viewer paint
    path = screenshot_dir / "careteam-patient-chart.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    assert AccessEvent.objects.filter(
        patient_id=world.victim.pk, actor_user_id=world.staff_a.pk, purpose="treatment"
    ).exists()

    # A user of another team, signed in in the same browser, gets the 404 page.
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/?next={chart}")
    page.fill("input[name=username]", world.staff_b.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#break-glass-form")
    assert "SmartV" not in page.content()
    assert "Quixotic" not in page.content()
