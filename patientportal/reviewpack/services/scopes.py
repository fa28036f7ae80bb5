"""The SMART scopes requested from one health system, each with the feature that needs it.

Derived from the code that requests and uses them, never written by hand: the scope list is what
`fhirlink.services.discovery.launch_scopes` (the launch's own choice) computes for the
registration, the types the sync reads by reference included, against its cached discovery
document when there is one; each resource scope's features come from the sync plan
(`fhirlink.services.sync.plan`) and the records API (`fhirlink.records.selectors`). A requested
scope that no feature uses is flagged: least privilege says drop it.
"""

from __future__ import annotations

from typing import Any

from fhirlink.exceptions import EhrMisconfigured
from fhirlink.models import HealthSystem
from fhirlink.records.selectors import RECORD_TYPES, TIMELINE_TYPES
from fhirlink.scopes import BASE_SCOPES
from fhirlink.services.discovery import launch_scopes
from fhirlink.services.sync import plan

BASE_SCOPE_FEATURES: dict[str, str] = {
    "launch/patient": (
        "Patient standalone launch: the health system's login picks the patient, whose FHIR id "
        "is bound to the connection (fhirlink.services.launch)."
    ),
    "openid": (
        "OpenID Connect: the id_token is verified against the issuer's JWKS (signature, issuer, "
        "audience, nonce, expiry) before the connection is accepted (fhirlink.services.oidc)."
    ),
    "fhirUser": (
        "The id_token's fhirUser must be the launched Patient, so one patient's grant cannot be "
        "attached to another's connection (fhirlink.services.oidc)."
    ),
    "offline_access": (
        "Background sync: a refresh token for the scheduled incremental syncs and the grant "
        "keep-alive; stored encrypted, revoked at disconnect (fhirlink.services.tokens)."
    ),
}


def _api_slug(resource: str) -> str | None:
    for slug, resource_type in RECORD_TYPES.items():
        if resource_type == resource:
            return slug
    return None


def resource_features(resource: str) -> list[str]:
    """What uses a resource scope, read from the sync plan and the records API."""
    features: list[str] = []
    spec = plan.TYPE_SPECS.get(resource)
    if spec is not None:
        mode = "incremental (_lastUpdated)" if spec.last_updated else "full pass every sync"
        features.append(f"Sync: searched for the patient, {mode}")
    elif resource in plan.READ_TYPES:
        features.append("Sync: read once per sync (the patient's own resource)")
    elif resource in plan.REFERENCE_TYPES:
        features.append("Sync: read when a synced record refers to it (names, places, drugs)")
    elif resource == "Binary":
        features.append("Sync: DocumentReference attachments (documents), within size/type limits")
    slug = _api_slug(resource)
    if slug is not None:
        features.append(f"API: GET /api/v1/records/{slug} (list, detail)")
    if resource == "Binary":
        features.append("API: GET /api/v1/records/documents/{id}/content")
    if resource in TIMELINE_TYPES:
        features.append("API: GET /api/v1/records/timeline")
    if resource == "Observation":
        features.append("API: GET /api/v1/records/trends")
    if features:
        features.append("API: GET /api/v1/records/exports (everything, as FHIR)")
    return features


def scopes_requested(*, health_system: HealthSystem) -> dict[str, Any]:
    """The scope rows for the pack. Uses the cached discovery (no network); without one, what
    would be requested if the server supports every configured resource."""
    doc = health_system.discovery or {}
    try:
        # Exactly what a launch asks for (fhirlink.services.launch uses the same function).
        scopes, chosen = launch_scopes(health_system, doc)
    except EhrMisconfigured:
        scopes, chosen = [], []
    source = (
        f"cached discovery of {health_system.discovery_fetched_at.isoformat()}"
        if doc and health_system.discovery_fetched_at
        else "registration only (no cached discovery: run manage.py healthsystem_check)"
    )
    rows: list[dict[str, Any]] = []
    for scope in scopes:
        if scope in BASE_SCOPES:
            rows.append(
                {
                    "scope": scope,
                    "kind": "launch",
                    "resource": "",
                    "features": [BASE_SCOPE_FEATURES[scope]],
                    "used": True,
                }
            )
            continue
        resource = scope.split("/", 1)[1].split(".", 1)[0].split("?", 1)[0]
        features = resource_features(resource)
        rows.append(
            {
                "scope": scope,
                "kind": "resource (read/search)",
                "resource": resource,
                "features": features,
                "used": bool(features),
            }
        )
    configured = list(health_system.resources or [])
    return {
        "source": source,
        "scope_syntax": health_system.scope_syntax,
        "rows": rows,
        "not_requested": [r for r in configured if r not in chosen],
        "unused": [row["scope"] for row in rows if not row["used"]],
    }
