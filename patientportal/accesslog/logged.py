"""How a view declares whether it serves patient data, and the mixins that log it.

Every view under /api/v1/ and every ModelAdmin of a project app declares itself, and
`tests/patientportal/test_access_logging_coverage.py` fails for any that does not, or that
declares patient data and then writes no access-log row when called:

**API views (DRF).** Either

- serve patient data: subclass `AccessLoggedAPIMixin` first, e.g.::

      class RecordListView(AccessLoggedAPIMixin, generics.ListAPIView):
          access_log_action = AccessAction.LIST
          access_log_resource_type = "Observation"
          access_log_purpose = ""          # or a Purpose, for a purpose-bound use

  The mixin writes exactly one row when the response is finalised (also for errors; a 401
  writes none, there is no actor). Add detail with `self.access_log_touch(resource_ids=...,
  query=..., action=...)` from the handler; list views built on `AccessLoggedListMixin` record
  the page's ids themselves. If a service called by the view already wrote the row with
  `access_log_record(request=request, ...)` the mixin writes no second one (one write per
  request);

- or serve none: set `serves_patient_data = False` on the class (or decorate a function view
  with `@no_patient_data`).

**Function views**: `@access_logged(action=..., resource_type=...)` or `@no_patient_data`.

**Admin.** A ModelAdmin whose model holds patient data subclasses `AccessLoggedAdminMixin`
first and names the path to the patient (`access_log_patient_field = "patient"`; "pk" for
`Patient` itself): change-list pages write one `list` row (the page's ids; the patient when
the page shows one patient), change pages one `read` row. Set `access_log_purpose =
Purpose.CARE_TEAM_ACCESS` to hide patients without that consent. Row-level scoping of staff
(care teams) hooks in here too: `settings.ADMIN_PATIENT_SCOPE` names a function
`(*, user) -> AdminPatientScope | None`; for a scoped user every logged admin's queryset (so its
change list, change and history pages, search, filters, autocomplete, raw-id pop-ups and
actions) keeps only the scope's patients, the rows are logged with the scope's purpose, and an
object outside the scope answers 404 like one that does not exist. Other project admins set
`serves_patient_data = False`; if their model still references patients (a foreign key to
Patient, a `patient_id` column) they must also say why in `patient_data_exempt_reason`.
Extra admin URLs (`get_urls`) that show patient data write their row with
`access_log_record(request=request, ...)` and are listed in the coverage test.

**The coverage test** (`tests/patientportal/test_access_logging_coverage.py`) calls every
declared GET route as a patient with data and every logged admin's list and change pages as
staff. A route with URL arguments needs an `API_CASES` entry (url name -> kwargs for a
patient) and a logged admin needs an object to open (`ADMIN_SEEDERS`, model label -> factory);
a missing one fails the test instead of skipping the route.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from rest_framework.request import Request
from rest_framework.response import Response

from .models import AccessAction, ActorKind, Outcome
from .services import access_log_record, mark_request_logged, request_was_logged

PATIENT_DATA_ATTR = "serves_patient_data"

F = TypeVar("F", bound=Callable[..., Any])


def outcome_for_status(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    if status in (401, 403):
        return Outcome.DENIED
    if status == 404:
        return Outcome.NOT_FOUND
    return Outcome.ERROR


def no_patient_data(view: F) -> F:
    """Declare that a function view serves no patient data."""
    setattr(view, PATIENT_DATA_ATTR, False)
    return view


class AccessLoggedAPIMixin:
    """DRF views that serve patient data: one access-log row per request (see module doc)."""

    serves_patient_data = True
    access_log_action: str = AccessAction.READ
    access_log_resource_type: str = ""
    access_log_purpose: str = ""
    access_log_actor_kind: str = ActorKind.PATIENT

    _access_log_details: dict[str, Any]

    def access_log_touch(
        self,
        *,
        resource_ids: Iterable[Any] | None = None,
        query: Mapping[str, Any] | None = None,
        action: str | None = None,
        resource_type: str | None = None,
    ) -> None:
        """Add what this request touched to the row the mixin will write."""
        details = self.__dict__.setdefault("_access_log_details", {})
        if resource_ids is not None:
            details["resource_ids"] = [str(i) for i in resource_ids]
        if query is not None:
            details.setdefault("query", {}).update(query)
        if action is not None:
            details["action"] = action
        if resource_type is not None:
            details["resource_type"] = resource_type

    def access_log_patient(self, request: Request) -> Any:
        """Whose data this request touches: the signed-in patient by default."""
        return getattr(request.user, "patient", None)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(  # type: ignore[misc]
            request, response, *args, **kwargs
        )
        self._access_log_write(request, response)
        return response

    def _access_log_write(self, request: Request, response: Response) -> None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or request_was_logged(request):
            return
        details = self.__dict__.get("_access_log_details", {})
        access_log_record(
            actor_kind=self.access_log_actor_kind,
            actor_user=user,
            action=details.get("action", self.access_log_action),
            patient=self.access_log_patient(request),
            purpose=self.access_log_purpose,
            outcome=outcome_for_status(response.status_code),
            resource_type=details.get("resource_type", self.access_log_resource_type),
            resource_ids=details.get("resource_ids", ()),
            query={"method": request.method, **details.get("query", {})},
            request=request,
        )
        mark_request_logged(request)


class AccessLoggedListMixin(AccessLoggedAPIMixin):
    """For ListAPIView: records the ids on the page served (one row for the whole page)."""

    access_log_action = AccessAction.LIST
    access_log_filter_params: tuple[str, ...] = ()

    def paginate_queryset(self, queryset: QuerySet[Any]) -> list[Any] | None:
        page: list[Any] | None = super().paginate_queryset(queryset)  # type: ignore[misc]
        rows = page if page is not None else list(queryset)
        filters = {
            name: self.request.query_params[name]  # type: ignore[attr-defined]
            for name in self.access_log_filter_params
            if name in self.request.query_params  # type: ignore[attr-defined]
        }
        self.access_log_touch(
            resource_ids=[self.access_log_resource_id(row) for row in rows],
            query={"count": len(rows), **({"filters": filters} if filters else {})},
        )
        return page

    def access_log_resource_id(self, row: Any) -> Any:
        return getattr(row, "pk", None)


def access_logged(
    *,
    action: str,
    resource_type: str = "",
    purpose: str = "",
    actor_kind: str = ActorKind.PATIENT,
    patient: Callable[[HttpRequest], Any] | None = None,
) -> Callable[[F], F]:
    """Decorator for function views that serve patient data (one row per call)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            response: HttpResponse = view(request, *args, **kwargs)
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated and not request_was_logged(request):
                access_log_record(
                    actor_kind=actor_kind,
                    actor_user=user,
                    action=action,
                    patient=patient(request) if patient else getattr(user, "patient", None),
                    purpose=purpose,
                    outcome=outcome_for_status(response.status_code),
                    resource_type=resource_type,
                    request=request,
                )
                mark_request_logged(request)
            return response

        setattr(wrapper, PATIENT_DATA_ATTR, True)
        return wrapper  # type: ignore[return-value]

    return decorate


