"""Discovery: ``.well-known/smart-configuration`` and the CapabilityStatement (no auth needed)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from .conf import PROFILE_CERNER, PROFILE_GENERIC, TenantSwitches
from .fhir.data import DATA_END, iso
from .fhir.search import SPECS, SUPPORTED_TYPES
from .responses import fhir_response, json_response, outcome_response
from .scopes import generic_supported_scopes, supported_scopes
from .state import fhir_base, oauth_urls, origin_of, smart_issuer, tenant_exists, tenant_switches

CAPABILITIES = [
    "authorize-post",
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-asymmetric",
    "client-confidential-symmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-standalone-patient",
    "context-ehr-patient",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "permission-v1",
    "permission-v2",
    "health-cards",
]
PARAM_TYPES = {
    "patient": "reference",
    "subject": "reference",
    "encounter": "reference",
    "target": "reference",
    "account": "reference",
    "date": "date",
    "period": "date",
    "_lastUpdated": "date",
    "target-date": "date",
    "birthdate": "date",
    "-timing-boundsPeriod": "date",
    "_count": "number",
    "name": "string",
    "family": "string",
    "given": "string",
    "address-postalcode": "string",
}


# The generic profile: what a standards-only SMART App Launch 2.x server says of itself.
GENERIC_CAPABILITIES = [
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-standalone-patient",
    "permission-patient",
    "permission-offline",
    "permission-online",
    "authorize-post",
]


def generic_smart_configuration_body(
    origin: str, tenant: str, switches: TenantSwitches
) -> dict[str, Any]:
    """Issuer on another origin than the FHIR base, wildcard-only ``scopes_supported``, RFC 9207
    ``iss``, refresh-token rotation (``refresh_token`` grant), v1 and v2 (or v1 only)."""
    urls = oauth_urls(origin, tenant, PROFILE_GENERIC)
    versions = {"any": ["permission-v1", "permission-v2"], "v1": ["permission-v1"]}.get(
        switches.scope_syntax, ["permission-v2"]
    )
    return {
        "issuer": smart_issuer(origin, tenant, PROFILE_GENERIC),
        "jwks_uri": urls["jwks"],
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "revocation_endpoint": urls["revoke"],
        "introspection_endpoint": urls["introspect"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "scopes_supported": generic_supported_scopes(switches),
        "response_types_supported": ["code"],
        "capabilities": [*GENERIC_CAPABILITIES, *versions],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": switches.iss_parameter,
    }


def smart_configuration_body(
    origin: str, tenant: str, switches: TenantSwitches | None = None
) -> dict[str, Any]:
    if switches is not None and switches.generic:
        return generic_smart_configuration_body(origin, tenant, switches)
    urls = oauth_urls(origin, tenant)
    return {
        "issuer": f"{origin}/tenants/{tenant}",
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "revocation_endpoint": urls["revoke"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "jwks_uri": urls["jwks"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "scopes_supported": supported_scopes(),
        "response_types_supported": ["code"],
        "management_endpoint": urls["manage"],
        "introspection_endpoint": urls["introspect"],
        "capabilities": CAPABILITIES,
        "code_challenge_methods_supported": ["S256"],
    }


@require_GET
def smart_configuration(
    request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER
) -> HttpResponse:
    if not tenant_exists(tenant, profile):
        return outcome_response(403, "forbidden", "Tenant not valid or accessible.")
    body = smart_configuration_body(origin_of(request), tenant, tenant_switches(tenant))
    response = json_response(body)
    response["Access-Control-Allow-Origin"] = "*"
    return response


@require_GET
def metadata(request: HttpRequest, tenant: str, profile: str = PROFILE_CERNER) -> HttpResponse:
    if not tenant_exists(tenant, profile):
        return outcome_response(403, "forbidden", "Tenant not valid or accessible.")
    origin = origin_of(request)
    base = fhir_base(origin, tenant, profile)
    urls = oauth_urls(origin, tenant, profile)
    generic = profile == PROFILE_GENERIC
    resources = []
    for rtype in sorted(SUPPORTED_TYPES):
        entry: dict[str, Any] = {"type": rtype, "interaction": [{"code": "read"}]}
        if rtype in SPECS:
            spec = SPECS[rtype]
            entry["interaction"].append({"code": "search-type"})
            names = sorted(
                {p for alt in spec.required for p in alt}
                | set(spec.params) - {"_revinclude", "_count"}
            )
            entry["searchParam"] = [{"name": n, "type": PARAM_TYPES.get(n, "token")} for n in names]
            if spec.revinclude and "_revinclude" in spec.params:
                entry["searchRevInclude"] = ["Provenance:target"]
        resources.append(entry)
    body = {
        "resourceType": "CapabilityStatement",
        "id": tenant,
        "name": "Generic_SMART_R4_Sandbox" if generic else "Oracle_Health_FHIR_R4_Sandbox",
        "status": "active",
        "date": iso(DATA_END),
        "publisher": "Patient Portal sandbox" if generic else "Patient Portal Cerner sandbox",
        "kind": "instance",
        "software": {
            "name": "Patient Portal generic SMART sandbox"
            if generic
            else "Patient Portal Cerner sandbox",
            "version": "1",
        },
        "implementation": {
            "description": "A standards-only SMART App Launch 2.x / FHIR R4 server"
            if generic
            else "Emulated Oracle Health Millennium FHIR R4 (patient access)",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/json+fhir"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [
                                {"url": "token", "valueUri": urls["token"]},
                                {"url": "revoke", "valueUri": urls["revoke"]},
                                {"url": "authorize", "valueUri": urls["authorize"]},
                                {"url": "manage", "valueUri": urls["manage"]},
                                {"url": "introspect", "valueUri": urls["introspect"]},
                            ],
                        }
                    ],
                    "cors": True,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ],
                            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
                        }
                    ],
                },
                "resource": resources,
            }
        ],
    }
    return fhir_response(body)
