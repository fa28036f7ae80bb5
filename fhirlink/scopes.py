"""SMART scopes (App Launch 2.x): what to request, and what a granted scope string allows.

What to request, per resource type the sync will read (the configured types and the types it
reads by reference: Practitioner, Organization, Location, Binary, ...):

- The CapabilityStatement's resource list is the authority for what exists: a type it does not
  list is not requested. `scopes_supported` is only a hint (the guide: clients must not treat
  it as exhaustive): a type it does not list is still requested.
- Syntax: the registration's (`v1` `patient/X.read`, `v2` `patient/X.rs`), unless the server
  says it speaks only the other one (its `permission-v1`/`permission-v2` capabilities, or a
  `scopes_supported` whose resource scopes are all of the other syntax).
- Form: the read part of the form the server lists for that type (`patient/` first, then
  `user/`: Cerner lists `user/Practitioner.rs` but no `patient/Practitioner.*`), so Cerner's
  `patient/Observation.s` (no `.rs`) and `patient/Binary.r` are asked for as listed; a type
  listed only through a wildcard (`patient/*.rs`, `patient/*.read`) or not at all gets the
  syntax's default. Wildcards themselves are never requested (least privilege; Cerner lists
  and grants none).

What was granted: v1 and v2 syntax, wildcards, and v2 granular scopes
(`patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory`,
which ONC HTI-1 makes EHRs offer): `granted_categories` says which categories of a type the
patient shared (absent: all of them). The granted `scope` may be narrower than the request
(the patient unticked some, or a v2-registered app at Cerner silently lost its v1 scopes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

BASE_SCOPES = ["launch/patient", "openid", "fhirUser", "offline_access"]

_RESOURCE_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>[A-Za-z]+|\*)\.(?P<perm>read|write|\*|[cruds]+)"
    r"(?:\?(?P<query>.*))?$"
)
V1_PERMS = {"read", "write", "*"}
CATEGORY = "category"


@dataclass(frozen=True)
class ResourceScope:
    """One parsed resource scope, e.g. `patient/Observation.rs?category=…|laboratory`."""

    context: str  # patient | user | system
    resource: str  # a type, or "*"
    perms: str  # v1: read | write | * ; v2: a subset of "cruds"
    params: tuple[tuple[str, str], ...] = ()  # v2 granular restrictions

    @property
    def syntax(self) -> str:
        return "v1" if self.perms in V1_PERMS else "v2"

    @property
    def reads(self) -> bool:
        """Allows reading or searching (the sync needs no more)."""
        if self.syntax == "v1":
            return self.perms in {"read", "*"}
        return "r" in self.perms or "s" in self.perms

    @property
    def categories(self) -> frozenset[str] | None:
        """The `category` tokens (`system|code`) it is limited to; None: not limited."""
        found = frozenset(value for name, value in self.params if name == CATEGORY)
        return found or None


def parse_scope_string(scope: str | Iterable[str] | None) -> list[str]:
    """The scopes of a space-separated string (or an iterable), de-duplicated, in order."""
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def parse_resource_scope(scope: str) -> ResourceScope | None:
    match = _RESOURCE_SCOPE.match(scope)
    if not match:
        return None
    query = match["query"]
    if query is not None and match["perm"] in V1_PERMS:
        return None  # v1 has no granular form
    params = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    return ResourceScope(match["ctx"], match["type"], match["perm"], params)


def _read_perms(perms: str) -> str:
    """The read part of a v2 permission string, in canonical order ("cruds" -> "rs")."""
    return "".join(c for c in "rs" if c in perms)


# --- What to request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeChoice:
    """The decision for one resource type, and why (what `healthsystem_check` prints)."""

    resource: str
    scope: str | None  # None: not requested
    in_capability_statement: bool | None  # None: the server's resource list is unknown
    advertised: str  # "listed" | "wildcard" | "not listed" | "no scopes_supported"
    reason: str  # for a person: why it is (or is not) requested
    reference: bool = False  # read because clinical resources reference it


@dataclass(frozen=True)
class _Hint:
    """What `scopes_supported` says, parsed once."""

    present: bool
    per_type: dict[tuple[str, str], set[str]]  # (context, type) -> listed perms
    wildcards: dict[str, set[str]]  # context -> perms listed for "*"
    syntaxes: set[str]  # syntaxes of the listed resource scopes


def _hint(scopes_supported: Iterable[str] | None) -> _Hint:
    per_type: dict[tuple[str, str], set[str]] = {}
    wildcards: dict[str, set[str]] = {}
    syntaxes: set[str] = set()
    listed = list(scopes_supported or [])
    for raw in listed:
        parsed = parse_resource_scope(raw)
        if parsed is None or parsed.context == "system" or parsed.params or not parsed.reads:
            continue
        syntaxes.add(parsed.syntax)
        if parsed.resource == "*":
            wildcards.setdefault(parsed.context, set()).add(parsed.perms)
        else:
            per_type.setdefault((parsed.context, parsed.resource), set()).add(parsed.perms)
    return _Hint(scopes_supported is not None, per_type, wildcards, syntaxes)


def effective_syntax(
    registered: str, *, capabilities: Iterable[str] | None, scopes_supported: Iterable[str] | None
) -> str:
    """The registration's syntax, unless the server shows it speaks only the other one."""
    other = "v1" if registered == "v2" else "v2"
    caps = {c for c in capabilities or [] if c in {"permission-v1", "permission-v2"}}
    if caps:
        return other if caps == {f"permission-{other}"} else registered
    syntaxes = _hint(scopes_supported).syntaxes
    if syntaxes == {other}:
        return other
    return registered


