"""POST /api/v1/connections/{id}/sync: the patient asks for a sync now (throttled)."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from fhirlink import selectors
from fhirlink.exceptions import ConnectionGone, ReauthRequired
from fhirlink.models import ConnectionStatus, SyncTrigger
from fhirlink.services.sync.progress import sync_run_progress
from fhirlink.sync.runs import sync_request
from patientportal.accesslog.logged import AccessLoggedAPIMixin
from patientportal.accesslog.models import AccessAction
from patientportal.consent.models import Purpose
from patientportal.consent.services import consent_require
from patientportal.core.api.permissions import PATIENT_API
from patientportal.core.api.throttling import SyncRequestThrottle

SyncResponse = inline_serializer("ConnectionSyncResponse", fields={"sync": serializers.DictField()})


class ConnectionSyncView(AccessLoggedAPIMixin, APIView):
    """Start a sync of one connection now (or return the one already queued or running)."""

    permission_classes = PATIENT_API
    required_scopes = ["connections"]
    throttle_classes = [
        *cast("list[type[BaseThrottle]]", api_settings.DEFAULT_THROTTLE_CLASSES),
        SyncRequestThrottle,
    ]
    access_log_resource_type = "Connection"
    access_log_purpose = Purpose.EHR_SYNC

    @extend_schema(
        operation_id="connections_sync",
        request=None,
        responses={
            202: SyncResponse,
            403: OpenApiResponse(description="No `ehr_sync` consent (`consent_required`)."),
            404: OpenApiResponse(description="No such connection."),
            409: OpenApiResponse(description="The connection needs reconnecting or is gone."),
            429: OpenApiResponse(description="Asked too often (once per 5 minutes)."),
        },
        description=(
            "Queue a sync of the connection. The app follows progress on "
            "`GET /api/v1/connections/{id}` (`sync`). A sync already queued or running is "
            "returned instead of starting a second one."
        ),
    )
    def post(self, request: Request, connection_id: Any) -> Response:
        patient = request.user.patient  # type: ignore[union-attr]
        self.access_log_touch(action=AccessAction.READ, resource_ids=[connection_id])
        connection = selectors.connection_get_for_patient(
            patient=patient, connection_id=connection_id
        )
        consent_require(patient=patient, purpose=Purpose.EHR_SYNC)
        if connection.status == ConnectionStatus.DISCONNECTED:
            raise ConnectionGone()
        if connection.status not in (ConnectionStatus.ACTIVE, ConnectionStatus.SYNCING):
            raise ReauthRequired()
        run = sync_request(connection_id=connection.pk, trigger=SyncTrigger.PATIENT)
        assert run is not None
        return Response({"sync": sync_run_progress(run)}, status=status.HTTP_202_ACCEPTED)
