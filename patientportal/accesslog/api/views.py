"""The patient's access log: who accessed my data, when and why."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API
from patientportal.core.api.schema import SELF_OR_UUID

from ..logged import AccessLoggedListMixin
from ..models import AccessAction, AccessEvent, ActorKind
from ..selectors import access_events_for_patient
from .serializers import AccessEventSerializer


class AccessEventPagination(CursorPagination):
    # Newest first by time, not by `seq`: a cursor carries its ordering field's value, and the
    # installation-wide sequence number is not the patient's to see (ties: `seq`, by offset).
    ordering = ("-occurred_at", "-seq")  # type: ignore[assignment]  # DRF takes a tuple too


def _datetime_param(request: Request, name: str) -> Any:
    raw = request.query_params.get(name)
    if not raw:  # absent or empty (the schema's allowEmptyValue): no bound
        return None
    try:
        value = parse_datetime(raw)
        # In UTC: PostgreSQL refuses offsets past +-15:59 that Python reads (e.g. -19:29).
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
    except (ValueError, OverflowError):  # well-formed but impossible: 2024-02-30, 25:61
        value = None
    if value is None:
        raise ValidationError({name: ["Use an ISO 8601 date-time."]}, code="invalid")
    return value


def _person_param(request: Request) -> str | None:
    raw = request.query_params.get("person")
    if not raw:
        return None
    if raw != "self":
        try:
            raw = str(uuid.UUID(raw))
        except ValueError:
            raise ValidationError(
                {"person": ["Use 'self' or the id of a record you manage."]}, code="invalid"
            ) from None
    return raw


class AccessEventListView(AccessLoggedListMixin, generics.ListAPIView[AccessEvent]):
    """Every access to the patient's data, newest first. Reading it is logged too."""

    permission_classes = PATIENT_API
    required_scopes = ["audit:read"]
    serializer_class = AccessEventSerializer
    pagination_class = AccessEventPagination
    filter_backends: list[Any] = []
    queryset = AccessEvent.objects.none()  # for the schema; get_queryset serves
    access_log_resource_type = "AccessEvent"
    access_log_filter_params = ("action", "actor_kind", "since", "until", "person")

    def get_queryset(self) -> Any:
        params = self.request.query_params
        action = params.get("action")
        actor_kind = params.get("actor_kind")
        if action and action not in AccessAction.values:
            raise ValidationError({"action": ["Unknown action."]}, code="invalid_choice")
        if actor_kind and actor_kind not in ActorKind.values:
            raise ValidationError({"actor_kind": ["Unknown kind."]}, code="invalid_choice")
        return access_events_for_patient(
            patient=self.request.user.patient,  # type: ignore[union-attr]
            action=action,
            actor_kind=actor_kind,
            since=_datetime_param(self.request, "since"),
            until=_datetime_param(self.request, "until"),
            person=_person_param(self.request),
        )

    def access_log_resource_id(self, row: Any) -> Any:
        return row.seq

    @extend_schema(
        operation_id="access_log_list",
        parameters=[
            OpenApiParameter("action", str, enum=AccessAction.values),
            OpenApiParameter("actor_kind", str, enum=ActorKind.values),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601, exclusive"),
            OpenApiParameter(
                "person",
                SELF_OR_UUID,
                description=(
                    "Only the reads of one person's record: `self` or the id of a record you "
                    "manage (as in the records API's `person`)."
                ),
            ),
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