def _form(perms: set[str], syntax: str) -> str | None:
    """The permission to ask for, of those listed, in `syntax` ("rs", "s", "r" or "read")."""
    if syntax == "v1":
        return "read" if perms & {"read", "*"} else None
    reads = {_read_perms(p) for p in perms if p not in V1_PERMS} - {""}
    for best in ("rs", "s", "r"):
        if best in reads:
            return best
    return None


def scope_choice(
    resource: str,
    *,
    syntax: str,
    supported: set[str] | None,
    hint: _Hint,
    reference: bool = False,
) -> ScopeChoice:
    in_cs = None if supported is None else resource in supported
    if in_cs is False:
        return ScopeChoice(
            resource, None, False, "-", "not in the server's CapabilityStatement", reference
        )
    default = "read" if syntax == "v1" else "rs"
    for context in ("patient", "user"):
        listed = hint.per_type.get((context, resource))
        form = _form(listed, syntax) if listed else None
        if form:
            return ScopeChoice(
                resource,
                f"{context}/{resource}.{form}",
                in_cs,
                "listed",
                f"scopes_supported lists {context}/{resource}.{form}",
                reference,
            )
    for context in ("patient", "user"):
        wild = hint.wildcards.get(context)
        form = _form(wild, syntax) if wild else None
        if form:
            return ScopeChoice(
                resource,
                f"{context}/{resource}.{form}",
                in_cs,
                "wildcard",
                f"scopes_supported lists {context}/*.{form} (asked for this type only)",
                reference,
            )
    advertised = "not listed" if hint.present else "no scopes_supported"
    why = (
        "not in scopes_supported, which is not exhaustive"
        if hint.present
        else "the server lists no scopes"
    )
    return ScopeChoice(resource, f"patient/{resource}.{default}", in_cs, advertised, why, reference)


def scope_plan(
    *,
    resources: Iterable[str],
    reference_resources: Iterable[str] = (),
    supported_resources: Iterable[str] | None,
    scopes_supported: Iterable[str] | None,
    syntax: str,
) -> list[ScopeChoice]:
    """One decision per type: the configured ones, then those read by reference."""
    supported = set(supported_resources) if supported_resources is not None else None
    hint = _hint(scopes_supported)
    configured = list(dict.fromkeys(resources))
    choices = [scope_choice(r, syntax=syntax, supported=supported, hint=hint) for r in configured]
    for resource in dict.fromkeys(reference_resources):
        if resource not in configured:
            choices.append(
                scope_choice(
                    resource, syntax=syntax, supported=supported, hint=hint, reference=True
                )
            )
    return choices


