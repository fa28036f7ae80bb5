"""A patient's consents as FHIR R4B Consent resources (validated with fhir.resources)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent

from .models import ConsentStatus, PatientConsent

PURPOSE_SYSTEM = "urn:patientportal:consent-purpose"
POLICY_PREFIX = "urn:patientportal:consent-policy"
_FHIR_STATUS = {
    ConsentStatus.GRANTED: "active",
    ConsentStatus.REVOKED: "inactive",
    ConsentStatus.CONSENT_NEEDED: "proposed",
}


def consent_to_fhir(consent: PatientConsent, *, status: str | None = None) -> Consent:
    """One purpose's current state as a FHIR Consent (permit while granted, deny otherwise)."""
    state = status or consent.status
    patient_ref = {"reference": f"Patient/{consent.patient_id}"}
    data: dict[str, Any] = {
        "resourceType": "Consent",
        "id": f"{consent.purpose.replace('_', '-')}-{str(consent.patient_id)[:8]}",
        "status": _FHIR_STATUS[ConsentStatus(state)],
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Consent"}]}
        ],
        "patient": patient_ref,
        "performer": [patient_ref],
        "dateTime": consent.updated_at.isoformat(),
        "policy": [{"uri": f"{POLICY_PREFIX}:{consent.purpose}:v{consent.version}"}],
        "provision": {
            "type": "permit" if state == ConsentStatus.GRANTED else "deny",
            "period": {"start": consent.updated_at.isoformat()},
            "purpose": [{"system": PURPOSE_SYSTEM, "code": consent.purpose}],
        },
    }
    return Consent.model_validate(data)


def consents_bundle(consents: list[tuple[PatientConsent, str]]) -> dict[str, Any]:
    """A FHIR collection Bundle of Consent resources, as JSON-ready data."""
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": consent_to_fhir(consent, status=status).model_dump(mode="json")}
                for consent, status in consents
            ],
        }
    )
    data: dict[str, Any] = bundle.model_dump(mode="json")
    return data
