"""Discovery: `.well-known/smart-configuration`, the CapabilityStatement (FHIR version, resources,
oauth-uris fallback), cached on the HealthSystem row until `discovery_expires_at`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from fhirlink import http
from fhirlink.exceptions import EhrMisconfigured, EhrUnavailable, UnsupportedFhirVersion
from fhirlink.models import HealthSystem
from fhirlink.models.health_systems import DEFAULT_RESOURCES
from fhirlink.scopes import BASE_SCOPES, ScopeChoice, effective_syntax, scope_plan

logger = logging.getLogger(__name__)

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _base(health_system: HealthSystem) -> str:
    return health_system.fhir_base_url.rstrip("/")


def _oauth_uris(capability: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for rest in capability.get("rest") or []:
        for ext in (rest.get("security") or {}).get("extension") or []:
            if ext.get("url") != OAUTH_URIS:
                continue
            for sub in ext.get("extension") or []:
                if isinstance(sub.get("url"), str) and isinstance(sub.get("valueUri"), str):
                    found[sub["url"]] = sub["valueUri"]
    return found


def _resources(capability: dict[str, Any]) -> list[str]:
    types: list[str] = []
    for rest in capability.get("rest") or []:
        if rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or []:
            interactions = {i.get("code") for i in resource.get("interaction") or []}
            if isinstance(resource.get("type"), str) and (
                not interactions or interactions & {"read", "search-type"}
            ):
                types.append(resource["type"])
    return sorted(set(types))


def _fetch(health_system: HealthSystem) -> dict[str, Any]:
    base = _base(health_system)
    smart: dict[str, Any] | None = None
    try:
        smart = http.get_json(f"{base}/.well-known/smart-configuration")
    except http.EhrRetryable as exc:
        raise EhrUnavailable() from exc
    except http.EhrTerminal:
        logger.info("health system %s: no smart-configuration, using oauth-uris", health_system.pk)

    try:
        capability = http.request(
            "GET", f"{base}/metadata", accept="application/fhir+json"
        ).json_object()
    except http.EhrRetryable as exc:
        raise EhrUnavailable() from exc
    except http.EhrTerminal as exc:
        raise EhrMisconfigured("The health system's CapabilityStatement is unavailable.") from exc

    fhir_version = str(capability.get("fhirVersion") or "")
    oauth_uris = _oauth_uris(capability)
    source = "smart-configuration" if smart else "capability-statement"
    smart = smart or {}
    doc = {
        "source": source,
        "fhir_version": fhir_version,
        "resources": _resources(capability),
        "issuer": smart.get("issuer") or "",
        "authorization_endpoint": smart.get("authorization_endpoint")
        or oauth_uris.get("authorize", ""),
        "token_endpoint": smart.get("token_endpoint") or oauth_uris.get("token", ""),
        "revocation_endpoint": smart.get("revocation_endpoint") or oauth_uris.get("revoke", ""),
        "introspection_endpoint": smart.get("introspection_endpoint")
        or oauth_uris.get("introspect", ""),
        "management_endpoint": smart.get("management_endpoint") or oauth_uris.get("manage", ""),
        "jwks_uri": smart.get("jwks_uri") or "",
        "scopes_supported": smart.get("scopes_supported"),
        "capabilities": smart.get("capabilities") or [],
        "code_challenge_methods_supported": smart.get("code_challenge_methods_supported"),
        "token_endpoint_auth_methods_supported": smart.get("token_endpoint_auth_methods_supported"),
        "token_endpoint_auth_signing_alg_values_supported": smart.get(
            "token_endpoint_auth_signing_alg_values_supported"
        ),
        "grant_types_supported": smart.get("grant_types_supported"),
        "authorization_response_iss_parameter_supported": bool(
            smart.get("authorization_response_iss_parameter_supported")
        ),
    }
    return doc


def _validate(doc: dict[str, Any]) -> None:
    if not doc["fhir_version"].startswith("4.0."):
        raise UnsupportedFhirVersion(extra={"fhir_version": doc["fhir_version"][:20]})
    if not doc["authorization_endpoint"] or not doc["token_endpoint"]:
        raise EhrMisconfigured("The health system advertises no SMART authorization endpoints.")
    for name in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "jwks_uri"):
        if doc[name]:
            try:
                http.check_url(doc[name])
            except http.EhrTerminal as exc:
                raise EhrMisconfigured(
                    "The health system advertises an insecure endpoint."
                ) from exc


def discover(health_system: HealthSystem, *, force: bool = False) -> dict[str, Any]:
    """The health system's discovery document, from the cache unless expired or `force`."""
    now = timezone.now()
    if (
        not force
        and health_system.discovery
        and health_system.discovery_expires_at
        and health_system.discovery_expires_at > now
    ):
        cached: dict[str, Any] = health_system.discovery
        _validate(cached)
        return cached
    doc = _fetch(health_system)
    ttl = int(getattr(settings, "FHIRLINK_DISCOVERY_TTL", 3600))
    health_system.discovery = doc
    health_system.discovery_fetched_at = now
    health_system.discovery_expires_at = now + timedelta(seconds=ttl)
    HealthSystem.objects.filter(pk=health_system.pk).update(
        discovery=doc,
        discovery_fetched_at=now,
        discovery_expires_at=health_system.discovery_expires_at,
    )
    _validate(doc)
    return doc