def requested_scopes(
    *,
    resources: Iterable[str],
    supported_resources: Iterable[str] | None,
    scopes_supported: Iterable[str] | None,
    syntax: str,
    reference_resources: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    """(scopes to request, resources requested), plus the base scopes."""
    choices = scope_plan(
        resources=resources,
        reference_resources=reference_resources,
        supported_resources=supported_resources,
        scopes_supported=scopes_supported,
        syntax=syntax,
    )
    chosen = [c for c in choices if c.scope]
    return [*BASE_SCOPES, *(c.scope for c in chosen if c.scope)], [c.resource for c in chosen]


def requested_resources(scopes: str | Iterable[str]) -> list[str]:
    """The resource types a requested scope string names (patient/ or user/), in order."""
    found: dict[str, None] = {}
    for raw in parse_scope_string(scopes):
        parsed = parse_resource_scope(raw)
        if parsed and parsed.context in {"patient", "user"} and parsed.resource != "*":
            found.setdefault(parsed.resource, None)
    return list(found)


# --- What was granted -----------------------------------------------------------------------------


def _readable(granted: Iterable[str]) -> list[ResourceScope]:
    out = []
    for raw in parse_scope_string(granted):
        parsed = parse_resource_scope(raw)
        if parsed and parsed.context in {"patient", "user"} and parsed.reads:
            out.append(parsed)
    return out


def granted_resources(granted: Iterable[str]) -> list[str]:
    """Resource types the granted scopes name for reading (wildcards excluded: see
    `compare_grant`, which resolves them against what was requested)."""
    result: dict[str, None] = {}
    for scope in _readable(granted):
        if scope.resource != "*":
            result.setdefault(scope.resource, None)
    return list(result)


def compare_grant(*, requested: list[str], granted: Iterable[str]) -> tuple[list[str], list[str]]:
    """(granted resources among the requested ones, declined ones), in request order. A
    granted wildcard (`patient/*.rs`) covers every requested type."""
    readable = _readable(granted)
    wildcard = any(s.resource == "*" and s.categories is None for s in readable)
    names = {s.resource for s in readable}
    allowed = [r for r in requested if wildcard or r in names]
    declined = [r for r in requested if r not in allowed]
    return allowed, declined


def granted_categories(granted: str | Iterable[str]) -> dict[str, list[str]]:
    """{type: [category tokens]} for the types the grant limits to some categories (v2
    granular scopes). A type absent here is granted whole (or not at all: see
    `compare_grant`). Tokens are as granted (`system|code`), sorted."""
    whole: set[str] = set()
    limited: dict[str, set[str]] = {}
    wildcard_whole = False
    for scope in _readable(granted):
        categories = scope.categories
        if scope.resource == "*":
            wildcard_whole = wildcard_whole or categories is None
            continue
        if categories is None:
            whole.add(scope.resource)
        else:
            limited.setdefault(scope.resource, set()).update(categories)
    if wildcard_whole:
        return {}
    return {t: sorted(c) for t, c in sorted(limited.items()) if t not in whole}


def category_code(token: str) -> str:
    """The code of a `system|code` token."""
    return token.rsplit("|", 1)[-1]


@dataclass(frozen=True)
class GrantSummary:
    """What a launch's grant means for the connection."""

    allowed: list[str]  # requested types the grant lets the sync read (references included)
    declined: list[str]  # configured types asked for, offered by the server, not granted
    outcome: str  # connected | connected_partial | no_resources_granted


def grant_summary(
    *,
    requested_scopes: str,
    granted: Iterable[str],
    scopes_supported: Iterable[str] | None,
    reference_types: Iterable[str],
) -> GrantSummary:
    """Compare a grant with its request. A type the server does not offer (not in
    `scopes_supported`, not covered by a listed wildcard: asked for because that list is not
    exhaustive) and did not grant is not "declined" (the patient was never asked); a reference
    type not granted is skipped by the sync, which says so on the run. No configured type
    granted: `no_resources_granted` (also what a v2-registered app at Cerner gets when it asks
    in v1)."""
    requested = requested_resources(requested_scopes)
    allowed, not_granted = compare_grant(requested=requested, granted=granted)
    references = set(reference_types)
    hint = _hint(scopes_supported)

    def offered(resource: str) -> bool:
        if not hint.present or hint.wildcards:
            return True
        return any((ctx, resource) in hint.per_type for ctx in ("patient", "user"))

    declined = [r for r in not_granted if r not in references and offered(r)]
    clinical = [r for r in allowed if r not in references]
    outcome = (
        "no_resources_granted" if not clinical else "connected_partial" if declined else "connected"
    )
    return GrantSummary(allowed, declined, outcome)
