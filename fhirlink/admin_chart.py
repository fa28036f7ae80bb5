"""The patient chart in the admin: read-only, for care-team staff (and break-glass).

Registered from fhirlink/admin.py with `admin_chart.register(admin.site)`. Every page writes one
access-log row with the purpose "treatment" (assigned patient) or "emergency" (break-glass);
a patient the user may not see answers 404, the same as one that does not exist.

Records come from the records API's patient-scoped selectors and normalisers (fhirlink/records:
summary, trends, timeline, PayloadReader); this module only lays them out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from fhirlink.models import (
    Connection,
    ConnectionStatus,
    Relationship,
    SyncedResource,
    SyncTrigger,
)
from fhirlink.records import normalize, selectors
from fhirlink.records.scope import record_scope
from fhirlink.records.summary import summary_build
from fhirlink.records.timeline import timeline_page
from fhirlink.records.trends import trend_build
from patientportal.accesslog.models import AccessAction, ActorKind, Outcome
from patientportal.accesslog.services import access_log_record
from patientportal.accounts.models import Patient
from patientportal.careteams.selectors import chart_purpose_for
from patientportal.careteams.services import break_glass_grant
from patientportal.core.errors import ApplicationError

VIEWABLE_TYPES = {"application/pdf", "text/plain"}
# The PDF response: nothing may load from it and only our own pages may embed it (Chromium's
# viewer does not render a PDF under `sandbox`, so that directive is for text only).
DOCUMENT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
TEXT_CSP = "default-src 'none'; frame-ancestors 'self'; sandbox"
MAX_TREND_POINTS = 20
MAX_DOCUMENTS = 10


# --- Records (the records API's selectors and normalisers) --------------------------------------


@dataclass
class Chart:
    demographics: dict[str, Any]
    sections: dict[str, list[dict[str, Any]]]
    vitals: list[dict[str, Any]]
    results: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    row_ids: list[int] = field(default_factory=list)


def value_display(item: dict[str, Any]) -> str:
    """ "120/80 mm[Hg]", "72 /min", or the value's text."""
    if item.get("components"):
        values = [c.get("value") for c in item["components"] if c.get("value") is not None]
        if values:
            unit = next((c.get("unit") for c in item["components"] if c.get("unit")), "")
            return f"{'/'.join(_number(v) for v in values)} {unit or ''}".strip()
    if item.get("value") is not None:
        return f"{_number(item['value'])} {item.get('unit') or ''}".strip()
    return str(item.get("value_text") or "")


def _number(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, int | float) else str(value)


def document_content(
    *, patient: Any, row: SyncedResource, reader: selectors.PayloadReader
) -> tuple[str, bytes]:
    """(content type, bytes) of the document's first attachment: inline data, or the Binary the
    sync stored for its URL (same connection only); (type, b"") when not available."""
    resource = reader.read(row)
    items = normalize.attachments(resource) if resource is not None else []
    if not items:
        return "", b""
    content_type, body = selectors.attachment_content(
        patient=patient, row=row, attachment=items[0], reader=reader
    )
    return content_type.split(";")[0].strip().lower(), body or b""


