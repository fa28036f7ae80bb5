"""The patient's reminder endpoints: devices, inbox, acknowledge/snooze, preferences."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from engagement import selectors, services
from engagement.api.serializers import (
    DeviceRegisterSerializer,
    DeviceSerializer,
    PreferencesSerializer,
    ReminderSerializer,
    SnoozeSerializer,
)
from engagement.models import Delivery
from patientportal.accesslog.logged import AccessLoggedAPIMixin, AccessLoggedListMixin
from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API


class _PatientView(APIView):
    """Devices and preferences: settings, not patient data (no access-log row)."""

    permission_classes = PATIENT_API
    required_scopes = ["reminders"]
    serves_patient_data = False


class _ReminderView(AccessLoggedAPIMixin, APIView):
    """A reminder's content is the patient's: one access-log row per request."""

    permission_classes = PATIENT_API
    required_scopes = ["reminders"]
    access_log_resource_type = "Reminder"
    access_log_purpose = "engagement"


class InboxPagination(CursorPagination):
    ordering = ("-due_at", "-id")  # type: ignore[assignment]  # DRF accepts a tuple


class DeviceRegisterView(_PatientView):
    @extend_schema(
        request=DeviceRegisterSerializer,
        responses={201: DeviceSerializer},
        summary="Register this device for push notifications",
        tags=["reminders"],
    )
    def post(self, request: Request) -> Response:
        serializer = DeviceRegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device = services.device_register(
            patient=request.user.patient,  # type: ignore[union-attr]
            platform=serializer.validated_data["platform"],
            token=serializer.validated_data["token"],
        )
        return Response(DeviceSerializer(device).data, status=status.HTTP_201_CREATED)


class DeviceRemoveView(_PatientView):
    @extend_schema(responses={204: None}, summary="Remove a device", tags=["reminders"])
    def delete(self, request: Request, device_id: uuid.UUID) -> Response:
        services.device_remove(patient=request.user.patient, device_id=device_id)  # type: ignore[union-attr]
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReminderListView(AccessLoggedListMixin, ListAPIView[Delivery]):
    permission_classes = PATIENT_API
    access_log_resource_type = "Reminder"
    access_log_purpose = "engagement"
    required_scopes = ["reminders"]
    serializer_class = ReminderSerializer
    pagination_class = InboxPagination

    @extend_schema(summary="The patient's reminder inbox", tags=["reminders"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Delivery.objects.none()
        return selectors.inbox_list(patient=self.request.user.patient)  # type: ignore[union-attr]


class ReminderOpenView(_ReminderView):
    @extend_schema(
        request=None, responses={200: ReminderSerializer}, summary="Mark opened", tags=["reminders"]
    )
    def post(self, request: Request, reminder_id: uuid.UUID) -> Response:
        self.access_log_touch(resource_ids=[reminder_id])
        item = services.reminder_open(patient=request.user.patient, delivery_id=reminder_id)  # type: ignore[union-attr]
        return Response(ReminderSerializer(item).data)


class ReminderAcknowledgeView(_ReminderView):
    @extend_schema(
        request=None,
        responses={200: ReminderSerializer},
        summary="Acknowledge a reminder",
        tags=["reminders"],
    )
    def post(self, request: Request, reminder_id: uuid.UUID) -> Response:
        self.access_log_touch(resource_ids=[reminder_id])
        item = services.reminder_acknowledge(
            patient=request.user.patient,  # type: ignore[union-attr]
            delivery_id=reminder_id,
        )
        return Response(ReminderSerializer(item).data)


class ReminderSnoozeView(_ReminderView):
    @extend_schema(
        request=SnoozeSerializer,
        responses={200: ReminderSerializer},
        summary="Snooze a reminder",
        tags=["reminders"],
    )
    def post(self, request: Request, reminder_id: uuid.UUID) -> Response:
        self.access_log_touch(resource_ids=[reminder_id])
        serializer = SnoozeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = services.reminder_snooze(
            patient=request.user.patient,  # type: ignore[union-attr]
            delivery_id=reminder_id,
            until=serializer.validated_data.get("until"),
            minutes=serializer.validated_data.get("minutes"),
        )
        return Response(ReminderSerializer(item).data)


class PreferencesView(_PatientView):
    @extend_schema(
        responses={200: PreferencesSerializer},
        summary="Reminder preferences",
        tags=["reminders"],
    )
    def get(self, request: Request) -> Response:
        prefs = services.preferences_get(patient=request.user.patient)  # type: ignore[union-attr]
        return Response(PreferencesSerializer(prefs).data)

    @extend_schema(
        request=PreferencesSerializer,
        responses={200: PreferencesSerializer},
        summary="Set time zone, quiet hours, channels, or opt out",
        tags=["reminders"],
    )
    def patch(self, request: Request) -> Response:
        serializer = PreferencesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        prefs = services.preferences_update(
            patient=request.user.patient,  # type: ignore[union-attr]
            time_zone=data.get("time_zone"),
            push=data.get("push"),
            email=data.get("email"),
            inbox=data.get("inbox"),
            quiet_hours=(data["quiet_start"], data["quiet_end"]) if "quiet_start" in data else None,
            opted_out=data.get("opted_out"),
        )
        return Response(PreferencesSerializer(prefs).data)
