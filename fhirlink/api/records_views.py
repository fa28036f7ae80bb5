"""Records API for the mobile app (read side of the synced-record store).

Every view is scoped to the signed-in patient (`request.user.patient`, from the OAuth token);
another patient's ids and cursors answer 404 / 400 `invalid_cursor`, never data. Each request
writes one access-log row (list views name the page's record ids).

Consent: reading needs only the token scope (`records:read`, export `records:export`). Revoking
`ehr_sync` stops syncing (the sync engine's handler) but does not hide what was already synced:
it is the patient's own copy, and deleting it is the explicit purge on disconnect or account
deletion. Responses say where each record came from (`source`) so the app can show staleness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from fhirlink.models import SyncedResource
from fhirlink.records import changes, export, normalize, selectors, summary, timeline, trends
from fhirlink.records.paging import page_by_date_desc
from fhirlink.records.scope import RecordScope, record_scope
from patientportal.accesslog.logged import AccessLoggedAPIMixin
from patientportal.accesslog.models import AccessAction
from patientportal.core.api.permissions import PATIENT_API
from patientportal.core.api.schema import SELF_OR_UUID
from patientportal.core.errors import ApplicationError, NotFound

from .records_serializers import (
    ChangesSerializer,
    DocumentContentQuerySerializer,
    ExportCreateSerializer,
    ExportSerializer,
    PageQuerySerializer,
    RecordDetailQuerySerializer,
    RecordListQuerySerializer,
    RecordPageSerializer,
    RecordSerializer,
    SummarySerializer,
    TrendQuerySerializer,
    TrendSerializer,
)

ERRORS = {
    400: OpenApiResponse(
        description="`validation_failed` / `invalid_cursor` (shared error format)."
    ),
    401: OpenApiResponse(description="`not_authenticated`."),
    403: OpenApiResponse(description="`insufficient_scope` / `permission_denied`."),
}
NOT_FOUND = {404: OpenApiResponse(description="`not_found` (also for another patient's id).")}
NOT_MODIFIED = {304: OpenApiResponse(description="Not modified (If-None-Match matched the ETag).")}

CURSOR = OpenApiParameter("cursor", str, description="Opaque cursor from `next_cursor`.")
PAGE_SIZE = OpenApiParameter("page_size", int, description="1-200, default 50.")
INCLUDE = OpenApiParameter("include", str, enum=["raw"], description="Add the raw FHIR resource.")
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match", str, OpenApiParameter.HEADER, description="An ETag from a previous response."
)

RECORD_EXAMPLE = {
    "id": 4711,
    "resource_type": "Observation",
    "fhir_id": "VS-197292857",
    "display": "Temperature Axillary",
    "code": {"system": "http://loinc.org", "code": "8328-7", "display": "Axillary temperature"},
    "codings": [
        {
            "system": "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/72",
            "code": "703535",
            "display": "Temperature Axillary",
        },
        {"system": "http://loinc.org", "code": "8328-7", "display": "Axillary temperature"},
    ],
    "category": "vital-signs",
    "status": "final",
    "date": "2020-07-06T21:11:00.000Z",
    "value": 37.1,
    "unit": "degC",
    "value_text": None,
    "components": [],
    "source": {
        "connection": "7b0e4b8e-9a55-4c1e-9d0f-2f1c1b7a9e01",
        "health_system": "Sandbox Health",
        "health_system_slug": "sandbox",
    },
    "last_updated": "2020-07-06T21:13:24+00:00",
    "flags": {"valid": True, "validation_error": "", "unreadable": False},
}


# Whose records (issue #20): an account may hold the records of the people it manages.
PERSON = OpenApiParameter(
    "person",
    SELF_OR_UUID,
    description=(
        "Whose records: `self` (the default: the account holder's own, every health system "
        "together) or the `id` of a connection whose `person.relationship` is not `self` (a "
        "record the account holder manages, e.g. a child's). 400 `invalid_person` when "
        "malformed; 404 `person_not_found` when not one of this account's managed records."
    ),
    required=False,
)


def _patient(request: Request) -> RecordScope:
    return record_scope(
        patient=request.user.patient,  # type: ignore[union-attr]
        person=request.query_params.get("person"),
    )


def _etag(rows: Iterable[SyncedResource | selectors.RecordRow], *extra: Any) -> str:
    digest = hashlib.sha256()
    for part in extra:
        digest.update(repr(part).encode())
    for row in rows:
        digest.update(f"|{row.pk}:{row.payload_digest}:{row.updated_at.isoformat()}".encode())
    return f'W/"{digest.hexdigest()[:32]}"'


def _not_modified(request: Request, etag: str) -> Response | None:
    wanted = request.headers.get("If-None-Match", "")
    if wanted and etag in {t.strip() for t in wanted.split(",")}:
        response = Response(status=status.HTTP_304_NOT_MODIFIED)
        response["ETag"] = etag
        return response
    return None


def _ok(data: Any, etag: str) -> Response:
    response = Response(data)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _next_url(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params = {k: v for k, v in request.query_params.items() if k != "cursor"}
    params["cursor"] = cursor
    return request.build_absolute_uri(request.path) + "?" + urlencode(params)


def _resource_type(record_type: str) -> str:
    try:
        return selectors.RECORD_TYPES[record_type]
    except KeyError:
        raise NotFound("No such record type.", code="unknown_record_type") from None


class RecordsBase(AccessLoggedAPIMixin, APIView):
    permission_classes = PATIENT_API
    required_scopes = ["records:read"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Whose record each read was of, so the access log can be read per person.
        self.access_log_touch(query={"person": request.query_params.get("person") or "self"})


class RecordsSummaryView(RecordsBase):
    access_log_resource_type = "summary"

    @extend_schema(
        operation_id="records_summary",
        summary="The summary screen in one call",
        parameters=[PERSON, IF_NONE_MATCH],
        responses={200: SummarySerializer, **NOT_MODIFIED, **ERRORS},
        examples=[
            OpenApiExample(
                "Summary",
                response_only=True,
                value={
                    "demographics": {
                        "name": "Nancy Smart",
                        "birth_date": "1980-08-11",
                        "gender": "female",
                        "deceased": False,
                        "phone": None,
                        "email": None,
                        "address": None,
                        "active": True,
                        "record_id": 12,
                        "health_system": "Sandbox Health",
                    },
                    "conditions": [],
                    "medications": [],
                    "allergies": [],
                    "vital_signs": [RECORD_EXAMPLE],
                    "lab_results": [],
                    "immunizations": [],
                    "counts": {
                        "active_conditions": 0,
                        "active_medications": 0,
                        "allergies": 0,
                        "vital_signs": 1,
                        "lab_results": 0,
                        "immunizations": 0,
                        "encounters": 0,
                        "documents": 0,
                    },
                    "sharing": [
                        {
                            "record_type": "observations",
                            "resource_type": "Observation",
                            "sharing": "partly_shared",
                            "categories": [
                                {"category": "laboratory", "sharing": "shared"},
                                {"category": "vital-signs", "sharing": "not_shared"},
                            ],
                        },
                        {
                            "record_type": "conditions",
                            "resource_type": "Condition",
                            "sharing": "not_shared",
                            "categories": [],
                        },
                    ],
                },
            )
        ],
        description=(
            "Demographics (from the synced Patient resource), active conditions, active "
            "medications, allergies, the latest vital sign per code, recent lab results and "
            "immunizations (newest first, up to 20 each) and the counts of each section. "
            "Entered-in-error, masked and deleted records are never included. `sharing` says, "
            "per record type and per Observation category, whether the patient shared it with "
            "this app at the health system (a type or category not shared lists empty, never "
            "an error)."
        ),
    )
    def get(self, request: Request) -> Response:
        data, rows = summary.summary_build(patient=_patient(request))
        self.access_log_touch(resource_ids=[r.pk for r in rows], query={"count": len(rows)})
        etag = _etag(rows, "summary", sorted(data["counts"].items()), data["sharing"])
        return _not_modified(request, etag) or _ok(data, etag)


class RecordListView(RecordsBase):
    access_log_action = AccessAction.LIST

    @extend_schema(
        operation_id="records_list",
        summary="List one resource type",
        parameters=[
            PERSON,
            OpenApiParameter(
                "record_type",
                str,
                OpenApiParameter.PATH,
                enum=sorted(selectors.RECORD_TYPES),
                description="Resource type (medications = MedicationRequest, "
                "documents = DocumentReference, ...).",
            ),
            RecordListQuerySerializer,
            IF_NONE_MATCH,
        ],
        responses={200: RecordPageSerializer, **NOT_MODIFIED, **ERRORS, **NOT_FOUND},
        examples=[
            OpenApiExample(
                "A page",
                response_only=True,
                value={"results": [RECORD_EXAMPLE], "next": None, "next_cursor": None},
            )
        ],
        description=(
            "Newest clinical date first (undated last), then id; cursor-paged. Filters: "
            "`category` (e.g. vital-signs, laboratory), `code` (comma-separated codes; LOINC or "
            "the site's code), `status` (status or clinical status), `date_from`/`date_to` "
            "(date or date-time; to is exclusive), `connection` (UUID), `health_system` (slug). "
            "Invalid-but-stored resources are served with `flags.valid=false`."
        ),
    )
    def get(self, request: Request, record_type: str) -> Response:
        resource_type = _resource_type(record_type)
        self.access_log_touch(resource_type=resource_type)
        query = RecordListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        codes = tuple(c.strip() for c in q.get("code", "").split(",") if c.strip())
        filters = selectors.RecordFilters(
            category=q.get("category", ""),
            code=codes,
            status=q.get("status", ""),
            date_from=q.get("date_from"),
            date_to=q.get("date_to"),
            connection=q.get("connection"),
            health_system=q.get("health_system", ""),
        )
        patient = _patient(request)
        qs = selectors.records_filter(
            selectors.records_live(patient=patient, resource_type=resource_type), filters
        )
        page = page_by_date_desc(
            qs,
            kind=f"list:{resource_type}",
            patient_id=patient.pk,
            cursor=q.get("cursor"),
            size=q["page_size"],
        )
        self.access_log_touch(
            resource_ids=[r.pk for r in page.rows],
            query={
                "count": len(page.rows),
                "filters": {k: str(v) for k, v in q.items() if k not in ("cursor", "page_size")},
            },
        )
        include_raw = q.get("include") == "raw"
        etag = _etag(page.rows, "list", sorted(request.query_params.items()))
        cached = _not_modified(request, etag)
        if cached:
            return cached
        reader = selectors.PayloadReader(patient)
        results = [
            normalize.record_normalize(r, reader.read(r), include_raw=include_raw)
            for r in page.rows
        ]
        return _ok(
            {
                "results": results,
                "next": _next_url(request, page.next_cursor),
                "next_cursor": page.next_cursor,
            },
            etag,
        )


class RecordDetailView(RecordsBase):
    @extend_schema(
        operation_id="records_retrieve",
        summary="One record",
        parameters=[
            PERSON,
            OpenApiParameter(
                "record_type", str, OpenApiParameter.PATH, enum=sorted(selectors.RECORD_TYPES)
            ),
            OpenApiParameter("record_id", int, OpenApiParameter.PATH),
            RecordDetailQuerySerializer,
            IF_NONE_MATCH,
        ],
        responses={200: RecordSerializer, **NOT_MODIFIED, **ERRORS, **NOT_FOUND},
        examples=[OpenApiExample("Friendly view", response_only=True, value=RECORD_EXAMPLE)],
        description=(
            "The friendly view by default; `view=fhir` answers the FHIR resource exactly as "
            "received; `include=raw` adds it to the friendly view as `resource`."
        ),
    )
    def get(self, request: Request, record_type: str, record_id: int) -> Response:
        resource_type = _resource_type(record_type)
        self.access_log_touch(resource_type=resource_type, resource_ids=[record_id])
        query = RecordDetailQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        patient = _patient(request)
        row = selectors.record_get(
            patient=patient, resource_type=resource_type, record_id=record_id
        )
        if row is None:
            raise NotFound("No such record.")
        view = query.validated_data["view"]
        include_raw = query.validated_data.get("include") == "raw"
        etag = _etag([row], "detail", view, include_raw)
        cached = _not_modified(request, etag)
        if cached:
            return cached
        resource = selectors.PayloadReader(patient).read(row)
        if view == "fhir":
            if resource is None:
                raise RecordUnreadable()
            response = _ok(resource, etag)
            return response
        return _ok(normalize.record_normalize(row, resource, include_raw=include_raw), etag)


class RecordUnreadable(ApplicationError):
    status_code = 410
    default_code = "record_unreadable"
    default_message = "This record's data was erased."


class AttachmentNotSynced(ApplicationError):
    status_code = 404
    default_code = "attachment_not_synced"
    default_message = (
        "The attachment has not been synced (not granted, too large, of a type not synced, or "
        "hosted elsewhere)."
    )


class DocumentContentView(RecordsBase):
    access_log_resource_type = "DocumentReference"

    @extend_schema(
        operation_id="records_document_content",
        summary="Download a document's attachment",
        parameters=[
            PERSON,
            OpenApiParameter("record_id", int, OpenApiParameter.PATH),
            DocumentContentQuerySerializer,
        ],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="The attachment bytes with their own Content-Type (e.g. "
                "application/pdf, text/html).",
            ),
            **ERRORS,
            404: OpenApiResponse(
                description="`not_found`, or `attachment_not_synced` when the Binary is not in "
                "the store."
            ),
        },
        description=(
            "The DocumentReference's attachment number `attachment` (default 0): inline data, "
            "or the Binary the sync stored for the attachment URL (same connection only)."
        ),
    )
    def get(self, request: Request, record_id: int) -> HttpResponse:
        self.access_log_touch(resource_ids=[record_id])
        query = DocumentContentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        patient = _patient(request)
        row = selectors.record_get(
            patient=patient, resource_type="DocumentReference", record_id=record_id
        )
        if row is None:
            raise NotFound("No such document.")
        reader = selectors.PayloadReader(patient)
        resource = reader.read(row)
        if resource is None:
            raise RecordUnreadable()
        items = normalize.attachments(resource)
        index = query.validated_data["attachment"]
        if index >= len(items):
            raise NotFound("No such attachment.", code="attachment_not_found")
        content_type, body = selectors.attachment_content(
            patient=patient, row=row, attachment=items[index], reader=reader
        )
        if body is None:
            raise AttachmentNotSynced()
        content_type = content_type or "application/octet-stream"
        response = HttpResponse(
            body, content_type=content_type.split(";")[0].strip() or content_type
        )
        response["Content-Disposition"] = f'attachment; filename="document-{row.pk}-{index}"'
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class TrendView(RecordsBase):
    access_log_resource_type = "Observation"
    access_log_action = AccessAction.SEARCH

    @extend_schema(
        operation_id="records_trend",
        summary="Time series of an observation code",
        parameters=[PERSON, TrendQuerySerializer],
        responses={200: TrendSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "Blood pressure",
                response_only=True,
                value={
                    "code": "85354-9",
                    "display": "Blood pressure",
                    "unit": "mm[Hg]",
                    "series": [
                        {
                            "code": "8480-6",
                            "display": "Systolic blood pressure",
                            "unit": "mm[Hg]",
                            "points": [
                                {
                                    "date": "2024-03-01T09:00:00Z",
                                    "value": 120.0,
                                    "original_value": 120.0,
                                    "original_unit": "mm[Hg]",
                                    "record_id": 17,
                                    "health_system": "Sandbox Health",
                                }
                            ],
                        },
                        {
                            "code": "8462-4",
                            "display": "Diastolic blood pressure",
                            "unit": "mm[Hg]",
                            "points": [],
                        },
                    ],
                    "skipped": 0,
                    "truncated": False,
                },
            )
        ],
        description=(
            "Oldest first. `code` is a LOINC code; equivalents match too (body temperature "
            "8310-5 includes axillary/oral/..., weight 29463-7 includes 3141-9), blood pressure "
            "85354-9 answers two series (systolic 8480-6, diastolic 8462-4 from its components) "
            "and 8480-6/8462-4 alone read the panels' components. Canonical units: kg, cm, Cel, "
            "mg/dL (glucose; mmol/L x 18.016), mm[Hg], /min, %. Cerner codeSet codes match where "
            "`FHIRLINK_RECORDS_CERNER_CODE_MAP` maps them. At most 2000 newest points. Without "
            "`code`: the codes the patient has (`available`), for a picker."
        ),
    )
    def get(self, request: Request) -> Response:
        query = TrendQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        if not q.get("code"):
            available = trends.trend_codes_available(patient=_patient(request))
            self.access_log_touch(query={"count": len(available)})
            return Response(
                {
                    "code": "",
                    "display": "",
                    "unit": "",
                    "series": [],
                    "skipped": 0,
                    "truncated": False,
                    "available": available,
                }
            )
        result = trends.trend_build(
            patient=_patient(request),
            code=q["code"],
            date_from=q.get("date_from"),
            date_to=q.get("date_to"),
            connection=q.get("connection"),
        )
        ids = [p["record_id"] for s in result.series for p in s.points]
        self.access_log_touch(resource_ids=sorted(set(ids)), query={"code": q["code"]})
        data = {
            "code": result.code,
            "display": result.display,
            "unit": result.unit,
            "series": [s.__dict__ for s in result.series],
            "skipped": result.skipped,
            "truncated": result.truncated,
        }
        return Response(data)


class TimelineView(RecordsBase):
    access_log_resource_type = "timeline"
    access_log_action = AccessAction.LIST

    @extend_schema(
        operation_id="records_timeline",
        summary="Encounters, procedures, results and documents, newest first",
        parameters=[PERSON, PageQuerySerializer, IF_NONE_MATCH],
        responses={200: RecordPageSerializer, **NOT_MODIFIED, **ERRORS},
        examples=[
            OpenApiExample(
                "A page",
                response_only=True,
                value={"results": [RECORD_EXAMPLE], "next": None, "next_cursor": None},
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        items, next_cursor, rows = timeline.timeline_page(
            patient=_patient(request),
            cursor=q.get("cursor"),
            size=q["page_size"],
            include_raw=q.get("include") == "raw",
        )
        self.access_log_touch(resource_ids=[r.pk for r in rows], query={"count": len(rows)})
        etag = _etag(rows, "timeline", sorted(request.query_params.items()))
        return _not_modified(request, etag) or _ok(
            {"results": items, "next": _next_url(request, next_cursor), "next_cursor": next_cursor},
            etag,
        )


class ChangesView(RecordsBase):
    access_log_resource_type = "changes"
    access_log_action = AccessAction.LIST

    @extend_schema(
        operation_id="records_changes",
        summary="Changes since a cursor (offline cache)",
        parameters=[PERSON, PageQuerySerializer],
        responses={200: ChangesSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "A tombstone",
                response_only=True,
                value={
                    "results": [
                        {
                            "id": 4711,
                            "resource_type": "Observation",
                            "fhir_id": "L-197412603",
                            "deleted": True,
                            "reason": "entered-in-error",
                            "changed_at": "2026-11-24T07:00:00+00:00",
                            "record": None,
                        }
                    ],
                    "next_cursor": "eyJ...opaque",
                    "has_more": False,
                },
            )
        ],
        description=(
            "Without `cursor`: everything from the start. Oldest change first; keep "
            "`next_cursor` and call again (immediately while `has_more`). Deleted, "
            "entered-in-error and masked records come as tombstones (`deleted: true`, no data). "
            "Changes become visible after a settle window (30 s) so none is ever skipped."
        ),
    )
    def get(self, request: Request) -> Response:
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        result = changes.changes_since(
            patient=_patient(request),
            cursor=q.get("cursor"),
            size=q["page_size"],
            include_raw=q.get("include") == "raw",
        )
        self.access_log_touch(
            resource_ids=[i["id"] for i in result.items], query={"count": len(result.items)}
        )
        response = Response(
            {
                "results": result.items,
                "next_cursor": result.next_cursor,
                "has_more": result.has_more,
            }
        )
        response["Cache-Control"] = "private, no-store"
        return response


def _export_body(request: Request, state: dict[str, Any]) -> dict[str, Any]:
    download = None
    if state["status"] == "ready":
        download = request.build_absolute_uri(
            reverse("fhirlink-records-export-download", kwargs={"export_id": state["id"]})
        )
    hidden = ("patient", "person")
    return {**{k: v for k, v in state.items() if k not in hidden}, "download_url": download}


class ExportCreateView(RecordsBase):
    required_scopes = ["records:export"]
    access_log_action = AccessAction.EXPORT
    access_log_resource_type = "export"

    @extend_schema(
        operation_id="records_export_create",
        summary="Start an export of everything as FHIR",
        request=ExportCreateSerializer,
        parameters=[PERSON],
        responses={202: ExportSerializer, **ERRORS},
        description=(
            "Starts a background job. Poll the export until `status` is `ready`, then download "
            "it once from `download_url` (with the token) before `expires_at`. `format`: "
            "`bundle` (a FHIR collection Bundle) or `ndjson` (one resource per line)."
        ),
    )
    def post(self, request: Request) -> Response:
        data = ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        state = export.export_request(patient=_patient(request), fmt=data.validated_data["format"])
        self.access_log_touch(query={"format": state["format"]})
        response = Response(_export_body(request, state), status=status.HTTP_202_ACCEPTED)
        response["Cache-Control"] = "no-store"
        return response


class ExportDetailView(RecordsBase):
    required_scopes = ["records:export"]
    access_log_resource_type = "export"

    @extend_schema(
        operation_id="records_export_retrieve",
        summary="An export's status",
        parameters=[OpenApiParameter("export_id", str, OpenApiParameter.PATH)],
        responses={200: ExportSerializer, **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, export_id: str) -> Response:
        state = export.export_state(patient=_patient(request), export_id=export_id)
        response = Response(_export_body(request, state))
        response["Cache-Control"] = "no-store"
        return response


class ExportDownloadView(RecordsBase):
    required_scopes = ["records:export"]
    access_log_action = AccessAction.EXPORT
    access_log_resource_type = "export"

    @extend_schema(
        operation_id="records_export_download",
        summary="Download an export (once)",
        parameters=[OpenApiParameter("export_id", str, OpenApiParameter.PATH)],
        responses={
            (200, "application/fhir+json"): OpenApiResponse(
                OpenApiTypes.BINARY, description="A collection Bundle (format `bundle`)."
            ),
            (200, "application/fhir+ndjson"): OpenApiResponse(
                OpenApiTypes.BINARY, description="One resource per line (format `ndjson`)."
            ),
            **ERRORS,
            **NOT_FOUND,
            409: OpenApiResponse(description="`export_not_ready`."),
            410: OpenApiResponse(description="`export_gone`: already downloaded or expired."),
        },
    )
    def get(self, request: Request, export_id: str) -> HttpResponse:
        body, content_type, filename = export.export_download(
            patient=_patient(request), export_id=export_id
        )
        self.access_log_touch(query={"size": len(body)})
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "private, no-store"
        return response
