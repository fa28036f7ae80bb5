"""The security-review pack (issue #23): generated from the running system for the demo's
sandbox health system, its control matrix read from a JUnit XML, and the per-customer review
state and hold in the admin. The vulnerability scan is mocked: tests never reach the internet."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import timedelta
from io import StringIO
from pathlib import Path
from xml.sax.saxutils import quoteattr

import django
import pytest
import responses
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.utils import timezone

from fhirlink.demo import DEMO_SLUG
from fhirlink.exceptions import EhrUnavailable
from fhirlink.models import Connection, HealthSystem, LaunchAttempt
from fhirlink.services.launch import connection_start
from patientportal.accesslog.models import AccessAction, ActorKind
from patientportal.accesslog.services import access_log_record
from patientportal.accounts.demo import DEMO_PATIENT_EMAIL
from patientportal.accounts.models import Patient
from patientportal.accounts.roles import OPERATOR
from patientportal.consent.models import ConsentDocument, Purpose
from patientportal.consent.services import consent_grant
from patientportal.reviewpack.models import ReviewPack
from patientportal.reviewpack.services import controls, junit, roles, sbom, scopes
from patientportal.reviewpack.services.evidence import access_log_evidence
from patientportal.reviewpack.services.pack import review_pack_build
from patientportal.reviewpack.services.review import health_system_hold_set
from patientportal.reviewpack.services.settings_audit import security_settings
from tests.factories import PatientFactory, StaffFactory

pytestmark = pytest.mark.django_db

HIPAA_ROWS = [
    "(a)(1)",
    "(a)(2)(i)",
    "(a)(2)(ii)",
    "(a)(2)(iii)",
    "(a)(2)(iv)",
    "(b)",
    "(c)(1)",
    "(c)(2)",
    "(d)",
    "(e)(1)",
    "(e)(2)(i)",
    "(e)(2)(ii)",
]
DEMO_SCOPES = [
    "launch/patient",
    "openid",
    "fhirUser",
    "offline_access",
]
# Read when a record refers to them, so requested too (fhirlink.services.discovery).
REFERENCE_SCOPES = [
    "patient/Practitioner.rs",
    "patient/Organization.rs",
    "patient/Location.rs",
    "patient/Medication.rs",
]


def junit_xml(path: Path, results: dict[str, str]) -> Path:
    """A pytest-style JUnit file: {node id: passed|failed|skipped}."""
    cases = []
    for node_id, outcome in results.items():
        module, *rest = node_id.split("::")
        classname = ".".join([module.removesuffix(".py").replace("/", "."), *rest[:-1]])
        body = {"failed": "<failure message='boom'/>", "skipped": "<skipped/>"}.get(outcome, "")
        cases.append(
            f"<testcase classname={quoteattr(classname)} name={quoteattr(rest[-1])} "
            f'time="0.1">{body}</testcase>'
        )
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        f'timestamp="2026-12-01T10:00:00">{"".join(cases)}</testsuite></testsuites>'
    )
    return path


def every_named_test() -> list[str]:
    return [t for c in controls.CONTROLS for t in c.tests if "::" in t]


def fake_pip_audit(monkeypatch, *, stdout: str = "", exc: Exception | None = None) -> list:
    """Replaces the pip-audit run (the SBOM generator still runs, locally)."""
    real = sbom._run
    calls: list[list[str]] = []

    def run(args, *, timeout):
        if args[0] == "pip_audit":
            calls.append(args)
            if exc is not None:
                raise exc
            return subprocess.CompletedProcess(args, 1, stdout=stdout, stderr="")
        return real(args, timeout=timeout)

    monkeypatch.setattr(sbom, "_run", run)
    return calls


@pytest.fixture
def demo(db):
    call_command("demo_seed", stdout=StringIO())
    return HealthSystem.objects.get(slug=DEMO_SLUG)


def test_pack_for_the_demo_sandbox_health_system(demo, tmp_path, monkeypatch):
    """`manage.py security_review_pack` writes every file for the demo's sandbox health system,
    keeps the pack with its review state, and every HIPAA 164.312 row names a passing test."""
    tests = every_named_test()
    failing = (
        "tests/patientportal/test_middleware.py::test_staff_session_expires_after_idle_timeout"
    )
    report = junit_xml(
        tmp_path / "junit.xml", {t: "failed" if t == failing else "passed" for t in tests}
    )
    audit_calls = fake_pip_audit(
        monkeypatch,
        stdout=json.dumps(
            {
                "dependencies": [
                    {"name": "django", "version": django.__version__, "vulns": []},
                    {
                        "name": "examplepkg",
                        "version": "1.0",
                        "vulns": [
                            {"id": "PYSEC-0000-1", "fix_versions": ["1.1"], "aliases": ["CVE-1"]}
                        ],
                    },
                ],
                "fixes": [],
            }
        ),
    )
    out = tmp_path / "pack"
    stdout = StringIO()
    call_command("security_review_pack", out=str(out), junit=str(report), stdout=stdout)

    assert len(audit_calls) == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "access_log_sample.csv",
        "attack_suite.csv",
        "controls.csv",
        "dataflow.dot",
        "dataflow.svg",
        "inventory.csv",
        "pack.html",
        "pack.json",
        "pack.pdf",
        "roles.csv",
        "sbom.cdx.json",
        "sbom_components.csv",
        "scopes.csv",
        "settings.csv",
        "vulnerabilities.csv",
    ]
    assert (out / "pack.pdf").read_bytes().startswith(b"%PDF-")
    assert (out / "dataflow.svg").read_text().lstrip().startswith("<?xml")
    raw = (out / "pack.json").read_bytes()
    pack = json.loads(raw)
    assert pack["health_system"]["slug"] == DEMO_SLUG
    assert pack["health_system"]["review"]["state"] == "not_started"

    # Scopes: the launch scopes, then one read scope per configured resource, each with a use.
    rows = pack["scopes"]["rows"]
    assert [r["scope"] for r in rows] == [
        *DEMO_SCOPES,
        *[f"patient/{r}.rs" for r in demo.resources],
        *REFERENCE_SCOPES,
    ]
    assert pack["scopes"]["unused"] == []
    observation = next(r for r in rows if r["resource"] == "Observation")
    assert observation["features"] == [
        "Sync: searched for the patient, incremental (_lastUpdated)",
        "API: GET /api/v1/records/observations (list, detail)",
        "API: GET /api/v1/records/trends",
        "API: GET /api/v1/records/exports (everything, as FHIR)",
    ]

    # Every HIPAA row: at least one test that is in the repository and passed in the JUnit.
    hipaa = [r for r in pack["controls"]["rows"] if r["framework"] == controls.HIPAA]
    assert [r["ref"] for r in hipaa] == HIPAA_ROWS
    for row in hipaa:
        passed = [t for t in row["tests"] if t["result"] == "passed" and t["in_repository"]]
        assert passed, row["ref"]
    logoff = next(r for r in hipaa if r["ref"] == "(a)(2)(iii)")
    assert logoff["result"] == "failed"
    assert next(t for t in logoff["tests"] if t["id"] == failing)["result"] == "failed"
    assert pack["controls"]["junit"]["failed"] == 1

    assert pack["vulnerabilities"]["status"] == "run"
    assert pack["vulnerabilities"]["findings"] == [
        {
            "package": "examplepkg",
            "version": "1.0",
            "id": "PYSEC-0000-1",
            "aliases": ["CVE-1"],
            "fix_versions": ["1.1"],
        }
    ]
    assert pack["sbom"]["status"] == "generated"
    assert pack["diagram"]["error"] == ""
    assert pack["access_log"]["patient"] == str(
        Patient.objects.get(user__email=DEMO_PATIENT_EMAIL).pk
    )
    assert pack["access_log"]["integrity"]["ok"] is True

    stored = ReviewPack.objects.get()
    assert stored.health_system == demo
    assert stored.review_state == "not_started"
    assert stored.sha256 == hashlib.sha256(raw).hexdigest()
    assert stored.content == pack
    html = (out / "pack.html").read_text()
    assert stored.sha256 in html
    assert "Sandbox Health (Cerner demo tenant)" in html
    assert "Security review pack for sandbox-demo" in stdout.getvalue()


def test_every_test_id_the_matrix_names_is_in_the_repository():
    missing = [t for c in controls.CONTROLS for t in c.tests if not junit.test_id_exists(t)]
    assert missing == []


def test_changing_a_roles_permissions_changes_the_pack(db):
    before = roles.roles_and_permissions()
    operator = Group.objects.get(name=OPERATOR)
    operator.permissions.remove(
        Permission.objects.get(content_type__app_label="fhirlink", codename="change_healthsystem")
    )
    after = roles.roles_and_permissions()
    assert after != before
    row = next(r for r in after["staff_roles"] if r["role"] == OPERATOR)
    assert "fhirlink.change_healthsystem" not in row["permissions"]
    assert row["differs_from_roles_table"] == {
        "added_in_database": [],
        "missing_from_database": ["fhirlink.change_healthsystem"],
    }
    health = next(m for m in row["models"] if m["model"] == "fhirlink.HealthSystem")
    assert health["can"] == ["view", "add"]


def test_patient_scopes_list_the_operations_they_open(db):
    by_scope = {s["scope"]: s for s in roles.patient_scopes()}
    assert list(by_scope) == [
        "account",
        "consent",
        "connections",
        "records:read",
        "records:export",
        "audit:read",
        "reminders",
    ]
    assert "GET POST /api/v1/connections" in by_scope["connections"]["operations"]


def test_changing_a_health_systems_scopes_changes_the_pack(demo):
    before = scopes.scopes_requested(health_system=demo)
    demo.resources = ["Patient", "Condition", "Communication"]
    demo.save(update_fields=["resources"])
    after = scopes.scopes_requested(health_system=demo)
    assert [r["scope"] for r in after["rows"]] == [
        *DEMO_SCOPES,
        "patient/Patient.rs",
        "patient/Condition.rs",
        "patient/Communication.rs",
        *REFERENCE_SCOPES,
    ]
    assert after != before
    # Least privilege: a scope nothing uses is called out.
    assert after["unused"] == ["patient/Communication.rs"]


def test_sbom_lists_the_installed_packages(tmp_path):
    summary = sbom.sbom_generate(out_file=tmp_path / "sbom.json")
    assert summary["status"] == "generated"
    assert summary["root"] == "patientportal"
    bom = json.loads((tmp_path / "sbom.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["specVersion"] == "1.6"
    versions = {c["name"].lower(): c["version"] for c in bom["components"]}
    assert versions["django"] == django.__version__
    assert summary["components"] == len(bom["components"])


def test_vulnerability_scan_says_why_it_did_not_run(monkeypatch):
    off = sbom.vulnerability_scan(enabled=False)
    assert (off["status"], off["reason"], off["findings"]) == (
        "not run",
        "--no-vuln-scan given",
        [],
    )
    fake_pip_audit(monkeypatch, exc=subprocess.TimeoutExpired(["pip_audit"], 5))
    late = sbom.vulnerability_scan(enabled=True, timeout=5)
    assert late["status"] == "not run"
    assert late["reason"] == "timed out after 5 s (the vulnerability service unreachable?)"
    fake_pip_audit(monkeypatch, stdout="")
    broken = sbom.vulnerability_scan(enabled=True)
    assert broken["status"] == "not run"
    assert broken["reason"].startswith("pip-audit failed")


def test_junit_results_and_node_ids(tmp_path):
    report = junit.junit_load(
        junit_xml(
            tmp_path / "j.xml",
            {
                "tests/patientportal/test_errors.py::test_405_method_not_allowed": "passed",
                "tests/patientportal/test_errors.py::test_413_oversized_body": "failed",
                "tests/test_deploy.py::test_gunicorn_settings": "skipped",
            },
        )
    )
    assert report.summary() == {
        "file": str(tmp_path / "j.xml"),
        "timestamp": "2026-12-01T10:00:00",
        "error": "",
        "cases": 3,
        "passed": 1,
        "failed": 1,
        "skipped": 1,
    }
    file_cases = junit.matching(report, "tests/patientportal/test_errors.py")
    assert junit.verdict(file_cases) == "failed"
    only_pass = junit.matching(
        report, "tests/patientportal/test_errors.py::test_405_method_not_allowed"
    )
    assert junit.verdict(only_pass) == "passed"
    assert junit.verdict(junit.matching(report, "tests/test_deploy.py")) == "skipped"
    assert junit.verdict(junit.matching(report, "tests/nothing.py::test_x")) == "not run"
    assert junit.junit_load(tmp_path / "absent.xml").error == "file not found"


def test_docstring_citations_map_tests_to_controls():
    assert controls.cited_controls(
        "Attack. OWASP ASVS 5.0 8.2.1, 6.4.4 (owner); HIPAA 164.312(a)(1), (d)."
    ) == {
        (controls.HIPAA, "(a)(1)"),
        (controls.HIPAA, "(d)"),
        (controls.ASVS, "V8"),
        (controls.ASVS, "V6"),
    }


def test_settings_deviations_from_production_are_called_out(settings):
    settings.STAFF_OTP_REQUIRED = False
    audit = security_settings()
    assert audit["production_defaults"] == "read"
    rows = {r["setting"]: r for r in audit["rows"]}
    assert (
        rows["STAFF_OTP_REQUIRED"]["value"],
        rows["STAFF_OTP_REQUIRED"]["production_default"],
    ) == (
        False,
        True,
    )
    assert rows["STAFF_OTP_REQUIRED"]["deviation"] is True
    assert rows["SESSION_COOKIE_HTTPONLY"]["deviation"] is False
    assert rows["SECURE_HSTS_SECONDS"]["production_default"] == 31536000
    assert rows["ACCESS_LOG_CHAIN_KEY"]["production_default"] == "set"
    assert "STAFF_OTP_REQUIRED" in audit["deviations"]
    assert "SESSION_COOKIE_HTTPONLY" not in audit["deviations"]


def test_access_log_sample_and_integrity(db):
    patient = PatientFactory.create()
    for action in (AccessAction.READ, AccessAction.LIST):
        access_log_record(
            actor_kind=ActorKind.PATIENT,
            action=action,
            patient=patient,
            resource_type="Observation",
            resource_ids=["1", "2"],
        )
    evidence = access_log_evidence(patient=patient)
    assert [(e["action"], e["actor"], e["records"]) for e in evidence["sample"]] == [
        ("list", "You", 2),
        ("read", "You", 2),
    ]
    assert evidence["integrity"]["ok"] is True
    assert evidence["integrity"]["rows_checked"] >= 2
    assert "ip_address" not in evidence["sample"][0]
    none = access_log_evidence(patient=None)
    assert none["sample"] == []
    assert none["reason"].startswith("no synthetic patient")


def _consenting_patient() -> Patient:
    patient = PatientFactory.create()
    document, _ = ConsentDocument.objects.get_or_create(
        purpose=Purpose.EHR_SYNC,
        version=1,
        language="en",
        defaults={
            "title": "Sync my record",
            "body": "We copy your record.",
            "effective_at": timezone.now() - timedelta(days=1),
        },
    )
    consent_grant(patient=patient, purpose=Purpose.EHR_SYNC, version=document.version)
    return patient


def test_a_held_health_system_is_not_available_and_nothing_is_deleted(demo, api_client_for):
    patient = _consenting_patient()
    existing = Connection.objects.create(patient=patient, health_system=demo, status="active")
    assert health_system_hold_set(health_system=demo, hold=True, reason="BAA not signed") is True
    demo.refresh_from_db()
    assert (demo.on_hold, demo.hold_reason, demo.held_at is not None) == (
        True,
        "BAA not signed",
        True,
    )
    api = api_client_for(patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(demo.pk)}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "health_system_not_available_yet"
    assert response.json()["message"] == "This health system is not available yet."
    # Nothing was started, nothing deleted.
    assert LaunchAttempt.objects.count() == 0
    assert list(Connection.objects.values_list("pk", "status")) == [(existing.pk, "active")]
    assert HealthSystem.objects.filter(pk=demo.pk).exists()
    # Released, the same request gets past the hold (to discovery, which no server answers here).
    assert health_system_hold_set(health_system=demo, hold=False) is True
    with responses.RequestsMock(), pytest.raises(EhrUnavailable):
        connection_start(patient=patient, health_system_id=demo.pk)
    demo.refresh_from_db()
    assert (demo.on_hold, demo.hold_reason, demo.held_at) == (False, "", None)


def test_admin_review_state_hold_and_stored_pack(demo, client, monkeypatch):
    fake_pip_audit(monkeypatch, stdout="{}")
    admin_user = StaffFactory.create(is_superuser=True)
    client.force_login(admin_user)
    changelist = "/admin/fhirlink/healthsystem/"
    response = client.post(
        changelist, {"action": "hold", "_selected_action": [str(demo.pk)]}, follow=True
    )
    assert response.status_code == 200
    demo.refresh_from_db()
    assert demo.on_hold is True
    HealthSystem.objects.filter(pk=demo.pk).update(
        review_state="in_review", reviewer="J. Reviewer (CISO office)", agreement_kind="baa"
    )
    response = client.post(
        changelist,
        {"action": "generate_review_pack", "_selected_action": [str(demo.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    stored = ReviewPack.objects.get()
    assert stored.review_state == "in_review"
    assert stored.generated_by == admin_user.get_username()
    assert stored.content["health_system"]["on_hold"] is True
    assert stored.content["health_system"]["review"]["agreement"] == "baa"
    assert stored.content["vulnerabilities"]["status"] == "not run"
    page = client.get(f"/admin/fhirlink/healthsystem/{demo.pk}/change/")
    assert page.status_code == 200
    assert stored.sha256 in page.content.decode()
    download = client.post(
        "/admin/reviewpack/reviewpack/",
        {"action": "download_json", "_selected_action": [str(stored.pk)]},
    )
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == stored.sha256


def test_build_without_junit_says_no_results(demo, monkeypatch):
    fake_pip_audit(monkeypatch)
    pack = review_pack_build(health_system=demo, junit_path=None, vuln_scan=False)
    matrix = pack.content["controls"]
    assert matrix["junit"]["error"] == "no JUnit XML given"
    assert {r["result"] for r in matrix["rows"]} == {"no results"}


def test_every_retention_setting_the_inventory_names_exists(settings):
    """A renamed or removed setting must not show as 'None' in the pack's data inventory."""
    from patientportal.reviewpack.services.inventory import CATEGORIES

    def missing(name: str) -> bool:
        head, _, key = name.partition(".")  # "OAUTH2_PROVIDER.X": a key of a dict setting
        if not hasattr(settings, head):
            return True
        return bool(key) and key not in getattr(settings, head)

    named = {name for category in CATEGORIES for name in category.retention_settings}
    assert named
    assert sorted(name for name in named if missing(name)) == []