def chart_build(*, patient: Any) -> Chart:
    summary, rows = summary_build(patient=patient)
    row_ids = [row.pk for row in rows]
    vitals = []
    for item in summary["vital_signs"]:
        code = (item.get("code") or {}).get("code") or ""
        series: list[list[float]] = []
        if code:
            trend = trend_build(patient=patient, code=code)
            series = [[float(p["value"]) for p in s.points] for s in trend.series if s.points]
            row_ids.extend(p["record_id"] for s in trend.series for p in s.points)
        vitals.append({**item, "value_display": value_display(item), "svg": trend_svg(series)})
    for key in ("lab_results", "conditions", "medications", "allergies", "immunizations"):
        for item in summary[key]:
            item["value_display"] = value_display(item)
    timeline, _, timeline_rows = timeline_page(patient=patient, cursor=None, size=30)
    for item in timeline:
        item["value_display"] = value_display(item)
    row_ids.extend(row.pk for row in timeline_rows)
    reader = selectors.PayloadReader(patient)
    documents = []
    for row in selectors.records_live(patient=patient, resource_type="DocumentReference").order_by(
        "-effective_at", "-id"
    )[:MAX_DOCUMENTS]:
        item = normalize.record_normalize(row, reader.read(row))
        content_type, body = document_content(patient=patient, row=row, reader=reader)
        item["content_type"] = content_type
        item["viewable"] = content_type in VIEWABLE_TYPES and bool(body)
        # Text is shown escaped by the template (autoescape), never as markup.
        item["text"] = (
            body.decode("utf-8", "replace")[:20000] if content_type == "text/plain" else ""
        )
        documents.append(item)
        row_ids.append(row.pk)
    return Chart(
        demographics=summary["demographics"] or {},
        sections={
            "Problems": summary["conditions"],
            "Medications": summary["medications"],
            "Allergies": summary["allergies"],
            "Immunizations": summary["immunizations"],
        },
        vitals=vitals,
        results=summary["lab_results"],
        timeline=timeline,
        documents=documents,
        row_ids=sorted(set(row_ids)),
    )


# --- Trend charts (inline SVG, server-side) -----------------------------------------------------

COLOURS = ("#417690", "#ba2121", "#2a7d2a")


def trend_svg(series: list[list[float]], *, width: int = 160, height: int = 40) -> SafeString:
    """A small sparkline (one line per series, shared scale): only numbers go into the markup."""
    series = [values[-MAX_TREND_POINTS:] for values in series if len(values) >= 2]
    if not series:
        return mark_safe("")
    low = min(min(values) for values in series)
    high = max(max(values) for values in series)
    span = (high - low) or 1.0
    lines = []
    for index, values in enumerate(series[: len(COLOURS)]):
        step = (width - 8) / (len(values) - 1)
        coords = " ".join(
            f"{4 + i * step:.1f},{height - 4 - (v - low) / span * (height - 8):.1f}"
            for i, v in enumerate(values)
        )
        lines.append(
            format_html(
                '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>',
                COLOURS[index],
                coords,
            )
        )
    return format_html(
        '<svg class="trend" role="img" aria-label="trend of {} values" width="{}" height="{}" '
        'viewBox="0 0 {} {}" xmlns="http://www.w3.org/2000/svg">{}</svg>',
        sum(len(v) for v in series),
        width,
        height,
        width,
        height,
        mark_safe("".join(lines)),  # noqa: S308  (built with format_html from numbers)
    )


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- Views ---------------------------------------------------------------------------------------


def _log(
    request: HttpRequest,
    *,
    patient: Any,
    purpose: str,
    action: str = AccessAction.READ,
    outcome: str = Outcome.SUCCESS,
    resource_type: str = "PatientChart",
    resource_ids: list[Any] | None = None,
    query: dict[str, Any] | None = None,
) -> None:
    access_log_record(
        actor_kind=ActorKind.STAFF,
        actor_user=request.user,  # type: ignore[arg-type]
        action=action,
        patient=patient,
        purpose=purpose,
        outcome=outcome,
        resource_type=resource_type,
        resource_ids=resource_ids or [],
        query=query,
        request=request,
    )


def _not_found(request: HttpRequest, site: AdminSite, patient_id: Any) -> HttpResponse:
    """Unknown and not-yours look the same (and offer break-glass)."""
    _log(request, patient=None, purpose="", outcome=Outcome.NOT_FOUND, query={"chart": True})
    context = {
        **site.each_context(request),
        "title": "Patient chart not available",
    }
    response = TemplateResponse(request, "admin/fhirlink/chart_not_found.html", context, status=404)
    return response


def _purpose_or_none(request: HttpRequest, patient_id: Any) -> str | None:
    return chart_purpose_for(user=request.user, patient_id=patient_id)


