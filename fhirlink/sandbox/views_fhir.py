"""The FHIR R4 server: read and search in the patient persona, with fault injection."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import faults
from .conf import PATIENTS_BY_ID, PATIENTS_BY_KEY, PATIENTS_BY_ORDINAL, PROFILE_CERNER, TestPatient
from .fhir import data
from .fhir.data import Ctx, Row
from .fhir.index import changes_version, page_asc, page_desc, row_get, rows_for
from .fhir.search import (
    PAGING,
    SPECS,
    SUPPORTED_TYPES,
    SearchError,
    build_predicate,
    token_values,
    ts_range,
)
from .oauth import TokenContext, bearer_check, grant_revoke
from .responses import FHIR_JSON, fhir_response, insufficient_scope, outcome_response, unauthorized
from .scopes import allowed_categories, allows
from .state import fhir_base, origin_of, tenant_state

PAGE_SALT = "fhirlink.sandbox.page-context"
PROVENANCE_TYPES = (
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "Immunization",
    "Encounter",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "CareTeam",
    "Device",
)
PROV_BASE = 1_000_000_000
SUPPRESSED_DIAGNOSTICS = (
    "Other search results were found but could not be compliantly expressed and hence have "
    "been suppressed"
)


class Denied(Exception):
    def __init__(self, response: HttpResponse) -> None:
        super().__init__("denied")
        self.response = response


# --- Id helpers -----------------------------------------------------------------------------------


def _locate(tenant: str, rtype: str, rid: str) -> tuple[TestPatient, Row] | None:
    parsed = data.parse_id(rtype, rid)
    if parsed is None:
        return None
    patient = PATIENTS_BY_ORDINAL[parsed[0]]
    row = row_get(tenant, patient, rtype, parsed[1])
    if row is None:
        return None
    return patient, row


def _provenance_id(rtype: str, patient: TestPatient, row: Row) -> str:
    return f"all-{data.TYPE_CODES[rtype] * PROV_BASE + data.num(patient.ordinal, row.i)}"


def _has_provenance(rtype: str, row: Row) -> bool:
    return rtype in PROVENANCE_TYPES and row.i % 4 == 0 and row.status != "entered-in-error"


def _provenance(
    ctx: Ctx, rtype: str, patient: TestPatient, row: Row, resource: dict[str, Any]
) -> dict[str, Any]:
    pid = _provenance_id(rtype, patient, row)
    target = f"{rtype}/{resource['id']}"
    return {
        "resourceType": "Provenance",
        "id": pid,
        "meta": {"versionId": "1", "lastUpdated": data.iso(row.lu)},
        "text": data.narrative("Provenance", [("Target", target), ("Recorded", data.iso(row.lu))]),
        "target": [{"reference": target}],
        "recorded": data.iso(row.lu),
        "agent": [
            {
                "type": {
                    "coding": [
                        data.coding(
                            "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "author",
                            "Author",
                        )
                    ],
                    "text": "Author",
                },
                "who": data.practitioner_ref(row.i),
                "onBehalfOf": {"reference": f"Organization/{data.organization_id(0)}"},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": target}}],
    }


def _provenance_lookup(
    ctx: Ctx, tenant: str, pid: str
) -> tuple[TestPatient, dict[str, Any]] | None:
    if not pid.startswith("all-") or not pid[4:].isdigit():
        return None
    value = int(pid[4:])
    tcode, n = divmod(value, PROV_BASE)
    rtype = next((t for t, c in data.TYPE_CODES.items() if c == tcode), "")
    if rtype not in PROVENANCE_TYPES:
        return None
    p, i = data.split_num(n)
    patient = PATIENTS_BY_ORDINAL.get(p)
    if patient is None:
        return None
    row = row_get(tenant, patient, rtype, i)
    if row is None or not _has_provenance(rtype, row):
        return None
    return patient, _provenance(ctx, rtype, patient, row, data.render(ctx, patient, rtype, row))


# --- Pipeline -------------------------------------------------------------------------------------


def _pre_faults(tenant: str, rtype: str, active: dict[str, Any]) -> HttpResponse | None:
    latency = faults.take(tenant, "latency_ms", resource_type=rtype, active=active)
    if latency is not None:
        time.sleep(float(latency.get("ms", latency.get("value", 0))) / 1000)
    stall = faults.take(tenant, "timeout", resource_type=rtype, active=active)
    if stall is not None:
        time.sleep(float(stall.get("seconds", stall.get("value", 30))))
    limited = faults.take(tenant, "rate_limit", resource_type=rtype, active=active)
    if limited is not None:
        response = outcome_response(429, "throttled", "Too many requests.")
        response["Retry-After"] = str(int(limited.get("retry_after", 1)))
        return response
    failing = faults.take(tenant, "status", resource_type=rtype, active=active)
    if failing is not None:
        code = int(failing.get("code", failing.get("value", 500)))
        if code == 429:
            response = outcome_response(429, "throttled", "Too many requests.")
            response["Retry-After"] = str(int(failing.get("retry_after", 1)))
            return response
        if code in {502, 503}:
            return HttpResponse(
                "<html><body>Service Unavailable</body></html>",
                status=code,
                content_type="text/html",
            )
        return outcome_response(
            code, "exception", "An unexpected error occurred.", severity="fatal"
        )
    return None


def _post_faults(
    tenant: str,
    rtype: str,
    active: dict[str, Any],
    response: HttpResponse,
    body: Any,
    is_search: bool,
) -> HttpResponse:
    if response.status_code != 200 or body is None:
        return response
    if faults.take(tenant, "malformed_json", resource_type=rtype, active=active) is not None:
        return HttpResponse(
            '{"resourceType": "Bundle", "entry": [<html>Proxy error</html>',
            content_type=f"{FHIR_JSON}; charset=utf-8",
        )
    if (
        is_search
        and faults.take(tenant, "truncated_page", resource_type=rtype, active=active) is not None
    ):
        text = json.dumps(body, separators=(",", ":"))
        return HttpResponse(
            text[: max(len(text) // 2, 1)], content_type=f"{FHIR_JSON}; charset=utf-8"
        )
    if (
        is_search
        and faults.take(tenant, "invalid_fhir", resource_type=rtype, active=active) is not None
    ):
        broken = dict(body)
        broken["entry"] = [
            {
                "fullUrl": e.get("fullUrl"),
                "resource": {k: v for k, v in e.get("resource", {}).items() if k != "resourceType"},
            }
            for e in body.get("entry", [])
        ] or [{"resource": {"id": "x"}}]
        broken["type"] = "not-a-bundle-type"
        return fhir_response(broken)
    has_next = any(link["relation"] == "next" for link in body.get("link", []))
    if (
        is_search
        and has_next
        and faults.take(tenant, "looping_next", resource_type=rtype, active=active)
    ):
        looped = dict(body)
        self_url = next(link["url"] for link in body["link"] if link["relation"] == "self")
        looped["link"] = [
            link if link["relation"] != "next" else {"relation": "next", "url": self_url}
            for link in body["link"]
        ]
        return fhir_response(looped)
    return response


@csrf_exempt
def fhir_endpoint(
    request: HttpRequest,
    tenant: str,
    rtype: str,
    rid: str | None = None,
    profile: str = PROFILE_CERNER,
) -> HttpResponse:
    state = tenant_state(tenant)
    if not state.exists or state.profile != profile:
        return outcome_response(403, "forbidden", "Tenant not valid or accessible.")
    if request.method not in {"GET", "HEAD"}:
        return outcome_response(405, "not-supported", "The patient persona cannot write.")
    if rtype not in SUPPORTED_TYPES:
        return outcome_response(404, "not-supported", f"Resource type '{rtype}' is not supported.")
    active = faults.faults_active(tenant, state.faults)
    early = _pre_faults(tenant, rtype, active)
    if early is not None:
        return early
    token = bearer_check(
        tenant=tenant, authorization=request.headers.get("Authorization", ""), now=state.now
    )
    if token is None:
        return unauthorized()
    token = replace(token, profile=profile)
    if faults.count_request(tenant, active):
        grant_revoke(grant_id=token.grant_id)
        return unauthorized("Token has been revoked")
    ctx = Ctx(tenant=tenant, base=fhir_base(origin_of(request), tenant, profile))
    if rtype == "Binary":
        if rid is None:
            return outcome_response(405, "not-supported", "Binary supports read only.")
        return _binary(request, ctx, token, rid)
    accept = request.headers.get("Accept", "")
    if accept and "json" not in accept and "*/*" not in accept:
        return outcome_response(406, "not-supported", "Only JSON is supported.")
    try:
        if rid is not None:
            body = _read(ctx, token, rtype, rid)
            return _post_faults(tenant, rtype, active, fhir_response(body), body, False)
        body = _search(request, ctx, token, rtype)
    except Denied as denied:
        return denied.response
    except SearchError as error:
        return outcome_response(error.status, error.code, error.diagnostics)
    return _post_faults(tenant, rtype, active, fhir_response(body), body, True)


def _need_scope(token: TokenContext, rtype: str, interaction: str) -> None:
    """Every read and search needs a scope for its type, references included (a Practitioner
    read without a Practitioner scope is 403), as at the strictest real server."""
    if not allows(token.scopes, rtype, interaction):
        raise Denied(insufficient_scope(token.profile, rtype))


def _forbidden() -> Denied:
    return Denied(
        outcome_response(
            403, "forbidden", "The requested resource is outside the patient's compartment."
        )
    )


def _not_found(rtype: str, rid: str) -> Denied:
    return Denied(outcome_response(404, "not-found", f"Resource {rtype}/{rid} not found."))


def _read(ctx: Ctx, token: TokenContext, rtype: str, rid: str) -> dict[str, Any]:
    _need_scope(token, rtype, "read")
    me = PATIENTS_BY_KEY[token.patient_key]
    if rtype in data.SHARED_TYPES:
        found = data.render_shared(ctx, rtype, rid)
        if found is None:
            raise _not_found(rtype, rid)
        return found
    if rtype == "Patient":
        if rid == me.fhir_id:
            return data.render_patient(ctx, me)
        raise _forbidden() if rid in PATIENTS_BY_ID else _not_found(rtype, rid)
    if rtype == "Provenance":
        hit = _provenance_lookup(ctx, ctx.tenant, rid)
        if hit is None:
            raise _not_found(rtype, rid)
        if hit[0].key != me.key:
            raise _forbidden()
        return hit[1]
    located = _locate(ctx.tenant, rtype, rid)
    if located is None:
        raise _not_found(rtype, rid)
    patient, row = located
    resource = data.render(ctx, patient, rtype, row)
    if resource["id"] != rid or data.suppressed(rtype, row.i):
        raise _not_found(rtype, rid)
    if patient.key != me.key:
        raise _forbidden()
    limited = allowed_categories(token.scopes, rtype, "read")
    if limited is not None and row.category not in limited:
        raise Denied(insufficient_scope(token.profile, rtype))
    return resource


def _query(request: HttpRequest) -> dict[str, list[str]]:
    return {k: request.GET.getlist(k) for k in request.GET}


def _patient_param(q: dict[str, list[str]], me: TestPatient) -> None:
    for param in ("patient", "subject"):
        for value in q.get(param, []):
            pid = value.removeprefix("Patient/")
            if pid != me.fhir_id:
                raise _forbidden()


def _entry(ctx: Ctx, resource: dict[str, Any], mode: str = "match") -> dict[str, Any]:
    return {
        "fullUrl": f"{ctx.base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _bundle(
    ctx: Ctx,
    self_url: str,
    entries: list[dict[str, Any]],
    *,
    next_url: str = "",
    total: int | None = None,
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": "self", "url": self_url}]
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    bundle["entry"] = entries
    return bundle


def _search(request: HttpRequest, ctx: Ctx, token: TokenContext, rtype: str) -> dict[str, Any]:
    spec = SPECS[rtype]
    me = PATIENTS_BY_KEY[token.patient_key]
    self_url = request.build_absolute_uri()
    q = _query(request)
    after: tuple[int, int] | None = None
    first_page = True
    if "-pageContext" in q:
        try:
            state = signing.loads(q["-pageContext"][0], salt=PAGE_SALT)
        except signing.BadSignature:
            raise SearchError("Invalid -pageContext.") from None
        if state.get("t") != rtype or state.get("u") != me.fhir_id or state.get("tn") != ctx.tenant:
            raise SearchError("Invalid -pageContext.")
        q = {k: list(v) for k, v in state["q"].items()}
        after = (int(state["k"][0]), int(state["k"][1]))
        first_page = False
    else:
        supplied = {k for k in q if k not in PAGING}
        if not any(all(p in supplied for p in alt) for alt in spec.required):
            raise SearchError("No supported search parameters provided.")
        if "_id" in supplied and supplied - {"_id", "_revinclude", "_count"}:
            raise SearchError("The _id parameter cannot be combined with other search parameters.")
        unknown = supplied - set(spec.params) - {p for alt in spec.required for p in alt}
        if unknown:
            raise SearchError(f"Unsupported search parameter(s): {', '.join(sorted(unknown))}.")
    _need_scope(token, rtype, "search")
    limited = allowed_categories(token.scopes, rtype, "search")
    if limited is not None:
        # Granted only some categories: the search must ask for those (or fewer) only.
        asked = token_values(",".join(q.get("category", [])))
        if not asked or not asked <= limited:
            raise Denied(insufficient_scope(token.profile, rtype))
    revinclude = q.get("_revinclude", [])
    if revinclude:
        if not spec.revinclude or revinclude != ["Provenance:target"]:
            raise SearchError("Unsupported _revinclude.")
        if not allows(token.scopes, "Provenance", "search") and not allows(
            token.scopes, "Provenance", "read"
        ):
            raise Denied(insufficient_scope(token.profile, "Provenance"))
    count = spec.page_size
    if spec.count is not None:
        default, maximum = spec.count
        count = default
        if q.get("_count"):
            try:
                count = int(q["_count"][0])
            except ValueError:
                raise SearchError("_count must be an integer.") from None
            if count < 1:
                raise SearchError("_count must be positive.")
            count = min(count, maximum)
    if rtype in data.SHARED_TYPES:
        ids = [i for v in q.get("_id", []) for i in v.split(",") if i]
        entries = [
            _entry(ctx, r)
            for r in (data.render_shared(ctx, rtype, i) for i in ids)
            if r is not None
        ]
        return _bundle(ctx, self_url, entries, total=len(entries) if spec.total else None)
    if rtype == "Patient":
        return _search_patient(ctx, me, q, self_url, spec.total)
    if rtype == "Provenance":
        return _search_provenance(ctx, me, q, self_url)
    _patient_param(q, me)
    if "_id" in q:
        entries = []
        for rid in (i for v in q["_id"] for i in v.split(",") if i):
            located = _locate(ctx.tenant, rtype, rid)
            if located is None or located[0].key != me.key or data.suppressed(rtype, located[1].i):
                continue
            resource = data.render(ctx, me, rtype, located[1])
            if resource["id"] == rid:
                entries.append(_entry(ctx, resource))
                if revinclude and _has_provenance(rtype, located[1]):
                    entries.append(
                        _entry(ctx, _provenance(ctx, rtype, me, located[1], resource), "include")
                    )
        return _bundle(ctx, self_url, entries, total=len(entries) if spec.total else None)
    filters = {
        k: v
        for k, v in q.items()
        if k not in {"_count", "_revinclude", "patient", "subject", *PAGING}
    }
    if rtype == "CareTeam" and "encounter" in q:
        filters.setdefault("category", ["encounter"])
        filters.pop("encounter", None)
    if rtype == "Encounter":
        for param in ("account", "identifier"):
            filters.pop(param, None)
    for param in ("encounter", "target-disease"):
        filters.pop(param, None)
    key, predicate = build_predicate(rtype, filters)
    bounds = ts_range(rtype, filters)
    version = changes_version(ctx.tenant, me, rtype)
    rows, keys = rows_for(ctx.tenant, me, rtype, key, predicate, version, bounds)
    entries = []
    social: list[Row] = []
    if rtype == "Observation" and first_page:
        # Social history always comes on the first page, whatever _count says.
        social = [r for r in rows if r.category == "social-history"]
    if rtype == "Observation":
        paged_rows, paged_keys = _without_social(ctx.tenant, me, key, predicate, version, bounds)
    else:
        paged_rows, paged_keys = rows, keys
    if spec.ascending:
        lo, hi = page_asc(paged_keys, after, count)
        page = list(paged_rows[lo:hi])
        more = hi < len(paged_rows)
        last = page[-1] if page else None
    else:
        lo, hi = page_desc(paged_keys, after, count)
        page = list(reversed(paged_rows[lo:hi]))
        more = lo > 0
        last = page[-1] if page else None
    hidden = 0
    for row in [*reversed(social), *page]:
        if data.suppressed(rtype, row.i):
            hidden += 1
            continue
        resource = data.render(ctx, me, rtype, row)
        entries.append(_entry(ctx, resource))
        if revinclude and _has_provenance(rtype, row):
            entries.append(_entry(ctx, _provenance(ctx, rtype, me, row, resource), "include"))
    if hidden:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "warning",
                            "code": "suppressed",
                            "diagnostics": SUPPRESSED_DIAGNOSTICS,
                        }
                    ],
                },
                "search": {"mode": "outcome"},
            }
        )
    next_url = ""
    if more and last is not None:
        state = {
            "t": rtype,
            "u": me.fhir_id,
            "tn": ctx.tenant,
            "q": filters
            | ({"_count": [str(count)]} if spec.count else {})
            | ({"_revinclude": revinclude} if revinclude else {}),
            "k": [last.ts, last.i],
        }
        context = signing.dumps(state, salt=PAGE_SALT, compress=True)
        next_url = f"{ctx.base}/{rtype}?" + urlencode(
            {"patient": me.fhir_id, "-pageContext": context, "-pageDirection": "NEXT"}
        )
    total = len([r for r in rows if not data.suppressed(rtype, r.i)]) if spec.total else None
    return _bundle(ctx, self_url, entries, next_url=next_url, total=total)


def _without_social(
    tenant: str,
    me: TestPatient,
    key: tuple[Any, ...],
    predicate: Any,
    version: int,
    bounds: tuple[int, int] | None,
) -> tuple[Any, Any]:
    combined = (
        (lambda r: predicate(r) and r.category != "social-history")
        if predicate
        else (lambda r: r.category != "social-history")
    )
    return rows_for(tenant, me, "Observation", ("no-social", *key), combined, version, bounds)


def _search_patient(
    ctx: Ctx, me: TestPatient, q: dict[str, list[str]], self_url: str, with_total: bool
) -> dict[str, Any]:
    resource = data.render_patient(ctx, me)
    checks = []
    for rid in (i for v in q.get("_id", []) for i in v.split(",")):
        checks.append(rid == me.fhir_id)
    if q.get("family"):
        checks.append(q["family"][0].upper() in me.family.upper())
    if q.get("given"):
        checks.append(q["given"][0].upper() in me.given.upper())
    if q.get("name"):
        checks.append(q["name"][0].upper() in f"{me.given} {me.family}".upper())
    if q.get("birthdate"):
        checks.append(q["birthdate"][0].removeprefix("eq") == me.birth_date)
    if q.get("gender"):
        checks.append(q["gender"][0] == me.gender)
    if q.get("identifier"):
        checks.append(q["identifier"][0].split("|")[-1] == resource["identifier"][0]["value"])
    if q.get("email"):
        checks.append(q["email"][0] == f"{me.username}@sandbox.invalid")
    if q.get("address-postalcode"):
        checks.append(q["address-postalcode"][0] == "64105")
    if q.get("phone"):
        checks.append(False)
    entries = [_entry(ctx, resource)] if checks and all(checks) else []
    return _bundle(ctx, self_url, entries, total=len(entries) if with_total else None)


def _search_provenance(
    ctx: Ctx, me: TestPatient, q: dict[str, list[str]], self_url: str
) -> dict[str, Any]:
    entries = []
    for pid in (i for v in q.get("_id", []) for i in v.split(",") if i):
        hit = _provenance_lookup(ctx, ctx.tenant, pid)
        if hit is not None and hit[0].key == me.key:
            entries.append(_entry(ctx, hit[1]))
    for target in (i for v in q.get("target", []) for i in v.split(",") if i):
        rtype, _, rid = target.rpartition("/")
        if rtype not in PROVENANCE_TYPES:
            continue
        located = _locate(ctx.tenant, rtype, rid)
        if located is None or located[0].key != me.key or not _has_provenance(rtype, located[1]):
            continue
        resource = data.render(ctx, me, rtype, located[1])
        entries.append(_entry(ctx, _provenance(ctx, rtype, me, located[1], resource)))
    return _bundle(ctx, self_url, entries)


def _binary(request: HttpRequest, ctx: Ctx, token: TokenContext, rid: str) -> HttpResponse:
    if not allows(token.scopes, "Binary", "read") or not (
        allows(token.scopes, "DocumentReference", "read")
        or allows(token.scopes, "DiagnosticReport", "read")
        or allows(token.scopes, "DocumentReference", "search")
    ):
        return insufficient_scope(token.profile, "Binary")
    if not rid.startswith(("XR-", "TR-")):
        return outcome_response(404, "not-found", f"Resource Binary/{rid} not found.")
    located = _locate(ctx.tenant, "DocumentReference", rid[3:])
    if located is None or data.suppressed("DocumentReference", located[1].i):
        return outcome_response(404, "not-found", f"Resource Binary/{rid} not found.")
    patient, row = located
    expected = (
        f"XR-{data.num(patient.ordinal, row.i)}"
        if row.i % 2 == 0
        else f"TR-{data.num(patient.ordinal, row.i)}"
    )
    if expected != rid:
        return outcome_response(404, "not-found", f"Resource Binary/{rid} not found.")
    if patient.key != token.patient_key:
        return outcome_response(
            403, "forbidden", "The requested resource is outside the patient's compartment."
        )
    content_type, content = data.binary_content(patient, "DocumentReference", row, rid)
    accept = request.headers.get("Accept", "") or FHIR_JSON
    wanted = [a.split(";")[0].strip() for a in accept.split(",")]
    if FHIR_JSON in wanted or "*/*" in wanted:
        return fhir_response(data.binary_resource(rid, content_type, content, row))
    if content_type in wanted:
        response = HttpResponse(content, content_type=content_type)
        response["Content-Disposition"] = f'inline; filename="{rid}"'
        return response
    return outcome_response(
        406,
        "not-supported",
        "Accept must be application/fhir+json or the attachment's content type.",
    )