def reference_resources(resources: list[str]) -> list[str]:
    """The types the sync reads because the configured ones reference them (and Binary, the
    attachments of DocumentReferences): their scopes are requested too."""
    from fhirlink.services.sync.plan import REFERENCE_TYPES

    extra = list(REFERENCE_TYPES)
    if "DocumentReference" in resources:
        extra.append("Binary")
    return extra


def _choices(health_system: HealthSystem, doc: dict[str, Any]) -> tuple[str, list[ScopeChoice]]:
    configured = list(health_system.resources or [])
    syntax = effective_syntax(
        health_system.scope_syntax,
        capabilities=doc.get("capabilities"),
        scopes_supported=doc.get("scopes_supported"),
    )
    return syntax, scope_plan(
        resources=configured,
        reference_resources=reference_resources(configured),
        supported_resources=doc.get("resources") or None,
        scopes_supported=doc.get("scopes_supported"),
        syntax=syntax,
    )


def launch_scopes(health_system: HealthSystem, doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(scopes to request, resources requested) for this registration and discovery document:
    the configured types and those read by reference, that the CapabilityStatement lists
    (`scopes_supported` is a hint only: see `fhirlink.scopes`). Raises `EhrMisconfigured` when
    no configured type would be requested."""
    _syntax, choices = _choices(health_system, doc)
    requested = [c for c in choices if c.scope]
    if not any(not c.reference for c in requested):
        raise EhrMisconfigured("None of the configured resources is supported by the server.")
    return [*BASE_SCOPES, *(c.scope for c in requested if c.scope)], [c.resource for c in requested]


def check_report(health_system: HealthSystem) -> dict[str, Any]:
    """What `manage.py healthsystem_check` prints: what the server supports, what we'd request,
    per type and why, and warnings (nothing would be requested, a syntax the server lacks)."""
    doc = discover(health_system, force=True)
    syntax, choices = _choices(health_system, doc)
    configured = list(health_system.resources or [])
    default = sorted(configured) == sorted(DEFAULT_RESOURCES)
    requested = [c for c in choices if c.scope]
    methods = doc.get("code_challenge_methods_supported")
    warnings: list[str] = []
    if not any(not c.reference for c in requested):
        warnings.append(
            "nothing would be requested: none of the configured resources is in the server's "
            "CapabilityStatement (a launch would fail with ehr_misconfigured)"
        )
    if syntax != health_system.scope_syntax:
        warnings.append(
            f"the registration says SMART {health_system.scope_syntax} but the server only "
            f"advertises {syntax}: {syntax} scopes will be requested"
        )
    types = []
    for choice in choices:
        if choice.reference:
            origin = "read by reference"
        elif default:
            origin = "configured (the default resource list)"
        else:
            origin = "configured"
        types.append(
            {
                "resource": choice.resource,
                "scope": choice.scope,
                "requested": bool(choice.scope),
                "why": choice.reason,
                "origin": origin,
                "in_capability_statement": choice.in_capability_statement,
                "scopes_supported": choice.advertised,
            }
        )
    return {
        "health_system": str(health_system.pk),
        "discovery_source": doc["source"],
        "fhir_version": doc["fhir_version"],
        "issuer": doc["issuer"],
        "authorization_endpoint": doc["authorization_endpoint"],
        "token_endpoint": doc["token_endpoint"],
        "revocation": doc["revocation_endpoint"] or None,
        "pkce_s256": "advertised" if methods and "S256" in methods else "not advertised",
        "iss_parameter": "advertised"
        if doc.get("authorization_response_iss_parameter_supported")
        else "not advertised",
        "client_auth": health_system.client_auth,
        "client_auth_supported": doc.get("token_endpoint_auth_methods_supported"),
        "capabilities": doc.get("capabilities"),
        "server_resources": doc["resources"],
        "scopes_supported_count": len(doc.get("scopes_supported") or []),
        "scope_syntax": syntax,
        "configured_resources": configured,
        "requested_resources": [c.resource for c in requested],
        "not_supported": [c.resource for c in choices if not c.scope and not c.reference],
        "requested_scopes": [*BASE_SCOPES, *(c.scope for c in requested if c.scope)],
        "types": types,
        "warnings": warnings,
    }
