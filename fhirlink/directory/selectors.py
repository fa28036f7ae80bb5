"""Reads for the directory search API: one page of ranked matches, with what a patient needs to
tell apart organisations that share a name (city, state, ZIP, logo) and whether each can be
connected now."""

from __future__ import annotations

from typing import Any

from fhirlink.directory.health import base_url, endpoint_states
from fhirlink.directory.search import Item
from fhirlink.models import DirectoryEntry, EndpointState, HealthSystem, PlatformApp

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


def directory_page_rows(*, items: list[Item]) -> list[dict[str, Any]]:
    entry_ids = [i.pk for i in items if i.kind == "entry"]
    system_ids = [i.pk for i in items if i.kind == "registered"]
    entries = {
        str(e.pk): e
        for e in DirectoryEntry.objects.filter(pk__in=entry_ids).select_related("health_system")
    }
    systems = {str(h.pk): h for h in HealthSystem.objects.filter(pk__in=system_ids)}
    sources = set(PlatformApp.objects.filter(enabled=True).values_list("source", flat=True))
    urls = [e.fhir_base_url for e in entries.values()] + [h.fhir_base_url for h in systems.values()]
    health = endpoint_states(urls=urls)
    rows: list[dict[str, Any]] = []
    for item in items:
        entry = entries.get(item.pk) if item.kind == "entry" else None
        system = entry.health_system if entry is not None else systems.get(item.pk)
        if entry is None and system is None:
            continue  # changed since the index was read
        if entry is not None and system is None:
            availability = AVAILABLE if entry.source in sources else NOT_CONFIGURED
        else:
            availability = AVAILABLE if _system_open(system) else UNAVAILABLE
        url = entry.fhir_base_url if entry is not None else system.fhir_base_url  # type: ignore[union-attr]
        state = health.get(base_url(url))
        if availability == AVAILABLE and state is not None and state.state == EndpointState.DOWN:
            availability = DOWN
        rows.append(
            {
                "id": item.key,
                "name": entry.name if entry is not None else system.name,  # type: ignore[union-attr]
                "city": entry.city if entry is not None else "",
                "state": entry.state if entry is not None else "",
                "postal_code": entry.postal_code if entry is not None else "",
                "logo_url": (entry.logo_url if entry is not None else "")
                or (system.logo_url if system is not None else "")
                or None,
                "available": availability == AVAILABLE,
                "availability": availability,
                "directory": entry.source if entry is not None else "registered",
            }
        )
    return rows
