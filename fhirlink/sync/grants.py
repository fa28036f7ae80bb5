"""Which referenced types a run may read: supported by the server and granted by the patient."""

from __future__ import annotations

from typing import Any

from fhirlink.models import SyncRun
from fhirlink.scopes import requested_resources
from fhirlink.services.sync import plan
from fhirlink.sync.attachments import attachment_urls


def reference_types_supported(run: SyncRun) -> set[str]:
    supported = (run.connection.health_system.discovery or {}).get("resources")
    return set(plan.REFERENCE_TYPES) & set(supported or plan.REFERENCE_TYPES)


def reference_types(run: SyncRun) -> set[str]:
    """The referenced types to fetch: those of `REFERENCE_TYPES` the server supports and the
    patient granted (a server that enforces scopes answers 403 to the others). A connection
    launched before the references' scopes were requested never asked for them: read as
    before (a server that allows it still answers)."""
    return {t for t in reference_types_supported(run) if reference_granted(run, t)}


def reference_granted(run: SyncRun, resource_type: str) -> bool:
    connection = run.connection
    if resource_type in (connection.granted_resources or []):
        return True
    return resource_type not in requested_resources(connection.requested_scopes or "")


def references_not_granted(run: SyncRun) -> list[dict[str, Any]]:
    """What the run skipped because the patient did not grant its type: one entry per type,
    with how many references the stored pages named (no ids: nothing was read); Binary (asked
    for, not granted) with the attachments the DocumentReferences name."""
    skipped = reference_types_supported(run) - reference_types(run)
    counts: dict[str, int] = {}
    for ref in run.references or []:
        rtype = ref.partition("/")[0]
        if rtype in skipped:
            counts[rtype] = counts.get(rtype, 0) + 1
    if "DocumentReference" in run.resource_types and not reference_granted(run, "Binary"):
        urls, too_large = attachment_urls(run)
        if len(urls) + len(too_large):
            counts["Binary"] = len(urls) + len(too_large)
    return [
        {"type": rtype, "reason": "not_granted", "references": n}
        for rtype, n in sorted(counts.items())
    ]
