"""The signed-in patient's account: /api/v1/me, deletion request, app sessions."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from oauth2_provider.models import RefreshToken
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patientportal.accesslog.logged import AccessLoggedAPIMixin
from patientportal.accesslog.models import AccessAction
from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API

from .. import selectors, services
from ..models import Patient, User
from .serializers import (
    DeletionReceiptSerializer,
    MeSerializer,
    MeUpdateSerializer,
    SessionSerializer,
)

ME_EXAMPLE = OpenApiExample(
    "A patient",
    value={
        "id": "3f2b8c1e-9d4a-4b6e-8f0a-1c2d3e4f5a6b",
        "email": "nancy@example.com",
        "given_name": "Nancy",
        "family_name": "Smart",
        "email_verified": True,
        "time_zone": "America/Chicago",
        "created_at": "2026-11-24T08:00:00Z",
    },
    response_only=True,
)


def _patient(request: Request) -> Patient:
    user = request.user
    assert isinstance(user, User)
    return user.patient


class MeView(AccessLoggedAPIMixin, APIView):
    """The signed-in patient's account (its reads and changes are access-logged)."""

    permission_classes = PATIENT_API
    required_scopes = ["account"]
    access_log_action = AccessAction.READ
    access_log_resource_type = "Account"

    @extend_schema(
        operation_id="me_get",
        summary="Your account",
        responses={200: MeSerializer},
        examples=[ME_EXAMPLE],
        tags=["account"],
    )
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(_patient(request)).data)

    @extend_schema(
        operation_id="me_update",
        summary="Change your names or time zone",
        description=(
            "Partial update. The time zone must be an IANA name known to the server. The e-mail "
            "address cannot be changed here; unknown or read-only fields are refused with "
            "`validation_failed`."
        ),
        request=MeUpdateSerializer,
        responses={200: MeSerializer},
        examples=[
            OpenApiExample(
                "Change the time zone",
                value={"time_zone": "Europe/London"},
                request_only=True,
            ),
            ME_EXAMPLE,
        ],
        tags=["account"],
    )
    def patch(self, request: Request) -> Response:
        serializer = MeUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = services.patient_profile_update(
            patient=_patient(request), **serializer.validated_data
        )
        return Response(MeSerializer(patient).data)


class MeDeletionRequestView(AccessLoggedAPIMixin, APIView):
    """Ask for the account to be deleted (access-logged as a deletion)."""

    permission_classes = PATIENT_API
    required_scopes = ["account"]
    access_log_action = AccessAction.DELETE
    access_log_resource_type = "Account"

    @extend_schema(
        operation_id="me_deletion_request",
        summary="Ask for your account to be deleted",
        description=(
            "Records the request and returns a receipt. At once: every app session of the "
            "account is signed out (all OAuth tokens are revoked, including the one making this "
            "request) and sign-in is closed. The erasure itself (synced records, health-system "
            "connections, the account) is carried out afterwards by operators and background "
            "jobs; this endpoint does not erase anything. Asking again returns the same receipt."
        ),
        request=None,
        responses={202: DeletionReceiptSerializer},
        examples=[
            OpenApiExample(
                "Receipt",
                value={
                    "receipt_id": "8c0e7f4a-2b1d-4e3f-9a6b-5c4d3e2f1a0b",
                    "status": "pending",
                    "requested_at": "2026-11-24T08:00:00Z",
                    "sessions_revoked": 1,
                    "message": (
                        "Your request is recorded and you are signed out everywhere. Your data "
                        "will be erased by our team; keep this receipt id if you contact us."
                    ),
                },
                response_only=True,
            )
        ],
        tags=["account"],
    )
    def post(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, User)
        receipt = services.account_deletion_request(user=user)
        return Response(DeletionReceiptSerializer(receipt).data, status=status.HTTP_202_ACCEPTED)


class SessionPagination(CursorPagination):
    ordering = "-created"


class MeSessionListView(generics.ListAPIView[RefreshToken]):
    """The apps signed in to the account (OAuth session metadata, no patient data)."""

    permission_classes = PATIENT_API
    required_scopes = ["account"]
    serves_patient_data = False
    serializer_class = SessionSerializer
    pagination_class = SessionPagination
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[RefreshToken]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return RefreshToken.objects.none()
        user = self.request.user
        assert isinstance(user, User)
        return selectors.oauth_session_list(user=user)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["current_family"] = _current_family(self.request)
        return context

    @extend_schema(
        operation_id="me_sessions_list",
        summary="Apps signed in to your account",
        description=(
            "One entry per sign-in (refresh-token family) that is still live, newest first. "
            "Token values are never returned."
        ),
        examples=[
            OpenApiExample(
                "One session",
                value={
                    "id": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                    "application": "Patient Portal mobile app",
                    "scopes": ["account", "records:read"],
                    "signed_in_at": "2026-11-20T10:00:00Z",
                    "last_refreshed_at": "2026-11-24T07:50:00Z",
                    "current": True,
                },
                response_only=True,
            )
        ],
        tags=["account"],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class MeSessionRevokeView(APIView):
    """Sign one app session out (OAuth session metadata, no patient data)."""

    permission_classes = PATIENT_API
    required_scopes = ["account"]
    serves_patient_data = False

    @extend_schema(
        operation_id="me_sessions_revoke",
        summary="Sign an app session out",
        description="Revokes the session's refresh token and its access tokens.",
        request=None,
        responses={204: None},
        tags=["account"],
    )
    def delete(self, request: Request, session_id: uuid.UUID) -> Response:
        user = request.user
        assert isinstance(user, User)
        services.oauth_session_revoke(user=user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _current_family(request: Request) -> Any:
    token = request.auth
    if token is None:
        return None
    refresh = RefreshToken.objects.filter(access_token=token).only("token_family").first()
    return refresh.token_family if refresh is not None else None
