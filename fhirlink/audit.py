"""Access-log rows for connection events (connect, disconnect, status reads)."""

from __future__ import annotations

from typing import Any

from patientportal.accesslog.models import AccessAction, ActorKind, Outcome
from patientportal.accesslog.services import access_log_record
from patientportal.consent.models import Purpose


def log_connection(
    *,
    action: str,
    patient_id: Any,
    actor_user_id: int | None,
    connection_ids: list[str] | None = None,
    outcome: str = Outcome.SUCCESS,
    query: dict[str, Any] | None = None,
    request: Any | None = None,
    actor_kind: str = ActorKind.PATIENT,
    actor_label: str = "",
) -> None:
    access_log_record(
        actor_kind=actor_kind,
        actor_user_id=actor_user_id,
        actor_label=actor_label,
        action=action,
        patient=patient_id,
        purpose=Purpose.EHR_SYNC,
        outcome=outcome,
        resource_type="Connection",
        resource_ids=connection_ids or [],
        query=query,
        request=request,
    )


__all__ = ["AccessAction", "ActorKind", "Outcome", "log_connection"]
