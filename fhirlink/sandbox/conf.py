"""Constants of the sandbox: tenants, test patients, built-in clients, per-tenant switches."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEMO_TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
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
)
PATIENTS_BY_KEY = {p.key: p for p in PATIENTS}
PATIENTS_BY_ID = {p.fhir_id: p for p in PATIENTS}
PATIENTS_BY_ORDINAL = {p.ordinal: p for p in PATIENTS}
PATIENTS_BY_USERNAME = {p.username: p for p in PATIENTS}
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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TenantSwitches:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        return cls(**known, extra={k: v for k, v in raw.items() if k not in names})
