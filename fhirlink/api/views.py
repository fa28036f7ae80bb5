"""Connections API: list health systems, start a connection, list/read, disconnect."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from fhirlink import selectors
from fhirlink.directory.search import directory_index, directory_search
from fhirlink.directory.selectors import directory_page_rows
from fhirlink.models import Connection
from fhirlink.services.connections import connection_disconnect
from fhirlink.services.launch import connection_start
from fhirlink.services.people import connection_person_set
from patientportal.accesslog.logged import AccessLoggedAPIMixin, AccessLoggedListMixin
from patientportal.accesslog.models import AccessAction
from patientportal.consent.models import Purpose
from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API

from .directory_serializers import (
    MAX_OFFSET,
    HealthSystemSearchPageSerializer,
    HealthSystemSearchQuerySerializer,
    cursor_encode,
)
from .serializers import (
    ConnectionSerializer,
    ConnectionStartResponseSerializer,
    ConnectionStartSerializer,
    DisconnectQuerySerializer,
    DisconnectReceiptSerializer,
    PersonUpdateSerializer,
)


class ConnectionPagination(CursorPagination):
    ordering = "-created_at"


class HealthSystemListView(APIView):
    """Find your hospital: the directory (Oracle's published endpoints, hand registrations),
    ranked by match (typo-tolerant, accent-insensitive). Not patient data."""

    serves_patient_data = False
    permission_classes = PATIENT_API
    required_scopes = ["connections"]

    @extend_schema(
        operation_id="health_systems_list",
        parameters=[HealthSystemSearchQuerySerializer],
        responses={
            200: HealthSystemSearchPageSerializer,
            400: OpenApiResponse(description="A parameter is not valid (`errors` names it)."),
        },
        description=(
            "Search the health systems a patient can connect, by name, alias or town "
            "(`search`), within a state (`state`), nearest a ZIP code first (`near`). Results "
            "carry city, state and ZIP (several organisations share a name), a logo where "
            "known, and whether each can be connected now. Without `search`, everything in "
            "name order. Cursor-paginated: follow `next`."
        ),
    )
    def get(self, request: Request) -> Response:
        query = HealthSystemSearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        offset, size = data.get("cursor", 0), data["page_size"]
        items = directory_search(
            text=data.get("search", ""),
            state=data.get("state", ""),
            near=data.get("near", ""),
            limit=offset + size + 1,
        )
        url = request.build_absolute_uri()
        more = len(items) > offset + size and offset + size <= MAX_OFFSET
        page = {
            "next": replace_query_param(url, "cursor", cursor_encode(offset + size))
            if more
            else None,
            "previous": replace_query_param(url, "cursor", cursor_encode(max(0, offset - size)))
            if offset
            else None,
            "results": directory_page_rows(
                items=items[offset : offset + size], sources=directory_index().sources
            ),
        }
        return Response(HealthSystemSearchPageSerializer(page).data)


class ConnectionListView(AccessLoggedListMixin, generics.ListAPIView[Connection]):
    """The patient's connections and their status (pending, active, syncing, needs_reauth,
    disconnected, error), with granted and declined resources and sync progress."""

    permission_classes = PATIENT_API
    required_scopes = ["connections"]
    serializer_class = ConnectionSerializer
    pagination_class = ConnectionPagination
    access_log_resource_type = "Connection"
    access_log_purpose = Purpose.EHR_SYNC

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Connection.objects.none()
        return selectors.connection_list_for_patient(
            patient=self.request.user.patient  # type: ignore[union-attr]
        )

    @extend_schema(operation_id="connections_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="connections_create",
        request=ConnectionStartSerializer,
        responses={
            201: ConnectionStartResponseSerializer,
            502: OpenApiResponse(description="The health system is misconfigured."),
            503: OpenApiResponse(description="The health system could not be reached."),
        },
        description=(
            "Start connecting a health system (SMART patient standalone launch). Open "
            "`start_url` (single use, on this server, valid until `expires_at`) in the system "
            "browser signed in to this server as the same account: it binds the launch to that "
            "browser and account, then goes to the health system's sign-in page. When the "
            "patient is done the browser is sent to the app's registered deep link with "
            "`connection` and `outcome` only; confirm the result with "
            "`GET /api/v1/connections/{id}` (its `status` and `last_outcome`). A launch "
            "finished in another browser or by another account links nothing. Requires the "
            "`ehr_sync` consent (403 `consent_required`)."
        ),
    )
    def post(self, request: Request) -> Response:
        data = ConnectionStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        started = connection_start(
            patient=request.user.patient,  # type: ignore[union-attr]
            health_system_id=data.validated_data["health_system"],
            connection_id=data.validated_data.get("connection"),
            return_uri=data.validated_data.get("return_uri"),
            request=request,
        )
        self.access_log_touch(action=AccessAction.CONNECT, resource_ids=[started.connection.pk])
        body = ConnectionStartResponseSerializer(
            {
                "connection": started.connection,
                "launch": started.attempt_id,
                "start_url": started.start_url,
                "expires_at": started.expires_at,
                "requested_resources": started.requested_resources,
            }
        ).data
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ConnectionDetailView(AccessLoggedAPIMixin, APIView):
    """One connection's status; DELETE disconnects it (`?purge=true` also erases synced data)."""

    permission_classes = PATIENT_API
    required_scopes = ["connections"]
    access_log_resource_type = "Connection"
    access_log_purpose = Purpose.EHR_SYNC

    def _connection(self, request: Request, connection_id: Any) -> Connection:
        return selectors.connection_get_for_patient(
            patient=request.user.patient,  # type: ignore[union-attr]
            connection_id=connection_id,
        )

    @extend_schema(operation_id="connections_retrieve", responses={200: ConnectionSerializer})
    def get(self, request: Request, connection_id: Any) -> Response:
        self.access_log_touch(resource_ids=[connection_id])
        connection = self._connection(request, connection_id)
        return Response(ConnectionSerializer(connection).data)

    @extend_schema(
        operation_id="connections_partial_update",
        summary="Label whose record this is",
        request=PersonUpdateSerializer,
        responses={200: ConnectionSerializer},
        description=(
            "`label`: the account holder's own name for the person (at most 60 characters; "
            '`""` clears it; stored encrypted). `relationship`: what a managed record is '
            "to them (`child`, `parent`, `partner`, `other`, `managed`); 409 "
            "`relationship_fixed` on the account holder's own record."
        ),
    )
    def patch(self, request: Request, connection_id: Any) -> Response:
        data = PersonUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.access_log_touch(resource_ids=[connection_id])
        connection = connection_person_set(
            patient=request.user.patient,  # type: ignore[union-attr]
            connection_id=connection_id,
            label=data.validated_data.get("label"),
            relationship=data.validated_data.get("relationship"),
        )
        return Response(ConnectionSerializer(connection).data)

    @extend_schema(
        operation_id="connections_destroy",
        parameters=[
            OpenApiParameter(
                "purge", bool, description="Also erase the data synced through this connection."
            )
        ],
        responses={200: DisconnectReceiptSerializer},
    )
    def delete(self, request: Request, connection_id: Any) -> Response:
        query = DisconnectQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        self.access_log_touch(action=AccessAction.DISCONNECT, resource_ids=[connection_id])
        receipt = connection_disconnect(
            patient=request.user.patient,  # type: ignore[union-attr]
            connection_id=connection_id,
            purge=query.validated_data["purge"],
            request=request,
        )
        return Response(DisconnectReceiptSerializer(receipt).data)