def make_chart_view(site: AdminSite) -> Callable[..., HttpResponse]:
    def chart_view(request: HttpRequest, patient_id: uuid.UUID) -> HttpResponse:
        purpose = _purpose_or_none(request, patient_id)
        if purpose is None:
            return _not_found(request, site, patient_id)
        patient = Patient.objects.select_related("user").get(pk=patient_id)
        # The care team's patient is the account holder: the chart shows their own record, not
        # the records they manage for others (a child's, a parent's), which are not assigned.
        chart = chart_build(patient=record_scope(patient=patient, person=None))
        connections = list(
            Connection.objects.filter(patient=patient, relationship=Relationship.SELF)
            .select_related("health_system")
            .order_by("created_at")
        )
        context = {
            **site.each_context(request),
            "title": f"Chart: {chart.demographics.get('name') or patient}",
            "patient": patient,
            "purpose": purpose,
            "chart": chart,
            "demographics": chart.demographics,
            "connections": connections,
            "needs_reauth": ConnectionStatus.NEEDS_REAUTH,
        }
        _log(
            request,
            patient=patient.pk,
            purpose=purpose,
            resource_ids=chart.row_ids,
            query={"chart": True, "count": len(chart.row_ids)},
        )
        return TemplateResponse(request, "admin/fhirlink/chart.html", context)

    return chart_view


