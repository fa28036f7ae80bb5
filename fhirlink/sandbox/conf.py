"""Constants of the sandbox: tenants, test patients, built-in clients, per-tenant switches."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEMO_TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
# The generic SMART 2.x profile's built-in tenant (its realm: /auth/realms/generic, /fhir/generic).
GENERIC_TENANT = "generic"
PROFILE_CERNER = "cerner"
PROFILE_GENERIC = "generic"
PROFILES = (PROFILE_CERNER, PROFILE_GENERIC)
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# The Observation categories the data has, as offered on the generic consent page.
OBSERVATION_CATEGORIES = ("laboratory", "vital-signs", "social-history")
# The label in the per-host token URL, as on Cerner's patient-access host.
TOKEN_HOST = "fhir-myrecord.cerner.com"
REALM = "fhir-myrecord.cerner.com"
ACCESS_TOKEN_SECONDS = 570
AUTH_CODE_SECONDS = 300
AUTH_REQUEST_SECONDS = 1800
OFFLINE_UNUSED_DAYS = 90
ONLINE_SESSION_SECONDS = 12 * 3600
KEY_RETIRE_GRACE_SECONDS = 7 * 86400
SMART_STYLE_URL = "https://smart.cerner.com/styles/smart-v1.json"


@dataclass(frozen=True)
class TestPatient:
    key: str
    ordinal: int
    fhir_id: str
    username: str
    password: str
    given: str
    family: str
    gender: str
    birth_date: str
    large: bool = False
    # Patients this portal login also manages (a parent's child): the patient picker offers them.
    manages: tuple[str, ...] = ()
    # How this patient relates to the one who manages them (HL7 v3 RoleCode), for the picker.
    relationship: str = ""


PATIENTS: tuple[TestPatient, ...] = (
    TestPatient(
        "nancy",
        1,
        "12800101",
        "nancysandbox",
        "Sandbox-Nancy-2026",
        "Nancy",
        "Sandbox",
        "female",
        "1980-08-11",
    ),
    TestPatient(
        "joe",
        2,
        "12800102",
        "joesandbox",
        "Sandbox-Joe-2026",
        "Joe",
        "Sandbox",
        "male",
        "1976-04-29",
    ),
    TestPatient(
        "tim",
        3,
        "12800103",
        "timsandbox",
        "Sandbox-Tim-2026",
        "Tim",
        "Sandbox",
        "male",
        "2012-02-14",
    ),
    TestPatient(
        "hugo",
        4,
        "12800104",
        "hugosandbox",
        "Sandbox-Hugo-2026",
        "Hugo",
        "Largechart",
        "male",
        "1951-11-02",
        large=True,
    ),
    # A parent whose own record is Nancy-sized and who manages her child's record (the generic
    # profile's patient picker; the child has no login of her own).
    TestPatient(
        "parent",
        5,
        "12800105",
        "parentsandbox",
        "Sandbox-Parent-2026",
        "Paula",
        "Proxy",
        "female",
        "1984-03-09",
        manages=("child",),
    ),
    TestPatient(
        "child",
        6,
        "12800106",
        "",
        "",
        "Penny",
        "Proxy",
        "female",
        "2015-07-21",
        relationship="CHILD",
    ),
)
PATIENTS_BY_KEY = {p.key: p for p in PATIENTS}
PATIENTS_BY_ID = {p.fhir_id: p for p in PATIENTS}
PATIENTS_BY_ORDINAL = {p.ordinal: p for p in PATIENTS}
PATIENTS_BY_USERNAME = {p.username: p for p in PATIENTS if p.username}
LARGE_PATIENT = next(p for p in PATIENTS if p.large)

# Built into every tenant (no database row), so the Done-means script needs no registration.
BUILTIN_CLIENTS: dict[str, dict[str, Any]] = {
    "sandbox-smart-check": {
        "redirect_uris": ["http://127.0.0.1:9/smart-client-check/callback"],
        "confidential": False,
        "smart_version": "v2",
        "access": "offline",
        "name": "Sandbox SMART client check",
    }
}


@dataclass
class TenantSwitches:
    """Behaviours CERNER.md marks unverified: one switch each, per tenant.

    Stored in ``SandboxTenant.switches``.

    - ``pkce_required_for_public``: public clients must send an S256 challenge (unverified).
    - ``wildcard_scopes``: ``"drop"`` silently drops ``patient/*.read``; ``"reject"`` fails the
      authorization with ``invalid_scope``.
    - ``observation_rs``: ``"drop"`` (the live list offers ``Observation.s`` and ``.read`` only)
      or ``"as_s"`` (grant ``patient/Observation.s`` for a ``.rs`` request).
    - ``refresh_min_interval_seconds``: refreshing the same grant sooner is throttled (0: never).
    - ``refresh_throttle_status``: 429 (with Retry-After) or 400 (``invalid_request``).
    - ``patient_token_user_fields``: add ``user``/``username`` to the token response (unknown for
      the patient persona).
    - ``online_active_ttl``: add ``active_ttl`` to token responses of online grants.
    - ``refresh_token_rotation``: refresh returns a new refresh token and retires the old one
      (Cerner returns none; rotation under SMART v2 is unverified).
    - ``offline_unused_days``: an offline grant unused this long cannot be refreshed (90).

    The profile (``profile``: ``"cerner"`` or ``"generic"``, a standards-only SMART App Launch
    2.x server) sets the defaults of the others (``PROFILE_DEFAULTS``); these matter mostly to it:

    - ``scope_syntax``: ``"registration"`` (Cerner: the client registration's SMART version; the
      other syntax is dropped), ``"any"`` (v1 and v2), ``"v1"`` (v1 only: ``patient/*.read``
      advertised, v2 scopes dropped), ``"v2"``.
    - ``wildcard_scopes``: also ``"accept"`` (grant ``patient/*.rs`` / ``patient/*.read``).
    - ``iss_parameter``: ``iss`` in every authorization response (RFC 9207), advertised.
    - ``patient_picker``: a login that manages other patients picks whose record to share.
    - ``category_consent``: the consent page lets the patient share only some Observation
      categories (granted as v2 granular scopes).
    - ``proxy_fhir_user``: the fhirUser of a login acting for someone it manages: ``"Patient"``
      (its own record) or ``"RelatedPerson"``.
    - With ``refresh_token_rotation`` a refresh token is single-use: reusing a rotated one fails
      with ``invalid_grant`` and revokes the grant (the whole token family).
    """

    pkce_required_for_public: bool = True
    wildcard_scopes: str = "drop"
    observation_rs: str = "drop"
    refresh_min_interval_seconds: int = 60
    refresh_throttle_status: int = 429
    patient_token_user_fields: bool = False
    online_active_ttl: bool = False
    refresh_token_rotation: bool = False
    offline_unused_days: int = OFFLINE_UNUSED_DAYS
    profile: str = PROFILE_CERNER
    scope_syntax: str = "registration"
    iss_parameter: bool = False
    patient_picker: bool = False
    category_consent: bool = False
    proxy_fhir_user: str = "Patient"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def generic(self) -> bool:
        return self.profile == PROFILE_GENERIC

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"extra"}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TenantSwitches:
        merged = {**PROFILE_DEFAULTS.get(str(raw.get("profile", PROFILE_CERNER)), {}), **raw}
        names = cls.names()
        known = {k: v for k, v in merged.items() if k in names}
        return cls(**known, extra={k: v for k, v in merged.items() if k not in names})


# A standards-only SMART App Launch 2.x server (issue #20): what differs from Cerner by default.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    PROFILE_CERNER: {},
    PROFILE_GENERIC: {
        "scope_syntax": "any",
        "wildcard_scopes": "accept",
        "iss_parameter": True,
        "refresh_token_rotation": True,
        "refresh_min_interval_seconds": 0,
        "patient_picker": True,
        "category_consent": True,
    },
}
