"""Per-tenant fault injection, switchable at run time.

Sources, merged (database wins):

- the database: ``SandboxTenant.faults``, set by ``faults_set`` (the ``sandbox_faults`` command and
  the ``sandbox`` test fixture). Faults with ``times`` are consumed: after that many triggers they
  stop.
- the environment: ``SANDBOX_FAULTS`` holds JSON ``{"<tenant id>" | "*": {<fault>: <params>}}``,
  read on every request (``times`` is ignored there: an environment fault always triggers).

Faults (each a dict of params; ``times`` optional; ``resource_types`` optional list that limits a
FHIR fault to those types):

=====================  ===========================================================================
``latency_ms``         ``{"ms": 250}`` added to every FHIR response
``status``             ``{"code": 500|502|503, "times": n}`` error status with an OperationOutcome
``rate_limit``         ``{"retry_after": 2, "times": n}`` 429 with Retry-After
``timeout``            ``{"seconds": 30, "times": n}`` the response stalls (client times out)
``malformed_json``     ``{"times": n}`` a 200 whose body is not JSON
``truncated_page``     ``{"times": n}`` a search page cut off in the middle of the JSON
``looping_next``       ``{"times": n}`` the next link points back at the same page
``invalid_fhir``       ``{"times": n}`` a 200 searchset whose entries break FHIR (no resourceType)
``revoke_grant_after`` ``{"requests": n}`` the grant is revoked after n FHIR requests (mid-sync)
``refresh_failure``    ``{"error": "invalid_grant" | "server_error", "status": 503, "times": n}``
=====================  ===========================================================================
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.db import transaction

from .models import SandboxTenant
from .state import tenant_row

FAULT_NAMES = (
    "latency_ms",
    "status",
    "rate_limit",
    "timeout",
    "malformed_json",
    "truncated_page",
    "looping_next",
    "invalid_fhir",
    "revoke_grant_after",
    "refresh_failure",
)
ENV_VAR = "SANDBOX_FAULTS"


def _env_faults(tenant: str) -> dict[str, Any]:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("*", tenant):
        if isinstance(parsed.get(key), dict):
            out.update(parsed[key])
    return {
        k: (v if isinstance(v, dict) else {"value": v}) for k, v in out.items() if k in FAULT_NAMES
    }


def _normalise(faults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, params in faults.items():
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
        if params is None or params is False:
            continue
        if params is True:
            params = {}
        elif not isinstance(params, dict):
            params = {"ms": params} if name == "latency_ms" else {"value": params}
        out[name] = dict(params)
    return out


def faults_set(
    *, tenant: str, faults: dict[str, Any], merge: bool = False
) -> dict[str, dict[str, Any]]:
    normalised = _normalise(faults)
    with transaction.atomic():
        row = tenant_row(tenant)
        row = SandboxTenant.objects.select_for_update().get(id=row.id)
        row.faults = {**row.faults, **normalised} if merge else normalised
        row.save(update_fields=["faults"])
        return dict(row.faults)


def faults_clear(*, tenant: str) -> None:
    SandboxTenant.objects.filter(id=tenant).update(faults={})


def faults_active(
    tenant: str, db_faults: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    if db_faults is None:
        db_faults = (
            SandboxTenant.objects.filter(id=tenant).values_list("faults", flat=True).first() or {}
        )
    return {**_env_faults(tenant), **db_faults}


def _applies(params: dict[str, Any], resource_type: str | None) -> bool:
    types = params.get("resource_types")
    return not types or resource_type is None or resource_type in types


def take(
    tenant: str,
    name: str,
    *,
    resource_type: str | None = None,
    active: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The fault's params if it triggers now (consuming one of its ``times``), else None."""
    current = active if active is not None else faults_active(tenant)
    params = current.get(name)
    if params is None or not _applies(params, resource_type):
        return None
    if params.get("times") is None:
        return params
    with transaction.atomic():
        row = SandboxTenant.objects.select_for_update().filter(id=tenant).first()
        if row is None or name not in row.faults:
            return None
        stored = dict(row.faults[name])
        remaining = int(stored.get("times") or 0)
        if remaining <= 0:
            return None
        stored["times"] = remaining - 1
        faults = dict(row.faults)
        if stored["times"] <= 0:
            faults.pop(name)
        else:
            faults[name] = stored
        row.faults = faults
        row.save(update_fields=["faults"])
        return stored


def count_request(tenant: str, active: dict[str, Any]) -> bool:
    """``revoke_grant_after``: count a FHIR request; True when the grant must be revoked now."""
    params = active.get("revoke_grant_after")
    if params is None:
        return False
    with transaction.atomic():
        row = SandboxTenant.objects.select_for_update().filter(id=tenant).first()
        if row is None or "revoke_grant_after" not in row.faults:
            return False
        stored = dict(row.faults["revoke_grant_after"])
        remaining = int(stored.get("requests", 0))
        faults = dict(row.faults)
        if remaining <= 0:
            faults.pop("revoke_grant_after")
            row.faults = faults
            row.save(update_fields=["faults"])
            return True
        stored["requests"] = remaining - 1
        faults["revoke_grant_after"] = stored
        row.faults = faults
        row.save(update_fields=["faults"])
        return False
