"""Cerner's scope rules for the patient persona (fhir-myrecord's smart-configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from .conf import TenantSwitches

IDENTITY_SCOPES = (
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "openid",
    "profile",
)
# Resource types with patient scopes on the patient-access host (read-type only).
PATIENT_SCOPE_TYPES = (
    "AllergyIntolerance",
    "Appointment",
    "Binary",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Consent",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "FamilyMemberHistory",
    "Goal",
    "Immunization",
    "InsurancePlan",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "NutritionOrder",
    "Observation",
    "Patient",
    "Person",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "Schedule",
    "ServiceRequest",
    "Slot",
    "Specimen",
)
# v2 forms offered: ".rs" except where the live list differs.
V2_FORMS = {"Observation": "s", "Binary": "r", "Media": "r"}


def supported_scopes() -> list[str]:
    out = list(IDENTITY_SCOPES)
    for rtype in PATIENT_SCOPE_TYPES:
        out.append(f"patient/{rtype}.read")
        out.append(f"patient/{rtype}.{V2_FORMS.get(rtype, 'rs')}")
    return sorted(out)


SUPPORTED = frozenset(supported_scopes())


@dataclass(frozen=True)
class ScopeDecision:
    granted: list[str]
    error: str = ""
    error_urn: str = ""


def scopes_filter(
    requested: list[str], *, smart_version: str, access: str, switches: TenantSwitches
) -> ScopeDecision:
    """What Cerner keeps of a requested scope for a client registration (before the patient's say).

    No wildcards; a v2 registration silently drops v1 ``.read`` scopes (and a v1 one drops v2
    forms); ``offline_access``/``online_access`` only when the registration's type of access
    allows; anything unsupported is silently dropped.
    """
    granted: list[str] = []
    for scope in requested:
        if "*" in scope:
            if switches.wildcard_scopes == "reject":
                return ScopeDecision([], "invalid_scope", "scope-wildcard-unsupported")
            continue
        if scope == "patient/Observation.rs" and switches.observation_rs == "as_s":
            scope = "patient/Observation.s"
        if scope not in SUPPORTED:
            continue
        if scope.startswith("patient/"):
            is_v1 = scope.endswith(".read")
            if smart_version == "v2" and is_v1:
                continue
            if smart_version == "v1" and not is_v1:
                continue
        if scope == "offline_access" and access != "offline":
            continue
        if scope == "online_access" and access != "online":
            continue
        if scope not in granted:
            granted.append(scope)
    if "launch/patient" not in requested:
        # Also covers an openid-only standalone authentication, unsupported for patients.
        return ScopeDecision([], "invalid_scope", "launch-patient-required")
    return ScopeDecision(granted)


def untickable(scope: str) -> bool:
    """Scopes the approval page lets the patient untick."""
    return scope.startswith("patient/") or scope in {"offline_access", "online_access"}


def allows(scopes: frozenset[str] | set[str], rtype: str, interaction: str) -> bool:
    """Does a granted scope set allow ``read`` or ``search`` on a resource type?"""
    if f"patient/{rtype}.read" in scopes:
        return True
    letter = "r" if interaction == "read" else "s"
    for scope in scopes:
        if scope.startswith(f"patient/{rtype}."):
            perms = scope.split(".", 1)[1]
            if perms != "read" and letter in perms:
                return True
    return False