def _patient_of(obj: Model, field_path: str) -> uuid.UUID | None:
    if field_path == "pk":
        return obj.pk
    value: Any = obj
    for part in field_path.split("__"):
        value = getattr(value, part, None)
        if value is None:
            return None
    if isinstance(value, Model):
        value = value.pk
    return uuid.UUID(str(value)) if value is not None else None


@dataclass(frozen=True)
class AdminPatientScope:
    """The patients a staff user may see in the admin (a subquery of patient ids) and the
    purpose their views are logged with."""

    patient_ids: QuerySet[Any]
    purpose: str


_SCOPE_ATTR = "_admin_patient_scope"


def admin_patient_scope(request: HttpRequest) -> AdminPatientScope | None:
    """The request user's scope (settings.ADMIN_PATIENT_SCOPE), once per request."""
    if hasattr(request, _SCOPE_ATTR):
        cached: AdminPatientScope | None = getattr(request, _SCOPE_ATTR)
        return cached
    path = settings.ADMIN_PATIENT_SCOPE
    user = getattr(request, "user", None)
    scope: AdminPatientScope | None = (
        import_string(path)(user=user) if path and user is not None else None
    )
    setattr(request, _SCOPE_ATTR, scope)
    return scope


class AccessLoggedAdminMixin:
    """ModelAdmin for a model holding patient data: list and detail pages are logged."""

    serves_patient_data = True
    access_log_patient_field: str = "patient"
    access_log_purpose: str = ""
    access_log_resource_type: str = ""

    def _access_log_resource_type(self) -> str:
        return self.access_log_resource_type or self.model._meta.label  # type: ignore[attr-defined]

    def _access_log_purpose_for(self, request: HttpRequest) -> str:
        scope = admin_patient_scope(request)
        return scope.purpose if scope is not None else self.access_log_purpose

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        field = "pk" if self.access_log_patient_field == "pk" else self.access_log_patient_field
        if self.access_log_purpose:
            from patientportal.consent.selectors import patients_with_consent

            queryset = queryset.filter(
                **{f"{field}__in": patients_with_consent(purpose=self.access_log_purpose)}
            )
        scope = admin_patient_scope(request)
        if scope is not None:
            queryset = queryset.filter(**{f"{field}__in": scope.patient_ids})
        return queryset

    def _get_obj_does_not_exist_redirect(
        self, request: HttpRequest, opts: Any, object_id: str
    ) -> HttpResponse:
        # Outside the user's scope or missing: the same plain 404 (no redirect, no message).
        raise Http404("Not found.")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        changelist = getattr(response, "context_data", {}) or {}
        cl = changelist.get("cl")
        if cl is not None and not request_was_logged(request):
            rows = list(cl.result_list)
            patients = {_patient_of(row, self.access_log_patient_field) for row in rows}
            patients.discard(None)
            query: dict[str, Any] = {
                "count": len(rows),
                "total": cl.result_count,
                "params": sorted(request.GET.keys()),
            }
            if len(patients) > 1:
                query["patients"] = sorted(str(p) for p in patients)
            access_log_record(
                actor_kind=ActorKind.STAFF,
                actor_user=request.user,  # type: ignore[arg-type]
                action=AccessAction.SEARCH if request.GET.get("q") else AccessAction.LIST,
                patient=next(iter(patients)) if len(patients) == 1 else None,
                purpose=self._access_log_purpose_for(request),
                resource_type=self._access_log_resource_type(),
                resource_ids=[row.pk for row in rows],
                query=query,
                request=request,
            )
            mark_request_logged(request)
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(  # type: ignore[misc]
            request, object_id, form_url, extra_context
        )
        original = (getattr(response, "context_data", None) or {}).get("original")
        if original is not None and not request_was_logged(request):
            access_log_record(
                actor_kind=ActorKind.STAFF,
                actor_user=request.user,  # type: ignore[arg-type]
                action=AccessAction.READ,
                patient=_patient_of(original, self.access_log_patient_field),
                purpose=self._access_log_purpose_for(request),
                resource_type=self._access_log_resource_type(),
                resource_ids=[original.pk],
                outcome=outcome_for_status(response.status_code),
                request=request,
            )
            mark_request_logged(request)
        return response


class ReadOnlyAdminMixin:
    """No add, change or delete through the admin (history and logs)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


__all__ = [
    "PATIENT_DATA_ATTR",
    "AccessLoggedAPIMixin",
    "AccessLoggedAdminMixin",
    "AccessLoggedListMixin",
    "AdminPatientScope",
    "ReadOnlyAdminMixin",
    "access_logged",
    "admin_patient_scope",
    "mark_request_logged",
    "no_patient_data",
    "outcome_for_status",
    "request_was_logged",
]
