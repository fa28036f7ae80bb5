"""The control matrix: each control, the feature that implements it, the tests that prove it.

A row's tests are the ids it names here plus every test in the repository whose docstring cites
the control ("HIPAA 164.312(a)(1), (d)", "OWASP ASVS 5.0 8.2.1"): the attack suite's tests say
what they prove, and the matrix picks them up without a second list. Each row's result is read
from the JUnit XML of the last run: passed (at least one named test passed, none failed), failed,
or not run.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from .junit import FAILED, JUnitReport, matching, source_cases, test_id_exists, verdict


@dataclass(frozen=True)
class Control:
    framework: str
    ref: str
    title: str
    feature: str
    tests: tuple[str, ...]


HIPAA = "HIPAA 45 CFR 164.312"
DSPT = "NHS DSP Toolkit"
ASVS = "OWASP ASVS 5.0"

T_ACCESSLOG = "tests/patientportal/test_accesslog.py::"
T_PKCE = "tests/patientportal/test_oauth_pkce.py::"
T_LAUNCH = "tests/fhirlink/test_launch.py::"
T_VAULT = "tests/fhirlink/test_vault.py::"
T_CARE = "tests/patientportal/test_careteams.py::"
T_DEPLOY = "tests/test_deploy.py::"
T_PROD = "tests/test_settings_production.py::"
T_ERRORS = "tests/patientportal/test_errors.py::"
T_PAGES = "tests/patientportal/test_accounts_pages.py::"
T_PACK = "tests/patientportal/test_reviewpack.py::"

CONTROLS: tuple[Control, ...] = (
    # --- HIPAA Security Rule, technical safeguards --------------------------------------------
    Control(
        HIPAA,
        "(a)(1)",
        "Access control",
        "Patient API: OAuth scopes per operation (settings.API_SCOPES), a patient reads only "
        "their own rows; admin: least-privilege role groups, care-team row-level scoping.",
        (
            f"{T_ERRORS}test_403_insufficient_scope",
            f"{T_LAUNCH}test_other_patient_cannot_read_connection",
            f"{T_CARE}test_walk_every_admin_url_as_another_team_shows_nothing_of_the_patient",
            f"{T_CARE}test_scope_is_assigned_and_consenting_patients_only",
        ),
    ),
    Control(
        HIPAA,
        "(a)(2)(i)",
        "Unique user identification",
        "One account per person (e-mail login); every access-log row names its actor and "
        "OAuth app; staff accounts cannot act as patients.",
        (
            f"{T_ACCESSLOG}test_a_row_keeps_who_what_whose_why_and_the_request",
            f"{T_PKCE}test_staff_account_cannot_authorize_the_patient_app",
        ),
    ),
    Control(
        HIPAA,
        "(a)(2)(ii)",
        "Emergency access procedure",
        "Break-glass: a time-limited grant with a reason (CARETEAMS_BREAK_GLASS_MINUTES), "
        "logged with purpose emergency; never past the patient's care_team_access consent.",
        (
            f"{T_CARE}test_break_glass_grants_time_limited_emergency_access_and_is_logged",
            "tests/fhirlink/test_admin_chart.py::"
            "test_break_glass_through_the_chart_opens_it_logged_as_emergency_until_expiry",
            "tests/fhirlink/test_admin_chart.py::test_users_without_the_care_team_role_cannot_break_glass",
        ),
    ),
    Control(
        HIPAA,
        "(a)(2)(iii)",
        "Automatic logoff",
        "Staff admin sessions end after STAFF_SESSION_IDLE_TIMEOUT idle; app access tokens "
        "expire (OAUTH2_PROVIDER ACCESS_TOKEN_EXPIRE_SECONDS).",
        (
            "tests/patientportal/test_middleware.py::test_staff_session_expires_after_idle_timeout",
            f"{T_PKCE}test_expired_access_token_is_refused_and_refresh_still_works",
        ),
    ),
    Control(
        HIPAA,
        "(a)(2)(iv)",
        "Encryption and decryption",
        "fhirlink.vault: AES-256-GCM envelope encryption of tokens and secrets, a per-patient "
        "data key for synced payloads, online key rotation.",
        (
            f"{T_VAULT}test_seal_open_roundtrip_and_binding",
            f"{T_VAULT}test_patient_cipher",
            f"{T_VAULT}test_rotation_online_batched_resumable",
            "tests/fhirlink/test_client_auth.py::test_secret_is_sealed_in_the_row",
        ),
    ),
    Control(
        HIPAA,
        "(b)",
        "Audit controls",
        "Every read of patient data writes one access-log row (API, admin, exports, sync); "
        "patients and auditors can review it.",
        (
            "tests/patientportal/test_access_logging_coverage.py",
            f"{T_ACCESSLOG}test_patient_sees_who_when_and_why",
            f"{T_ACCESSLOG}test_auditor_list_filters_by_patient_actor_action_and_dates",
        ),
    ),
    Control(
        HIPAA,
        "(c)(1)",
        "Integrity",
        "The access log and consent history are append-only (ORM and PostgreSQL trigger "
        "refuse edits); synced payloads are stored as received, flagged when invalid.",
        (
            f"{T_ACCESSLOG}test_the_orm_refuses_to_edit_or_delete",
            f"{T_ACCESSLOG}test_postgres_trigger_refuses_update_and_delete",
            f"{T_ACCESSLOG}test_a_changed_row_is_detected",
            "tests/patientportal/test_consent.py::test_history_is_never_edited",
        ),
    ),
    Control(
        HIPAA,
        "(c)(2)",
        "Mechanism to authenticate electronic PHI",
        "HMAC-SHA256 chain over the access log (accesslog_verify), signed purge anchors; "
        "AES-GCM tags with row-bound AAD on every ciphertext.",
        (
            f"{T_ACCESSLOG}test_verify_command_passes_on_an_intact_chain",
            f"{T_ACCESSLOG}test_an_inserted_row_is_detected",
            f"{T_ACCESSLOG}test_a_forged_anchor_hiding_deleted_rows_is_detected",
            f"{T_VAULT}test_seal_open_roundtrip_and_binding",
        ),
    ),
    Control(
        HIPAA,
        "(d)",
        "Person or entity authentication",
        "Patients: OAuth 2.0 code + PKCE S256 (no password grant), lockout after repeated "
        "failures; staff: TOTP in production; EHR: id_token verified against the issuer's JWKS.",
        (
            f"{T_PKCE}test_full_pkce_flow_authorize_token_api_refresh_and_reuse_revokes_family",
            f"{T_PKCE}test_wrong_code_verifier_is_refused",
            f"{T_PAGES}test_lockout_after_repeated_failures_and_unlock_after_cool_off",
            f"{T_LAUNCH}test_id_token_refused",
            f"{T_PROD}test_production_settings_values",
        ),
    ),
    Control(
        HIPAA,
        "(e)(1)",
        "Transmission security",
        "TLS front end (deploy/nginx) with HSTS; secure __Host- cookies; outbound EHR calls "
        "over HTTPS without redirects.",
        (
            f"{T_DEPLOY}test_nginx_terminates_tls_with_modern_settings",
            f"{T_DEPLOY}test_nginx_sends_hsts_and_overwrites_forwarding_headers",
            f"{T_PROD}test_check_deploy_reports_no_issues_with_the_required_environment",
        ),
    ),
    Control(
        HIPAA,
        "(e)(2)(i)",
        "Integrity controls (in transit)",
        "TLS AEAD suites; bearer tokens only in the Authorization header (never a URL); "
        "SMART state single-use and bound to the patient; RFC 9207 issuer checked.",
        (
            f"{T_ERRORS}test_401_token_in_the_query_string_is_not_accepted",
            f"{T_LAUNCH}test_state_replayed",
            f"{T_LAUNCH}test_iss_mismatch",
        ),
    ),
    Control(
        HIPAA,
        "(e)(2)(ii)",
        "Encryption (in transit)",
        "HTTPS everywhere in production (SECURE_SSL_REDIRECT, HSTS one year, preload).",
        (
            f"{T_DEPLOY}test_nginx_terminates_tls_with_modern_settings",
            f"{T_PROD}test_production_settings_values",
        ),
    ),
    # --- NHS Data Security and Protection Toolkit (National Data Guardian standards) -----------
    Control(
        DSPT,
        "1",
        "Personal confidential data: data inventory and flows",
        "This pack's data inventory and data-flow diagram, generated from the models and settings.",
        (f"{T_PACK}test_pack_for_the_demo_sandbox_health_system",),
    ),
    Control(
        DSPT,
        "4",
        "Managing data access: least privilege, logged and reviewable access",
        "Role groups from the roles table, care-team scoping, the access log and its review.",
        (
            f"{T_CARE}test_walk_every_admin_url_as_another_team_shows_nothing_of_the_patient",
            "tests/patientportal/test_accounts_admin.py::test_operator_cannot_grant_privileges",
            f"{T_ACCESSLOG}test_auditor_exports_csv_and_fhir_auditevent_ndjson",
        ),
    ),
    Control(
        DSPT,
        "4 (MFA)",
        "Multi-factor authentication for privileged accounts",
        "STAFF_OTP_REQUIRED is forced on in production: staff sign in with TOTP.",
        (f"{T_PROD}test_production_settings_values",),
    ),
    Control(
        DSPT,
        "6",
        "Responding to incidents: tamper-evident logs without secrets",
        "Log scrubbing, no token in any output, a verifiable access log.",
        (
            "tests/patientportal/test_logging.py::test_filter_scrubs_arguments_and_the_formatted_traceback",
            "tests/fhirlink/test_no_leaks.py::test_tokens_appear_nowhere",
            f"{T_ACCESSLOG}test_verify_command_passes_on_an_intact_chain",
        ),
    ),
    Control(
        DSPT,
        "8",
        "Unsupported systems: component inventory and known vulnerabilities",
        "Pinned dependencies; this pack's CycloneDX SBOM and vulnerability scan.",
        (
            f"{T_DEPLOY}test_builder_installs_exactly_the_pinned_dependencies",
            f"{T_PACK}test_sbom_lists_the_installed_packages",
        ),
    ),
    Control(
        DSPT,
        "9",
        "IT protection: encryption, secure configuration",
        "Vault encryption at rest, TLS in transit, production refuses to start misconfigured.",
        (
            f"{T_VAULT}test_seal_open_roundtrip_and_binding",
            f"{T_PROD}test_each_required_variable_missing_stops_the_process_naming_it",
            f"{T_DEPLOY}test_nginx_terminates_tls_with_modern_settings",
        ),
    ),
    Control(
        DSPT,
        "10",
        "Accountable suppliers: review state and agreements per customer",
        "Per-health-system review state, agreement on file (BAA/DPA), hold flag.",
        (f"{T_PACK}test_a_held_health_system_is_not_available_and_nothing_is_deleted",),
    ),
    # --- OWASP ASVS 5.0 chapters -------------------------------------------------------------
    Control(
        ASVS,
        "V4",
        "API and Web Service",
        "One error shape, strict parsers and body limits, a schema every operation follows.",
        (
            f"{T_ERRORS}test_413_oversized_body",
            f"{T_ERRORS}test_405_method_not_allowed",
            "tests/patientportal/test_schema.py::test_every_api_operation_documents_the_error_responses",
            "tests/security/test_schemathesis.py",
        ),
    ),
    Control(
        ASVS,
        "V6",
        "Authentication",
        "Password validators, lockout (django-axes), uniform failure messages.",
        (
            f"{T_PAGES}test_lockout_after_repeated_failures_and_unlock_after_cool_off",
            f"{T_PAGES}test_wrong_password_and_unknown_address_get_the_same_message",
            f"{T_PAGES}test_signup_refuses_passwords_the_validators_reject",
        ),
    ),
    Control(
        ASVS,
        "V7",
        "Session Management",
        "Staff idle timeout, revocable app sessions, password reset signs apps out.",
        (
            "tests/patientportal/test_middleware.py::test_staff_session_expires_after_idle_timeout",
            "tests/patientportal/test_accounts_api.py::test_revoking_a_session_signs_that_app_out_only",
            f"{T_PAGES}test_password_reset_full_round_trip_signs_apps_out",
        ),
    ),
    Control(
        ASVS,
        "V8",
        "Authorization",
        "Scopes per operation, own-rows-only, care-team scoping in every admin page.",
        (
            f"{T_ERRORS}test_403_insufficient_scope",
            f"{T_LAUNCH}test_other_patient_cannot_read_connection",
            f"{T_CARE}test_walk_every_admin_url_as_another_team_shows_nothing_of_the_patient",
        ),
    ),
    Control(
        ASVS,
        "V9",
        "Self-contained Tokens",
        "id_token signature, issuer, audience, nonce and expiry checked; JWKS refetched once "
        "for an unknown kid.",
        (
            f"{T_LAUNCH}test_id_token_refused",
            f"{T_LAUNCH}test_unknown_kid_after_refetch_is_refused",
        ),
    ),
    Control(
        ASVS,
        "V10",
        "OAuth and OIDC",
        "As client: PKCE S256, single-use state, nonce, RFC 9207 iss; as server: code + PKCE "
        "only, exact redirect URIs, rotating refresh tokens with reuse detection.",
        (
            f"{T_PKCE}test_plain_code_challenge_is_refused_before_the_approval_page",
            f"{T_PKCE}test_password_grant_is_refused",
            f"{T_PKCE}test_unregistered_redirect_uri_is_refused_without_redirecting",
            f"{T_LAUNCH}test_pkce_verifier_mismatch",
            f"{T_LAUNCH}test_state_expired",
        ),
    ),
    Control(
        ASVS,
        "V11",
        "Cryptography",
        "AES-256-GCM only through fhirlink.vault; keys by id, rotation without downtime.",
        (
            f"{T_VAULT}test_errors_carry_nothing",
            f"{T_VAULT}test_settings_provider_validates_keys",
            f"{T_VAULT}test_patient_cipher_encrypts_a_batch_with_distinct_nonces",
        ),
    ),
    Control(
        ASVS,
        "V12",
        "Secure Communication",
        "TLS termination with modern settings, HSTS, forwarding headers overwritten.",
        (
            f"{T_DEPLOY}test_nginx_terminates_tls_with_modern_settings",
            f"{T_DEPLOY}test_nginx_sends_hsts_and_overwrites_forwarding_headers",
        ),
    ),
    Control(
        ASVS,
        "V13",
        "Configuration",
        "Production refuses to start without its secrets or with development values; no "
        "sandbox or demo in production.",
        (
            f"{T_PROD}test_every_missing_variable_is_named_at_once",
            f"{T_PROD}test_demo_seeding_is_refused_in_production",
            f"{T_DEPLOY}test_no_secret_is_baked_into_the_image",
        ),
    ),
    Control(
        ASVS,
        "V14",
        "Data Protection",
        "No token in any output; purge and cryptographic erasure at disconnect.",
        (
            "tests/fhirlink/test_no_leaks.py::test_tokens_appear_nowhere",
            "tests/fhirlink/test_disconnect.py::test_disconnect_with_purge_erases_synced_data",
            "tests/fhirlink/test_admin_chart.py::test_no_token_or_secret_on_any_fhirlink_admin_page",
        ),
    ),
    Control(
        ASVS,
        "V15",
        "Secure Coding and Architecture",
        "Pinned dependencies, an SBOM and a vulnerability scan in this pack.",
        (
            f"{T_DEPLOY}test_builder_installs_exactly_the_pinned_dependencies",
            f"{T_PACK}test_sbom_lists_the_installed_packages",
        ),
    ),
    Control(
        ASVS,
        "V16",
        "Security Logging and Error Handling",
        "JSON logs scrubbed of secrets, errors that leak nothing, the access log.",
        (
            "tests/patientportal/test_logging.py::test_redact_removes_secrets",
            f"{T_ERRORS}test_500_is_json_and_leaks_nothing",
            f"{T_ACCESSLOG}test_a_row_keeps_who_what_whose_why_and_the_request",
        ),
    ),
)

_HIPAA_CITE = re.compile(
    r"164\.312\s*((?:\([a-z0-9]+\))+(?:\s*(?:,|and|or)\s*(?:\([a-z0-9]+\))+)*)"
)
_HIPAA_PART = re.compile(r"(?:\([a-z0-9]+\))+")
_ASVS_CITE = re.compile(r"ASVS\s*(?:5\.0\s*)?((?:V?\d+(?:\.\d+)*)(?:\s*,\s*V?\d+(?:\.\d+)*)*)")


def cited_controls(doc: str) -> set[tuple[str, str]]:
    """(framework, ref) pairs a docstring cites (refs as in CONTROLS; ASVS by chapter)."""
    text = " ".join(doc.split())
    cited: set[tuple[str, str]] = set()
    for match in _HIPAA_CITE.finditer(text):
        for part in _HIPAA_PART.findall(match.group(1)):
            cited.add((HIPAA, part))
    for match in _ASVS_CITE.finditer(text):
        for item in match.group(1).split(","):
            chapter = item.strip().lstrip("V").split(".", 1)[0]
            if chapter:
                cited.add((ASVS, f"V{chapter}"))
    return cited


@lru_cache(maxsize=4)
def _citations(root: str) -> dict[tuple[str, str], tuple[str, ...]]:
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for file in sorted(Path(root, "tests").rglob("test_*.py")):
        module = file.relative_to(root).as_posix()
        for node_id, doc in _docstrings(file, module):
            for key in cited_controls(doc):
                found[key].append(node_id)
    return {key: tuple(ids) for key, ids in found.items()}


def _docstrings(file: Path, module: str) -> list[tuple[str, str]]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    out: list[tuple[str, str]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            out.append((f"{module}::{node.name}", ast.get_docstring(node) or ""))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(
                    item, ast.FunctionDef | ast.AsyncFunctionDef
                ) and item.name.startswith("test"):
                    out.append(
                        (f"{module}::{node.name}::{item.name}", ast.get_docstring(item) or "")
                    )
    return out


def citations_by_control() -> dict[tuple[str, str], tuple[str, ...]]:
    return _citations(str(settings.BASE_DIR))


def _row_citations(control: Control, cited: dict[tuple[str, str], tuple[str, ...]]) -> list[str]:
    ids: list[str] = []
    for (framework, ref), node_ids in cited.items():
        if framework != control.framework:
            continue
        # A citation of "(e)(2)" covers the rows under it; "(a)(1)" only its own row.
        if ref == control.ref or control.ref.startswith(ref):
            ids.extend(node_ids)
    return ids


def control_matrix(*, report: JUnitReport) -> dict[str, Any]:
    cited = citations_by_control()
    rows: list[dict[str, Any]] = []
    for control in CONTROLS:
        test_ids = list(dict.fromkeys([*control.tests, *_row_citations(control, cited)]))
        tests = []
        for test_id in test_ids:
            cases = matching(report, test_id)
            tests.append(
                {
                    "id": test_id,
                    "in_repository": test_id_exists(test_id),
                    "result": verdict(cases) if report.loaded else "no results",
                    "cases": len(cases),
                    "cited_in_docstring": test_id not in control.tests,
                }
            )
        results = [t["result"] for t in tests]
        if not report.loaded:
            result = "no results"
        elif FAILED in results:
            result = FAILED
        elif "passed" in results:
            result = "passed"
        else:
            result = "not run"
        rows.append(
            {
                "framework": control.framework,
                "ref": control.ref,
                "title": control.title,
                "feature": control.feature,
                "tests": tests,
                "result": result,
            }
        )
    return {"junit": report.summary(), "rows": rows}


def attack_suite(*, report: JUnitReport, path: str = "tests/security") -> dict[str, Any]:
    """Every test in the attack suite, what it attacks (its docstring) and its last result."""
    cases: list[dict[str, Any]] = []
    for case in source_cases(path):
        results = matching(report, case.node_id)
        cases.append(
            {
                "id": case.node_id,
                "attack": case.doc,
                "result": verdict(results) if report.loaded else "no results",
                "runs": len(results),
            }
        )
    summary: dict[str, int] = defaultdict(int)
    for row in cases:
        summary[row["result"]] += 1
    return {"path": path, "cases": cases, "summary": dict(summary)}
