"""Care teams: row-level scoping of care-team staff everywhere in the admin, assignment (by hand,
in bulk, by command), break-glass grants.

The central test walks every admin URL the project has (Django's and ours) as a staff user of
another team and checks that none of them shows anything of the patient."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from fhirlink.models import Connection, SyncedResource
from patientportal.accesslog.models import AccessEvent
from patientportal.accounts import roles
from patientportal.accounts.models import Patient, User
from patientportal.careteams import selectors, services
from patientportal.careteams.models import BreakGlassGrant, CareTeam, CareTeamAssignment
from patientportal.consent import services as consent_services
from patientportal.consent.models import Purpose
from patientportal.core.errors import NotFound, ValidationFailed
from tests.factories import PatientFactory, StaffFactory, UserFactory
from tests.fhirlink.test_records_api import seed_chart
from tests.patientportal.test_access_logging_coverage import ADMIN_SEEDERS
from tests.patientportal.test_consent import make_documents

pytestmark = pytest.mark.django_db


@dataclass
class World:
    victim: Patient  # assigned to team A, consents to care-team access, has a chart
    other: Patient  # assigned to team B
    team_a: CareTeam
    team_b: CareTeam
    staff_a: User
    staff_b: User
    connection: Connection

    def markers(self) -> list[str]:
        """Strings that identify the victim: none may appear on a page for staff_b."""
        return [
            "Quixotic",
            "Zebulon",
            self.victim.user.email,
            str(self.victim.pk),
            str(self.victim.pk)[:8],
            "SmartV",  # the synced Patient resource's family name
            "Diabetes mellitus",
        ]


def make_world() -> World:
    make_documents()
    victim = PatientFactory.create(
        user=UserFactory.create(
            first_name="Zebulon", last_name="Quixotic", email="quixotic@example.test"
        )
    )
    other = PatientFactory.create(user=UserFactory.create(first_name="Olive", last_name="Other"))
    for patient in (victim, other):
        for purpose in (Purpose.EHR_SYNC, Purpose.CARE_TEAM_ACCESS, Purpose.ENGAGEMENT):
            consent_services.consent_grant(patient=patient, purpose=purpose, version=1)
    team_a = CareTeam.objects.create(name="Team A")
    team_b = CareTeam.objects.create(name="Team B")
    staff_a = StaffFactory.create(role=roles.CARE_TEAM, first_name="Alice", last_name="Ateam")
    staff_b = StaffFactory.create(role=roles.CARE_TEAM, first_name="Bob", last_name="Bteam")
    team_a.members.add(staff_a)
    team_b.members.add(staff_b)
    services.care_team_assign(team=team_a, patient_ids=[victim.pk])
    services.care_team_assign(team=team_b, patient_ids=[other.pk])
    connection = seed_chart(victim, prefix="V")
    seed_chart(other, prefix="O", slug="other-health")
    return World(victim, other, team_a, team_b, staff_a, staff_b, connection)


@pytest.fixture
def world(db: None) -> World:
    return make_world()


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_no_markers(world: World, body: str, where: str) -> None:
    leaked = [m for m in world.markers() if m in body]
    assert leaked == [], f"{where} shows {leaked}"


# --- Scope selectors ------------------------------------------------------------------------------


def test_scope_is_assigned_and_consenting_patients_only(world):
    def visible(user: User) -> set[uuid.UUID]:
        scope = selectors.admin_patient_scope(user=user)
        assert scope is not None
        assert scope.purpose == "treatment"
        return set(Patient.objects.filter(pk__in=scope.patient_ids).values_list("pk", flat=True))

    assert visible(world.staff_a) == {world.victim.pk}
    assert visible(world.staff_b) == {world.other.pk}
    consent_services.consent_revoke(patient=world.victim, purpose=Purpose.CARE_TEAM_ACCESS)
    assert visible(world.staff_a) == set()
    superuser = StaffFactory.create(is_superuser=True)
    assert selectors.admin_patient_scope(user=superuser) is None
    # A team member without the role is scoped too.
    member = StaffFactory.create()
    world.team_b.members.add(member)
    assert visible(member) == {world.other.pk}
    # So is anyone given the right to view patients outside the role: no team, no patients.
    ad_hoc = StaffFactory.create()
    ad_hoc.user_permissions.add(Permission.objects.get(codename="view_patient"))
    assert visible(User.objects.get(pk=ad_hoc.pk)) == set()
    # Roles that never see patients are not scoped (auditors read the whole access log).
    assert selectors.admin_patient_scope(user=StaffFactory.create(role=roles.AUDITOR)) is None


# --- Pages ---------------------------------------------------------------------------------------


def test_patient_list_shows_only_own_patients_and_is_logged_as_treatment(world):
    client = client_for(world.staff_a)
    before = AccessEvent.objects.count()
    response = client.get(reverse("admin:accounts_patient_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Quixotic" in body
    assert "Olive" not in body
    assert str(world.other.pk) not in body
    row = AccessEvent.objects.order_by("-seq").first()
    assert AccessEvent.objects.count() == before + 1
    assert row is not None
    assert (row.actor_user_id, row.purpose, row.patient_id, row.action) == (
        world.staff_a.pk,
        "treatment",
        world.victim.pk,
        "list",
    )


def test_change_and_history_pages_of_another_teams_patient_are_404(world):
    client = client_for(world.staff_b)
    for name in ("admin:accounts_patient_change", "admin:accounts_patient_history"):
        response = client.get(reverse(name, args=[world.victim.pk]))
        assert response.status_code == 404, name
        assert_no_markers(world, response.content.decode(), name)
    # The same answer as for a patient that does not exist.
    missing = client.get(reverse("admin:accounts_patient_change", args=[uuid.uuid4()]))
    assert missing.status_code == 404
    # Their own patient opens.
    own = client.get(reverse("admin:accounts_patient_change", args=[world.other.pk]))
    assert own.status_code == 200
    assert "Olive" in own.content.decode()


def test_search_never_matches_an_unassigned_patient(world):
    client = client_for(world.staff_b)
    for term in ("Quixotic", "Zebulon", str(world.victim.pk)):
        response = client.get(reverse("admin:accounts_patient_changelist"), {"q": term})
        assert response.status_code == 200
        assert response.context["cl"].result_count == 0
        body = response.content.decode()
        assert "Quixotic" not in body.replace(f'value="{term}"', "").replace(term, "")
    # Searching their own patient works.
    response = client.get(reverse("admin:accounts_patient_changelist"), {"q": "Olive"})
    assert response.context["cl"].result_count == 1


def test_autocomplete_never_returns_an_unassigned_patient(world, monkeypatch):
    # Give the assignment admin an autocomplete on its patient field, and staff_b the right to
    # use it: the target (PatientAdmin) must still answer within staff_b's scope only.
    monkeypatch.setattr(
        admin.site._registry[CareTeamAssignment], "autocomplete_fields", ["patient"]
    )
    world.staff_b.user_permissions.add(Permission.objects.get(codename="view_careteamassignment"))
    client = client_for(User.objects.get(pk=world.staff_b.pk))

    def search(term: str) -> Any:
        return client.get(
            reverse("admin:autocomplete"),
            {
                "app_label": "careteams",
                "model_name": "careteamassignment",
                "field_name": "patient",
                "term": term,
            },
        )

    for term in ("Quixotic", "Zeb", ""):
        response = search(term)
        assert response.status_code == 200
        ids = [r["id"] for r in response.json()["results"]]
        assert str(world.victim.pk) not in ids
        assert_no_markers(world, response.content.decode(), f"autocomplete {term!r}")
    assert [r["id"] for r in search("Olive").json()["results"]] == [str(world.other.pk)]


def test_raw_id_popup_lists_only_own_patients(world):
    client = client_for(world.staff_b)
    response = client.get(
        reverse("admin:accounts_patient_changelist"), {"_to_field": "id", "_popup": "1"}
    )
    assert response.status_code == 200
    assert_no_markers(world, response.content.decode(), "raw-id popup")
    assert str(world.other.pk) in response.content.decode()


def test_revoking_care_team_access_hides_the_patient_at_once(world):
    client = client_for(world.staff_a)
    url = reverse("admin:accounts_patient_change", args=[world.victim.pk])
    assert client.get(url).status_code == 200
    consent_services.consent_revoke(patient=world.victim, purpose=Purpose.CARE_TEAM_ACCESS)
    assert client.get(url).status_code == 404
    response = client.get(reverse("admin:accounts_patient_changelist"))
    assert "Quixotic" not in response.content.decode()
    chart = client.get(reverse("admin:fhirlink_patient_chart", args=[world.victim.pk]))
    assert chart.status_code == 404
    assert_no_markers(world, chart.content.decode(), "chart after revocation")


def test_unassigning_hides_the_patient(world):
    services.care_team_unassign(team=world.team_a, patient_ids=[world.victim.pk])
    client = client_for(world.staff_a)
    url = reverse("admin:accounts_patient_change", args=[world.victim.pk])
    assert client.get(url).status_code == 404


# --- The walk: every admin URL as a user of another team ---------------------------------------


def _admin_patterns() -> Iterator[tuple[str, URLPattern]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p

    for route, pattern in walk(get_resolver().url_patterns, ""):
        if route.startswith("admin/"):
            yield route, pattern


def _objects_of_victim(model: Any, model_admin: Any, victim: Patient) -> list[Any]:
    """Objects of `model` that belong to the victim (or every object, for models that are
    not about one patient)."""
    field = getattr(model_admin, "access_log_patient_field", None)
    qs = model._default_manager.all()
    if model is Patient:
        return [victim]
    if field:
        lookup = "pk" if field == "pk" else field
        if lookup.endswith("_id") and "__" not in lookup:
            return list(qs.filter(**{lookup: victim.pk})[:3])
        return list(qs.filter(**{lookup: victim})[:3])
    for f in model._meta.get_fields():
        if getattr(f, "related_model", None) is Patient and f.concrete:
            return list(qs.filter(**{f.name: victim})[:3])
    return list(qs[:3])


def _url(route: str, name: str, **kwargs: Any) -> str:
    if name:
        return reverse(f"admin:{name}", kwargs=kwargs)
    for key, value in kwargs.items():  # an unnamed route, e.g. "<path:object_id>/" redirects
        route = re.sub(rf"<(\w+:)?{key}>", str(value), route)
    return "/" + route


def _without_echo(body: str, url: str) -> str:
    """The page minus what the request itself said (a search box shows its own query)."""
    parts = urlsplit(url)
    for _, value in parse_qsl(parts.query):
        body = body.replace(value, "")
    return body.replace(parts.path, "")


def _urls_to_try(world: World) -> list[str]:
    urls: list[str] = []
    victim = world.victim
    document = SyncedResource.objects.get(patient=victim, fhir_id="V-D1")
    registry = admin.site._registry
    for route, pattern in _admin_patterns():
        params = set(pattern.pattern.regex.groupindex)
        name = pattern.name or ""
        model_admin = getattr(pattern.callback, "model_admin", None)
        if not params:
            base = reverse(f"admin:{name}") if name else "/" + route
            urls.append(base)
            if name.endswith("_changelist"):
                urls += [
                    f"{base}?q=Quixotic",
                    f"{base}?q={victim.pk}",
                    f"{base}?_to_field=id&_popup=1",
                    f"{base}?patient={victim.pk}",
                    f"{base}?patient__id__exact={victim.pk}",
                    f"{base}?o=1",
                ]
            if "export" in name:
                urls.append(f"{base}?patient={victim.pk}")
            continue
        if params == {"object_id"} and model_admin is not None:
            for obj in _objects_of_victim(model_admin.model, model_admin, victim):
                urls.append(_url(route, name, object_id=obj.pk))
        elif params == {"app_label"}:
            for app_label in {m._meta.app_label for m in registry}:
                urls.append(reverse(f"admin:{name}", kwargs={"app_label": app_label}))
        elif params == {"content_type_id", "object_id"}:
            ct = ContentType.objects.get_for_model(Patient)
            urls.append(
                reverse(f"admin:{name}", kwargs={"content_type_id": ct.pk, "object_id": victim.pk})
            )
        elif params == {"patient_id"}:
            urls.append(reverse(f"admin:{name}", kwargs={"patient_id": victim.pk}))
        elif params == {"patient_id", "resource_id"}:
            urls.append(
                reverse(
                    f"admin:{name}", kwargs={"patient_id": victim.pk, "resource_id": document.pk}
                )
            )
        elif params == {"id"}:  # password change of a user
            urls.append(reverse(f"admin:{name}", kwargs={"id": victim.user.pk}))
        elif params == {"pk"}:  # a TOTP device's QR code
            from django_otp.plugins.otp_totp.models import TOTPDevice

            device = TOTPDevice.objects.create(user=world.staff_a, name="phone")
            urls.append(_url(route, name, pk=device.pk))
        elif params == {"url"}:  # the catch-all
            urls.append(f"/admin/accounts/patient/{victim.pk}/")
        else:
            pytest.fail(f"the walk does not know how to call {route} ({params}); teach it")
    # Autocomplete on every field that points at a patient.
    for model in registry:
        for f in model._meta.get_fields():
            if getattr(f, "related_model", None) is Patient and f.concrete:
                urls.append(
                    reverse("admin:autocomplete")
                    + f"?app_label={model._meta.app_label}&model_name={model._meta.model_name}"
                    f"&field_name={f.name}&term=Quixotic"
                )
    return urls


def test_walk_every_admin_url_as_another_team_shows_nothing_of_the_patient(world):
    for _label, seeder in ADMIN_SEEDERS.items():
        seeder(world.victim)
    urls = _urls_to_try(world)
    assert len(urls) > 60
    # The walk reaches the chart, its documents and every registered admin's list.
    assert reverse("admin:fhirlink_patient_chart", args=[world.victim.pk]) in urls
    assert reverse("admin:accounts_patient_change", args=[world.victim.pk]) in urls
    assert any("/documents/" in url for url in urls)
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        assert reverse("admin:{}_{}_changelist".format(*info)) in urls
    assignments = set(CareTeamAssignment.objects.values_list("team_id", "patient_id"))
    client = client_for(world.staff_b)
    problems = []
    for url in urls:
        if url == reverse("admin:logout"):
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code not in (200, 302, 400, 403, 404, 405):
                problems.append(f"{method.upper()} {url}: {response.status_code}")
                continue
            body = b"".join(response.streaming_content) if response.streaming else response.content
            text = _without_echo(body.decode("utf-8", "replace"), url)
            leaked = [m for m in world.markers() if m in text]
            if leaked:
                problems.append(f"{method.upper()} {url}: {response.status_code} shows {leaked}")
            if response.status_code == 302 and not response["Location"].startswith("/admin/login"):
                # Django's "<id>/" -> "<id>/change/" redirect echoes the URL; follow it.
                location = response["Location"]
                target = client.get(location)
                if str(world.victim.pk) in location and target.status_code not in (403, 404):
                    problems.append(f"{url} redirects to a {target.status_code} page")
                target_text = _without_echo(target.content.decode("utf-8", "replace"), location)
                if any(m in _without_echo(target_text, url) for m in world.markers()):
                    problems.append(f"{url} redirects to a page that shows the patient")
    assert problems == [], "\n".join(problems)
    # Nothing was changed or granted by the walk's POSTs.
    assert not BreakGlassGrant.objects.filter(user=world.staff_b).exists()
    assert set(CareTeamAssignment.objects.values_list("team_id", "patient_id")) == assignments
    assert Patient.objects.filter(pk=world.victim.pk).exists()


def test_walk_positive_control_team_a_sees_the_patient(world):
    """The walk's markers do appear for the assigned team (the walk can fail)."""
    client = client_for(world.staff_a)
    chart = client.get(reverse("admin:fhirlink_patient_chart", args=[world.victim.pk]))
    assert chart.status_code == 200
    body = chart.content.decode()
    assert "SmartV" in body
    assert "Diabetes mellitus" in body
    page = client.get(reverse("admin:accounts_patient_change", args=[world.victim.pk]))
    assert "Quixotic" in page.content.decode()