def make_document_view(site: AdminSite) -> Callable[..., HttpResponse]:
    @xframe_options_sameorigin
    def document_view(
        request: HttpRequest, patient_id: uuid.UUID, resource_id: int
    ) -> HttpResponse:
        purpose = _purpose_or_none(request, patient_id)
        row = (
            selectors.record_get(
                patient=record_scope(patient=Patient(pk=patient_id), person=None),
                resource_type="DocumentReference",
                record_id=resource_id,
            )
            if purpose is not None
            else None
        )
        if row is None:
            _log(
                request,
                patient=None,
                purpose="",
                outcome=Outcome.NOT_FOUND,
                resource_type="DocumentReference",
            )
            raise Http404("Not found.")
        content_type, body = document_content(
            patient=patient_id, row=row, reader=selectors.PayloadReader(patient_id)
        )
        if content_type not in VIEWABLE_TYPES:
            body = b""
        _log(
            request,
            patient=patient_id,
            purpose=purpose,  # type: ignore[arg-type]
            resource_type="DocumentReference",
            resource_ids=[row.pk],
            outcome=Outcome.SUCCESS if body else Outcome.NOT_FOUND,
        )
        if not body:
            raise Http404("Not viewable.")
        response = HttpResponse(
            body,
            content_type="application/pdf"
            if content_type == "application/pdf"
            else "text/plain; charset=utf-8",
        )
        extension = "pdf" if content_type == "application/pdf" else "txt"
        response["Content-Disposition"] = f'inline; filename="document-{row.pk}.{extension}"'
        response["Content-Security-Policy"] = (
            DOCUMENT_CSP if content_type == "application/pdf" else TEXT_CSP
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "no-store, private"
        response["Referrer-Policy"] = "no-referrer"
        return response

    return document_view


def _staff_action_connection(request: HttpRequest, patient_id: Any) -> tuple[Connection, str]:
    """The POSTed connection of a patient this staff user may act on, and the purpose; a
    patient or connection out of reach answers 404 (logged without the patient)."""
    purpose = _purpose_or_none(request, patient_id)
    connection = (
        Connection.objects.filter(
            pk=_uuid_or_none(request.POST.get("connection")) or uuid.UUID(int=0),
            patient_id=patient_id,
        ).first()
        if purpose is not None
        else None
    )
    if connection is None or purpose is None:
        _log(
            request,
            patient=None,
            purpose="",
            outcome=Outcome.NOT_FOUND,
            resource_type="Connection",
        )
        raise Http404("Not found.")
    return connection, purpose


def make_resync_view(site: AdminSite) -> Callable[..., HttpResponse]:
    @require_POST
    def resync_view(request: HttpRequest, patient_id: uuid.UUID) -> HttpResponse:
        connection, purpose = _staff_action_connection(request, patient_id)
        from fhirlink.sync.runs import sync_request

        run = sync_request(connection_id=connection.pk, trigger=SyncTrigger.STAFF)
        _log(
            request,
            patient=patient_id,
            purpose=purpose,
            resource_type="Connection",
            resource_ids=[connection.pk],
            query={"staff_action": "resync", "run": str(run.pk) if run else ""},
        )
        messages.success(request, "Re-sync requested." if run else "Re-sync not possible now.")
        return HttpResponseRedirect(reverse("admin:fhirlink_patient_chart", args=[patient_id]))

    return resync_view


def make_nudge_view(site: AdminSite) -> Callable[..., HttpResponse]:
    @require_POST
    def nudge_view(request: HttpRequest, patient_id: uuid.UUID) -> HttpResponse:
        connection, purpose = _staff_action_connection(request, patient_id)
        from engagement.services.events import reconnect_reminder_send

        occurrence = reconnect_reminder_send(connection_id=connection.pk)
        _log(
            request,
            patient=patient_id,
            purpose=purpose,
            resource_type="Connection",
            resource_ids=[connection.pk],
            query={"staff_action": "reconnect_nudge", "sent": occurrence is not None},
        )
        messages.success(
            request,
            "Reconnect reminder queued." if occurrence else "A reminder was already sent for this.",
        )
        return HttpResponseRedirect(reverse("admin:fhirlink_patient_chart", args=[patient_id]))

    return nudge_view


def make_break_glass_view(site: AdminSite) -> Callable[..., HttpResponse]:
    @require_POST
    def break_glass_view(request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("accounts.view_patient"):
            raise PermissionDenied
        patient_id = request.POST.get("patient_id", "")
        try:
            break_glass_grant(
                user=request.user,
                patient_id=patient_id,
                reason=request.POST.get("reason", ""),
                request=request,
            )
        except ApplicationError as exc:
            context = {
                **site.each_context(request),
                "title": "Patient chart not available",
                "patient_id": patient_id,
                "error": exc.message,
            }
            status = 400 if exc.code == "validation_failed" else 404
            return TemplateResponse(
                request, "admin/fhirlink/chart_not_found.html", context, status=status
            )
        messages.warning(request, "Emergency access granted. It is time-limited and audited.")
        return HttpResponseRedirect(reverse("admin:fhirlink_patient_chart", args=[patient_id]))

    return break_glass_view


def chart_urls(site: AdminSite) -> list[URLPattern]:
    return [
        path(
            "fhirlink/chart/<uuid:patient_id>/",
            site.admin_view(make_chart_view(site)),
            name="fhirlink_patient_chart",
        ),
        path(
            "fhirlink/chart/<uuid:patient_id>/documents/<int:resource_id>/",
            site.admin_view(make_document_view(site)),
            name="fhirlink_patient_chart_document",
        ),
        path(
            "fhirlink/chart/<uuid:patient_id>/resync/",
            site.admin_view(make_resync_view(site)),
            name="fhirlink_patient_chart_resync",
        ),
        path(
            "fhirlink/chart/<uuid:patient_id>/reconnect-nudge/",
            site.admin_view(make_nudge_view(site)),
            name="fhirlink_patient_chart_nudge",
        ),
        path(
            "fhirlink/chart/break-glass/",
            site.admin_view(make_break_glass_view(site)),
            name="fhirlink_patient_chart_break_glass",
        ),
    ]


def register(site: AdminSite) -> None:
    """Mount the chart's URLs on the admin site (before the model admins' catch-alls)."""
    original = site.get_urls

    def get_urls() -> list[Any]:
        return [*chart_urls(site), *original()]

    site.get_urls = get_urls  # type: ignore[method-assign]


def _register_default() -> None:
    from django.contrib import admin

    register(admin.site)


_register_default()
