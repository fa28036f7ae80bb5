"""SMART scopes: what to request (configured ∩ supported, in v1 or v2 syntax) and what was granted.

Cerner quirks handled here (CERNER.md §2-3): no wildcards, so one scope per resource; a v2 app
silently drops v1 `.read` scopes; the server lists `patient/Observation.s` but no `.rs`; the
granted `scope` may be narrower than the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BASE_SCOPES = ["launch/patient", "openid", "fhirUser", "offline_access"]

_RESOURCE_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>[A-Za-z]+|\*)\.(?P<perm>read|write|\*|[cruds]+)$"
)
_READ_PERMS = {"read", "*"}


def parse_scope_string(scope: str | Iterable[str] | None) -> list[str]:
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def _parse(scope: str) -> tuple[str, str, str] | None:
    match = _RESOURCE_SCOPE.match(scope)
    if not match:
        return None
    return match["ctx"], match["type"], match["perm"]


def _allows_read(perm: str) -> bool:
    return perm in _READ_PERMS or "r" in perm or "s" in perm


def supported_patient_scopes(scopes_supported: Iterable[str]) -> dict[str, set[str]]:
    """{resource: {"read", "rs", "s", ...}} for the `patient/` scopes a server lists."""
    found: dict[str, set[str]] = {}
    for scope in scopes_supported:
        parsed = _parse(scope)
        if parsed and parsed[0] == "patient" and parsed[1] != "*":
            found.setdefault(parsed[1], set()).add(parsed[2])
    return found


def resource_scope(resource: str, *, syntax: str, listed: set[str] | None) -> str | None:
    """The read scope for one resource, in the registration's syntax, or None if the server's
    list shows no read form for it in that syntax. `listed` None means "server lists nothing"."""
    if syntax == "v1":
        if listed is None or "read" in listed:
            return f"patient/{resource}.read"
        return None
    if listed is None:
        return f"patient/{resource}.rs"
    for perm in ("rs", "s", "r"):
        if perm in listed:
            return f"patient/{resource}.{perm}"
    v2_reads = sorted(p for p in listed if p not in {"read", "write", "*"} and _allows_read(p))
    if v2_reads:
        return f"patient/{resource}.{v2_reads[0]}"
    return None


def requested_scopes(
    *,
    resources: Iterable[str],
    supported_resources: Iterable[str] | None,
    scopes_supported: Iterable[str] | None,
    syntax: str,
) -> tuple[list[str], list[str]]:
    """(scopes to request, resources requested): configured ∩ supported, plus the base scopes."""
    supported = set(supported_resources) if supported_resources is not None else None
    listed = supported_patient_scopes(scopes_supported) if scopes_supported else None
    scopes: list[str] = []
    chosen: list[str] = []
    for resource in dict.fromkeys(resources):
        if supported is not None and resource not in supported:
            continue
        scope = resource_scope(
            resource, syntax=syntax, listed=None if listed is None else listed.get(resource, set())
        )
        if scope:
            scopes.append(scope)
            chosen.append(resource)
    return [*BASE_SCOPES, *scopes], chosen


def granted_resources(granted: Iterable[str]) -> list[str]:
    """Resources the granted scopes let us read (patient/ or user/ context, read or search)."""
    result: dict[str, None] = {}
    for scope in granted:
        parsed = _parse(scope)
        readable = parsed and parsed[0] in {"patient", "user"} and parsed[1] != "*"
        if parsed and readable and _allows_read(parsed[2]):
            result.setdefault(parsed[1], None)
    return list(result)


def compare_grant(*, requested: list[str], granted: Iterable[str]) -> tuple[list[str], list[str]]:
    """(granted resources among the requested ones, declined ones), in request order."""
    readable = set(granted_resources(granted))
    allowed = [r for r in requested if r in readable]
    declined = [r for r in requested if r not in readable]
    return allowed, declined
