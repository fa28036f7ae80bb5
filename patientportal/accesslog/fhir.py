"""Access events as FHIR R4B AuditEvent resources (validated with fhir.resources)."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent

from .models import AccessAction, AccessEvent, ActorKind, Outcome

ACTION_SYSTEM = "urn:patientportal:accesslog:action"
PURPOSE_SYSTEM = "urn:patientportal:consent-purpose"
USER_SYSTEM = "urn:patientportal:user"
CLIENT_SYSTEM = "urn:patientportal:oauth-client"
RESOURCE_SYSTEM_PREFIX = "urn:patientportal:resource:"

# AuditEvent.action: C create, R read/view/print, U update, D delete, E execute.
_FHIR_ACTION = {
    AccessAction.READ: "R",
    AccessAction.LIST: "R",
    AccessAction.SEARCH: "E",
    AccessAction.EXPORT: "R",
    AccessAction.SYNC_WRITE: "U",
    AccessAction.DELETE: "D",
    AccessAction.CONSENT_CHANGE: "U",
    AccessAction.CONNECT: "E",
    AccessAction.DISCONNECT: "E",
}
# AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure.
_FHIR_OUTCOME = {
    Outcome.SUCCESS: "0",
    Outcome.DENIED: "4",
    Outcome.NOT_FOUND: "4",
    Outcome.ERROR: "8",
}


def _agent(event: AccessEvent) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "requestor": True,
        "type": {
            "coding": [
                {"system": "urn:patientportal:accesslog:actor-kind", "code": event.actor_kind}
            ]
        },
    }
    who: dict[str, Any] = {}
    if event.actor_user_id is not None:
        who["identifier"] = {"system": USER_SYSTEM, "value": str(event.actor_user_id)}
    display = " ".join(p for p in (event.actor_role, event.actor_name) if p)
    if display:
        who["display"] = display
    if who:
        agent["who"] = who
    if event.actor_kind == ActorKind.STAFF and event.actor_role:
        agent["role"] = [{"text": event.actor_role}]
    if event.ip_address:
        agent["network"] = {"address": event.ip_address, "type": "2"}
    if event.purpose:
        agent["purposeOfUse"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": event.purpose}]}]
    return agent


def access_event_to_fhir(event: AccessEvent) -> AuditEvent:
    entities: list[dict[str, Any]] = []
    if event.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{event.patient_id}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
            }
        )
    for resource_id in event.resource_ids:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": RESOURCE_SYSTEM_PREFIX + (event.resource_type or "unknown"),
                        "value": str(resource_id),
                    }
                },
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
            }
        )
    details = [
        {"type": "seq", "valueString": str(event.seq)},
        {"type": "hash", "valueString": event.hash},
        {"type": "prev_hash", "valueString": event.prev_hash},
    ]
    if event.request_id:
        details.append({"type": "request_id", "valueString": event.request_id})
    if event.query:
        details.append({"type": "query", "valueString": json.dumps(event.query, sort_keys=True)})
    entities.append(
        {
            "what": {
                "identifier": {"system": "urn:patientportal:accesslog", "value": str(event.seq)}
            },
            "description": "access-log row",
            "detail": details,
        }
    )
    source: dict[str, Any] = {
        "observer": {"display": "Patient Portal"},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }
        ],
    }
    if event.application_client_id:
        source["site"] = event.application_client_id
    data: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"accessevent-{event.seq}",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": ACTION_SYSTEM, "code": event.action}],
        "action": _FHIR_ACTION[AccessAction(event.action)],
        "recorded": event.occurred_at.isoformat(),
        "outcome": _FHIR_OUTCOME[Outcome(event.outcome)],
        "agent": [_agent(event)],
        "source": source,
        "entity": entities,
    }
    if event.purpose:
        data["purposeOfEvent"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": event.purpose}]}]
    return AuditEvent.model_validate(data)


def access_event_ndjson_line(event: AccessEvent) -> str:
    """One NDJSON line (compact JSON and a newline)."""
    return (
        json.dumps(access_event_to_fhir(event).model_dump(mode="json"), separators=(",", ":"))
        + "\n"
    )