# --- Assignment ---------------------------------------------------------------------------------


def test_bulk_assignment_service_is_idempotent_and_reports_unknown_ids(world):
    team = CareTeam.objects.create(name="Bulk")
    unknown = uuid.uuid4()
    added, missing = services.care_team_assign(
        team=team, patient_ids=[world.victim.pk, world.other.pk, unknown]
    )
    assert (added, missing) == (2, [str(unknown)])
    assert services.care_team_assign(team=team, patient_ids=[world.victim.pk]) == (0, [])
    assert team.assignments.count() == 2


def test_assign_command_reads_a_csv(world, tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text(f"patient_id\n{world.victim.pk}\n{world.other.pk}\n")
    out = StringIO()
    call_command("careteam_assign", "Night shift", "--file", str(path), "--create", stdout=out)
    team = CareTeam.objects.get(name="Night shift")
    assert set(team.assignments.values_list("patient_id", flat=True)) == {
        world.victim.pk,
        world.other.pk,
    }
    assert "2 assigned" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("careteam_assign", "No such team", str(world.victim.pk), stdout=out)
    with pytest.raises(CommandError):
        call_command("careteam_assign", "Night shift", "not-a-uuid", stdout=out)


def test_patient_list_action_assigns_selected_patients(world):
    operator = StaffFactory.create(is_superuser=True)
    client = client_for(operator)
    team = CareTeam.objects.create(name="Action team")
    response = client.post(
        reverse("admin:accounts_patient_changelist"),
        {
            "action": "assign_to_care_team",
            "care_team": team.pk,
            "_selected_action": [str(world.victim.pk), str(world.other.pk)],
        },
    )
    assert response.status_code == 302
    assert team.assignments.count() == 2


def test_care_team_users_cannot_assign(world):
    client = client_for(world.staff_b)
    response = client.post(
        reverse("admin:accounts_patient_changelist"),
        {
            "action": "assign_to_care_team",
            "care_team": world.team_b.pk,
            "_selected_action": [str(world.victim.pk)],
        },
    )
    assert response.status_code in (200, 302, 403)
    assert not CareTeamAssignment.objects.filter(team=world.team_b, patient=world.victim).exists()


def test_operator_bulk_assigns_in_the_team_form(world):
    operator = StaffFactory.create(role=roles.OPERATOR)
    client = client_for(operator)
    team = CareTeam.objects.create(name="Form team")
    url = reverse("admin:careteams_careteam_change", args=[team.pk])
    response = client.post(
        url,
        {
            "name": "Form team",
            "description": "",
            "members": [world.staff_b.pk],
            "add_patient_ids": f"{world.victim.pk}, {world.other.pk}",
            "assignments-TOTAL_FORMS": "0",
            "assignments-INITIAL_FORMS": "0",
            "assignments-MIN_NUM_FORMS": "0",
            "assignments-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert team.assignments.count() == 2
    assert list(team.members.all()) == [world.staff_b]


# --- Break-glass ---------------------------------------------------------------------------------


def test_break_glass_grants_time_limited_emergency_access_and_is_logged(world, settings):
    settings.CARETEAMS_BREAK_GLASS_MINUTES = 30
    assert selectors.chart_purpose_for(user=world.staff_b, patient_id=world.victim.pk) is None
    grant = services.break_glass_grant(
        user=world.staff_b, patient_id=world.victim.pk, reason="Unconscious in the ED, no team"
    )
    assert grant.expires_at - grant.granted_at == timedelta(minutes=30)
    row = AccessEvent.objects.order_by("-seq").first()
    assert row is not None
    assert (row.purpose, row.patient_id, row.resource_type, row.actor_user_id) == (
        "emergency",
        world.victim.pk,
        "BreakGlassGrant",
        world.staff_b.pk,
    )
    assert (
        selectors.chart_purpose_for(user=world.staff_b, patient_id=world.victim.pk) == "emergency"
    )
    # It opens the chart only: the admin lists stay assigned-only.
    scope = selectors.admin_patient_scope(user=world.staff_b)
    assert scope is not None
    assert not Patient.objects.filter(pk__in=scope.patient_ids, pk=world.victim.pk).exists()
    # Expiry.
    BreakGlassGrant.objects.filter(pk=grant.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert selectors.chart_purpose_for(user=world.staff_b, patient_id=world.victim.pk) is None


def test_break_glass_needs_a_reason_and_an_existing_consenting_patient(world):
    with pytest.raises(ValidationFailed):
        services.break_glass_grant(user=world.staff_b, patient_id=world.victim.pk, reason="x")
    before = AccessEvent.objects.count()
    with pytest.raises(NotFound):
        services.break_glass_grant(
            user=world.staff_b, patient_id=uuid.uuid4(), reason="Emergency, unknown patient"
        )
    row = AccessEvent.objects.order_by("-seq").first()
    assert AccessEvent.objects.count() == before + 1
    assert row is not None
    assert (row.purpose, row.outcome, row.patient_id) == ("emergency", "not_found", None)
    consent_services.consent_revoke(patient=world.victim, purpose=Purpose.CARE_TEAM_ACCESS)
    with pytest.raises(NotFound):
        services.break_glass_grant(
            user=world.staff_b, patient_id=world.victim.pk, reason="Emergency, no consent"
        )
    assert not BreakGlassGrant.objects.exists()


def test_auditor_sees_break_glass_grants(world):
    services.break_glass_grant(
        user=world.staff_b, patient_id=world.victim.pk, reason="Cardiac arrest, covering"
    )
    auditor = StaffFactory.create(role=roles.AUDITOR)
    client = client_for(auditor)
    response = client.get(reverse("admin:careteams_breakglassgrant_changelist"))
    assert response.status_code == 200
    assert "Bteam" in response.content.decode() or world.staff_b.email in response.content.decode()
    grant = BreakGlassGrant.objects.get()
    page = client.get(reverse("admin:careteams_breakglassgrant_change", args=[grant.pk]))
    assert "Cardiac arrest, covering" in page.content.decode()
    # The emergency rows are in the access log the auditor reads.
    log = client.get(reverse("admin:accesslog_accessevent_changelist"), {"purpose": "emergency"})
    assert log.status_code == 200
    events = list(log.context["cl"].result_list)
    assert [(e.purpose, e.patient_id, e.actor_user_id) for e in events] == [
        ("emergency", world.victim.pk, world.staff_b.pk)
    ]
    assert "EMERGENCY (break-glass)" in log.content.decode()


# --- Demo ---------------------------------------------------------------------------------------


def test_demo_seed_puts_the_demo_patient_in_team_a_only(db):
    from patientportal.accounts import demo as accounts_demo
    from patientportal.careteams import demo

    accounts_demo.seed(StringIO())
    demo.seed(StringIO())
    demo.seed(StringIO())  # idempotent
    patient = Patient.objects.get(user__email="patient@demo.test")
    team_a = CareTeam.objects.get(name="Team A (demo)")
    team_b = CareTeam.objects.get(name="Team B (demo)")
    assert list(team_a.assignments.values_list("patient_id", flat=True)) == [patient.pk]
    assert team_b.assignments.count() == 0
    assert [u.email for u in team_a.members.all()] == ["careteam@demo.test"]
    assert [u.email for u in team_b.members.all()] == ["careteam2@demo.test"]
