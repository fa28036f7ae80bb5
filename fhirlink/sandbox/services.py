"""Operator/test entry points (called by the management commands and the ``sandbox`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conf import DEMO_TENANT, PATIENTS_BY_KEY
from .faults import faults_clear, faults_set
from .fhir import data
from .fhir.index import changes_make
from .models import SandboxChange
from .oauth import grant_revoke, grants_for
from .state import clock_advance, clock_now


@dataclass(frozen=True)
class Change:
    resource_type: str
    id: str
    kind: str
    last_updated: str


def change_id(change: SandboxChange) -> str:
    patient = PATIENTS_BY_KEY[change.patient_key]
    ts = int(change.changed_at.timestamp())
    row = data.attributes(
        patient, change.resource_type, change.index, ts=ts if change.kind == "new" else None
    )
    if change.kind == SandboxChange.Kind.ENTERED_IN_ERROR:
        row = row._replace(status="entered-in-error")
    ctx = data.Ctx(tenant=change.tenant, base="")
    return str(data.render(ctx, patient, change.resource_type, row)["id"])


def sandbox_make_changes(
    *,
    tenant: str = DEMO_TENANT,
    patient: str = "hugo",
    new: int = 0,
    updated: int = 0,
    entered_in_error: int = 0,
    types: tuple[str, ...] = ("Observation",),
) -> list[Change]:
    made = changes_make(
        tenant=tenant,
        patient=PATIENTS_BY_KEY[patient],
        new=new,
        updated=updated,
        entered_in_error=entered_in_error,
        types=types,
    )
    return [
        Change(c.resource_type, change_id(c), c.kind, data.iso(int(c.changed_at.timestamp())))
        for c in made
    ]


def sandbox_advance(*, tenant: str = DEMO_TENANT, days: float = 0, seconds: int = 0) -> datetime:
    return clock_advance(tenant=tenant, seconds=int(days * 86400) + seconds)


def sandbox_revoke_grants(
    *,
    tenant: str = DEMO_TENANT,
    patient: str | None = None,
    client_id: str | None = None,
    suspend: bool = False,
) -> int:
    grants = [
        g
        for g in grants_for(tenant=tenant, patient_key=patient, client_id=client_id)
        if g.status == "active"
    ]
    for grant in grants:
        grant_revoke(grant_id=grant.id, suspend=suspend)
    return len(grants)


def sandbox_set_faults(
    *, tenant: str = DEMO_TENANT, merge: bool = False, **faults: Any
) -> dict[str, Any]:
    return faults_set(tenant=tenant, faults=faults, merge=merge)


def sandbox_clear_faults(*, tenant: str = DEMO_TENANT) -> None:
    faults_clear(tenant=tenant)


def sandbox_now(*, tenant: str = DEMO_TENANT) -> datetime:
    return clock_now(tenant)
