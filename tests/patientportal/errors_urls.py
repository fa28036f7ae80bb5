"""A URLconf of small views that raise each kind of error, for tests of the one error format."""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from patientportal.core.api.permissions import PATIENT_API
from patientportal.core.errors import Conflict, RateLimited


class _Body(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=10)
    age = serializers.IntegerField(min_value=0)


class EchoView(APIView):
    """POST validates a body; GET needs `records:read`."""

    permission_classes = PATIENT_API
    required_scopes = ["records:read"]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        body = _Body(data=request.data)
        body.is_valid(raise_exception=True)
        return Response(body.validated_data)


class TightThrottle(UserRateThrottle):
    rate = "2/min"
    scope = "tight"


class ThrottledView(APIView):
    permission_classes = PATIENT_API
    required_scopes = ["account"]
    throttle_classes = [TightThrottle]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class ConflictView(APIView):
    permission_classes = PATIENT_API
    required_scopes = ["account"]

    def get(self, request: Request) -> Response:
        raise Conflict("That connection is already being synced.", code="sync_in_progress")


class RateLimitedView(APIView):
    permission_classes = PATIENT_API
    required_scopes = ["account"]

    def get(self, request: Request) -> Response:
        raise RateLimited(extra={"retry_after": 300})


class BoomView(APIView):
    permission_classes = PATIENT_API
    required_scopes = ["account"]

    def get(self, request: Request) -> Response:
        raise RuntimeError("patient Jane Doe MRN 12345 exploded")


urlpatterns = [
    path("api/v1/echo", EchoView.as_view()),
    path("api/v1/throttled", ThrottledView.as_view()),
    path("api/v1/conflict", ConflictView.as_view()),
    path("api/v1/rate-limited", RateLimitedView.as_view()),
    path("api/v1/boom", BoomView.as_view()),
]

handler404 = "patientportal.core.errors.handler404"
handler500 = "patientportal.core.errors.handler500"
