"""Storing what a step fetched, digest first: every resource's canonical JSON is digested
(keyed), and only the new or changed ones are parsed and validated with fhir.resources and
have their columns extracted, by the store's `resource_upsert_page`."""

from __future__ import annotations

from typing import Any

from fhirlink.models import Connection
from fhirlink.services.sync import plan
from fhirlink.services.sync.prepare import canonical_json, references_in
from fhirlink.services.sync.store import UpsertResult, payload_digest, resource_upsert_page

REFERENCE_TYPES = set(plan.REFERENCE_TYPES)


def resources_store(
    *,
    run_id: Any,
    connection: Connection,
    resources: list[dict[str, Any]],
    mark_seen: bool,
    is_reference: bool = False,
    references: set[tuple[str, str]] | None = None,
) -> UpsertResult:
    """Upsert `resources` for the run's connection (inside the caller's transaction). With
    `references`, the literal references to `plan.REFERENCE_TYPES` they name are added to it
    (read from the canonical JSON already made)."""
    prepared: list[tuple[bytes, None, None, str]] = []
    for resource in resources:
        canonical = canonical_json(resource)
        prepared.append((canonical, None, None, payload_digest(canonical)))
        if references is not None:
            references |= references_in(resource, canonical, REFERENCE_TYPES)
    return resource_upsert_page(
        connection=connection,
        resources=resources,
        source_base_url=connection.fhir_base_url or connection.health_system.fhir_base_url,
        sync_run_id=run_id,
        mark_seen=mark_seen,
        is_reference=is_reference,
        prepared=prepared,
    )
