"""Access-log evidence: a sample of a synthetic patient's entries and the integrity check."""

from __future__ import annotations

from typing import Any

from patientportal.accesslog.selectors import access_events_for_patient, actor_display
from patientportal.accesslog.services import access_log_verify
from patientportal.accounts.models import Patient

SAMPLE_SIZE = 20


def access_log_evidence(*, patient: Patient | None, limit: int = SAMPLE_SIZE) -> dict[str, Any]:
    """The newest `limit` entries for the (synthetic) patient and the whole chain's verification.

    Entries show who, what, why and the outcome; never an address, a user agent or record ids
    (a count stands for them)."""
    report = access_log_verify()
    integrity = {
        "ok": report.ok,
        "rows_checked": report.checked,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "anchor_seq": report.anchor_seq,
        "problems": report.problems[:10],
        "problem_count": len(report.problems),
        "method": "HMAC-SHA256 chain recomputed from the newest anchor (accesslog_verify)",
    }
    if patient is None:
        return {
            "patient": None,
            "reason": "no synthetic patient: pass --sample-patient (the demo patient when seeded)",
            "sample": [],
            "integrity": integrity,
        }
    events = access_events_for_patient(patient=patient).order_by("-seq")[:limit]
    sample = [
        {
            "seq": event.seq,
            "occurred_at": event.occurred_at.isoformat(timespec="seconds"),
            "actor": actor_display(event),
            "actor_kind": event.actor_kind,
            "action": event.action,
            "resource_type": event.resource_type,
            "records": len(event.resource_ids or []),
            "purpose": event.purpose,
            "outcome": event.outcome,
            "hash": event.hash[:16],
        }
        for event in events
    ]
    return {
        "patient": str(patient.pk),
        "reason": "",
        "sample": sample,
        "integrity": integrity,
    }
