"""Reads for the directory search API: one page of ranked matches, with what a patient needs to
tell apart organisations that share a name (city, state, ZIP, logo) and whether each can be
connected now."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery

from fhirlink.directory.health import base_url, endpoint_states
from fhirlink.directory.search import Item
from fhirlink.models import DirectoryEntry, EndpointHealth, EndpointState, HealthSystem

AVAILABLE = "available"
NOT_CONFIGURED = "not_configured"  # no app registration covers this entry's source
UNAVAILABLE = "unavailable"  # disabled or held by an operator
DOWN = "down"  # the endpoint fails its health checks


def _system_open(health_system: HealthSystem | None) -> bool:
    return (
        health_system is not None
        and health_system.enabled
        and not getattr(health_system, "on_hold", False)
    )


ENTRY_FIELDS = ("id", "name", "city", "state", "postal_code", "logo_url", "source")


def directory_page_rows(*, items: list[Item], sources: frozenset[str]) -> list[dict[str, Any]]:
    """The page's rows: one query for the directory entries (with their endpoint state; a
    second for the health systems created from them, if any), one more for hand registrations
    only if some are on the page."""
    entry_ids = [i.pk for i in items if i.kind == "entry"]
    system_ids = [i.pk for i in items if i.kind == "registered"]
    endpoint_state = EndpointHealth.objects.filter(fhir_base_url=OuterRef("fhir_base_url"))
    entries = {
        str(row["id"]): row
        for row in DirectoryEntry.objects.filter(pk__in=entry_ids)
        .order_by()
        .annotate(endpoint_state=Subquery(endpoint_state.values("state")[:1]))
        .values(*ENTRY_FIELDS, "health_system_id", "endpoint_state")
    }
    linked = [row["health_system_id"] for row in entries.values() if row["health_system_id"]]
    wanted = [*system_ids, *linked]
    systems: dict[str, HealthSystem] = {}
    health: dict[str, Any] = {}
    if wanted:
        systems = {str(h.pk): h for h in HealthSystem.objects.filter(pk__in=wanted)}
    if system_ids:
        health = endpoint_states(urls=[h.fhir_base_url for h in systems.values()])
    rows: list[dict[str, Any]] = []
    for item in items:
        entry = entries.get(item.pk) if item.kind == "entry" else None
        if entry is not None:
            system = (
                systems.get(str(entry["health_system_id"])) if entry["health_system_id"] else None
            )
        else:
            system = systems.get(item.pk)
        if entry is None and system is None:
            continue  # changed since the index was read
        if entry is not None and system is None:
            availability = AVAILABLE if entry["source"] in sources else NOT_CONFIGURED
        else:
            availability = AVAILABLE if _system_open(system) else UNAVAILABLE
        if entry is not None:
            state = entry["endpoint_state"]
        else:
            found = health.get(base_url(system.fhir_base_url))  # type: ignore[union-attr]
            state = found.state if found is not None else None
        if availability == AVAILABLE and state == EndpointState.DOWN:
            availability = DOWN
        rows.append(
            {
                "id": item.key,
                "name": entry["name"] if entry is not None else system.name,  # type: ignore[union-attr]
                "city": entry["city"] if entry is not None else "",
                "state": entry["state"] if entry is not None else "",
                "postal_code": entry["postal_code"] if entry is not None else "",
                "logo_url": (entry["logo_url"] if entry is not None else "")
                or (system.logo_url if system is not None else "")
                or None,
                "available": availability == AVAILABLE,
                "availability": availability,
                "directory": entry["source"] if entry is not None else "registered",
            }
        )
    return rows
