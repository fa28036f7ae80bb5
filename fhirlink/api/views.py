"""Connections API: list health systems, start a connection, list/read, disconnect."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from fhirlink import selectors
from fhirlink.models import Connection, HealthSystem
from fhirlink.services.connections import connection_disconnect
from fhirlink.services.launch import connection_start
from patientportal.accesslog.logged import AccessLoggedAPIMixin, AccessLoggedListMixin
from patientportal.accesslog.models import AccessAction
from patientportal.consent.models import Purpose
from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API

from .serializers import (
    ConnectionSerializer,
    ConnectionStartResponseSerializer,
    ConnectionStartSerializer,
    DisconnectQuerySerializer,
    DisconnectReceiptSerializer,
    HealthSystemSerializer,
)


class ConnectionPagination(CursorPagination):
    ordering = "-created_at"


class HealthSystemListView(generics.ListAPIView[HealthSystem]):
    """The health systems a patient can connect (the registry; not patient data)."""

    serves_patient_data = False
    permission_classes = PATIENT_API
    required_scopes = ["connections"]
    serializer_class = HealthSystemSerializer
    pagination_class = None

    def get_queryset(self) -> Any:
        return selectors.health_system_list_enabled()

    @extend_schema(operation_id="health_systems_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


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
            "`authorize_url` in the system browser; when the patient is done the browser is sent "
            "to the app's registered deep link with `connection` and `outcome` only. Requires the "
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
                "authorize_url": started.authorize_url,
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
