"""Scope rules: Cerner's for the patient persona (fhir-myrecord's smart-configuration), and the
generic SMART App Launch 2.x profile's (wildcards advertised, v1 and v2, granular categories)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .conf import OBSERVATION_CATEGORIES, OBSERVATION_CATEGORY_SYSTEM, TenantSwitches

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
# `user/` scopes on the patient-access host: the same types plus the ones outside the patient's
# compartment that its resources reference (the live list: 145 scopes in all). A reference read
# (Practitioner, Organization, Location) needs one of these, as at the strictest real server.
USER_SCOPE_TYPES = tuple(sorted((*PATIENT_SCOPE_TYPES, "Location", "Organization", "Practitioner")))
# v2 forms offered: ".rs" except where the live list differs.
V2_FORMS = {"Observation": "s", "Binary": "r", "Media": "r"}


def supported_scopes() -> list[str]:
    out = list(IDENTITY_SCOPES)
    for context, types in (("patient", PATIENT_SCOPE_TYPES), ("user", USER_SCOPE_TYPES)):
        for rtype in types:
            out.append(f"{context}/{rtype}.read")
            out.append(f"{context}/{rtype}.{V2_FORMS.get(rtype, 'rs')}")
    return sorted(out)


SUPPORTED = frozenset(supported_scopes())

# The generic profile: every type the FHIR server serves, in patient/ or user/ context.
_GENERIC_SCOPE = re.compile(
    r"^(?P<ctx>patient|user)/(?P<type>[A-Z][A-Za-z]+|\*)\.(?P<perms>read|\*|write|[cruds]+)"
    r"(?:\?(?P<query>.+))?$"
)
_V2_PERMS = "cruds"


def generic_supported_scopes(switches: TenantSwitches) -> list[str]:
    """What the generic profile advertises: identity scopes and wildcards only (the guide says
    a client must not take the list as exhaustive), v1 only in the v1-only variant."""
    wildcards = ["patient/*.read"] if switches.scope_syntax == "v1" else ["patient/*.rs"]
    if switches.scope_syntax == "any":
        wildcards = ["patient/*.rs", "patient/*.read"]
    return [*IDENTITY_SCOPES, *wildcards]


def _generic_resource_scope(scope: str, switches: TenantSwitches, types: frozenset[str]) -> str:
    """The read part of a resource scope the generic server grants ("" drops it)."""
    match = _GENERIC_SCOPE.match(scope)
    if match is None:
        return ""
    rtype, perms, query = match["type"], match["perms"], match["query"] or ""
    if rtype != "*" and rtype not in types:
        return ""
    if perms in {"read", "*", "write"}:
        syntax, kept = "v1", ("read" if perms != "write" else "")
    else:
        if list(perms) != sorted(set(perms), key=_V2_PERMS.index):
            return ""  # letters out of order or repeated: invalid v2 syntax
        syntax, kept = "v2", "".join(p for p in perms if p in "rs")
    allowed = {"any": {"v1", "v2"}, "v1": {"v1"}, "v2": {"v2"}}.get(switches.scope_syntax, set())
    if not kept or syntax not in allowed:
        return ""
    if query:
        # Granular scopes: only category= restrictions (v2), each a known token.
        parts = [part.partition("=") for part in query.split("&")]
        if syntax != "v2" or any(name != "category" or not value for name, _, value in parts):
            return ""
    return f"{match['ctx']}/{rtype}.{kept}" + (f"?{query}" if query else "")


def generic_scopes_filter(
    requested: list[str], *, access: str, switches: TenantSwitches, types: frozenset[str]
) -> ScopeDecision:
    """What the generic server keeps of a request: identity scopes, wildcards (unless the
    tenant drops or rejects them), v1 and/or v2 resource scopes for the types it serves
    (reduced to their read part: the server is read-only), granular ``category=`` scopes."""
    granted: list[str] = []
    for scope in requested:
        if scope in IDENTITY_SCOPES:
            kept = scope
            if (scope == "offline_access" and access != "offline") or (
                scope == "online_access" and access != "online"
            ):
                continue
        else:
            if "*" in scope.partition(".")[0] and switches.wildcard_scopes != "accept":
                if switches.wildcard_scopes == "reject":
                    return ScopeDecision([], "invalid_scope", "scope-wildcard-unsupported")
                continue
            kept = _generic_resource_scope(scope, switches, types)
        if kept and kept not in granted:
            granted.append(kept)
    if "launch/patient" not in requested:
        return ScopeDecision([], "invalid_scope", "launch-patient-required")
    return ScopeDecision(granted)


def category_token(code: str) -> str:
    return f"{OBSERVATION_CATEGORY_SYSTEM}|{code}"


def category_choosable(scope: str) -> bool:
    """A v2 scope that lets the patient share only some Observation categories at consent
    (``patient/Observation.rs`` or ``.s``/``.r``, without a restriction of its own)."""
    match = _GENERIC_SCOPE.match(scope)
    return bool(
        match
        and match["type"] == "Observation"
        and not match["query"]
        and match["perms"] not in {"read", "*", "write"}
    )


def category_narrow(scope: str, ticked: set[str]) -> list[str]:
    """The granted form of a category-choosable scope given the categories the patient ticked:
    unchanged with all of them, one granular scope per category with some, none with none."""
    if set(OBSERVATION_CATEGORIES) <= ticked:
        return [scope]
    return [
        f"{scope}?category={category_token(code)}"
        for code in OBSERVATION_CATEGORIES
        if code in ticked
    ]


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
        if scope.startswith(("patient/", "user/")):
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
    return scope.startswith(("patient/", "user/")) or scope in {"offline_access", "online_access"}


def _perms_allow(perms: str, letter: str) -> bool:
    if perms in {"read", "*"}:
        return True
    return perms not in {"write"} and letter in perms


def allowed_categories(
    scopes: frozenset[str] | set[str], rtype: str, interaction: str
) -> set[str] | None:
    """The category codes a granted scope set limits ``rtype`` to (v2 granular scopes such as
    ``patient/Observation.rs?category=…|laboratory``); None: not limited (or not allowed at
    all: see ``allows``)."""
    letter = "r" if interaction == "read" else "s"
    limited: set[str] = set()
    for scope in scopes:
        head, _, query = scope.partition("?")
        context, _, rest = head.partition("/")
        if context not in {"patient", "user"} or "." not in rest:
            continue
        stype, _, perms = rest.partition(".")
        if stype not in {rtype, "*"} or not _perms_allow(perms, letter):
            continue
        if not query:
            return None
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "category" and value:
                limited.add(value.rsplit("|", 1)[-1])
    return limited


def allows(scopes: frozenset[str] | set[str], rtype: str, interaction: str) -> bool:
    """Does a granted scope set allow ``read`` or ``search`` on a resource type (patient/ or
    user/ context, v1 or v2, wildcards, granular scopes for some of its categories)?"""
    letter = "r" if interaction == "read" else "s"
    for scope in scopes:
        head = scope.partition("?")[0]
        context, _, rest = head.partition("/")
        if context not in {"patient", "user"} or "." not in rest:
            continue
        stype, _, perms = rest.partition(".")
        if stype in {rtype, "*"} and _perms_allow(perms, letter):
            return True
    return False
