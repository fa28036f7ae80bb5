"""Consent endpoints: current documents, the patient's consents, grant, revoke, history, FHIR."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patientportal.accesslog.logged import AccessLoggedAPIMixin, AccessLoggedListMixin
from patientportal.accesslog.models import AccessAction
from patientportal.core.api.pagination import CursorPagination
from patientportal.core.api.permissions import PATIENT_API

from .. import selectors, services
from ..exceptions import PurposeNotOffered
from ..fhir import consents_bundle
from ..models import ConsentDocument, ConsentRecord, Purpose
from .serializers import (
    ConsentDocumentSerializer,
    ConsentGrantSerializer,
    ConsentRecordSerializer,
    ConsentStateSerializer,
)

LANGUAGE_PARAM = OpenApiParameter(
    "language", str, description="Preferred language of the documents (falls back to the default)."
)


def _states(request: Request) -> list[dict[str, Any]]:
    patient = request.user.patient  # type: ignore[union-attr]
    language = request.query_params.get("language")
    consents = selectors.patient_consents(patient=patient)
    states = []
    for document in selectors.consent_documents_current(language=language):
        consent = consents.get(document.purpose)
        states.append(
            {
                "purpose": document.purpose,
                "status": selectors.effective_status(consent=consent, purpose=document.purpose),
                "granted_version": consent.version if consent else None,
                "updated_at": consent.updated_at if consent else None,
                "document": document,
            }
        )
    return states


def _state_for(request: Request, purpose: str) -> dict[str, Any]:
    for state in _states(request):
        if state["purpose"] == purpose:
            return state
    raise PurposeNotOffered()


class ConsentDocumentListView(generics.ListAPIView[Any]):
    """The current consent document of every purpose offered (not patient data)."""

    serves_patient_data = False
    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    serializer_class = ConsentDocumentSerializer
    pagination_class = None

    queryset = ConsentDocument.objects.none()  # for the schema; get_queryset serves

    def get_queryset(self) -> Any:
        return selectors.consent_documents_current(
            language=self.request.query_params.get("language")
        )

    @extend_schema(operation_id="consent_documents_list", parameters=[LANGUAGE_PARAM])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ConsentListView(AccessLoggedAPIMixin, APIView):
    """The patient's consent for every purpose offered, with its current document."""

    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    access_log_action = AccessAction.LIST
    access_log_resource_type = "Consent"

    @extend_schema(
        operation_id="consents_list",
        parameters=[LANGUAGE_PARAM],
        responses=ConsentStateSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        states = _states(request)
        self.access_log_touch(resource_ids=[s["purpose"] for s in states])
        return Response(ConsentStateSerializer(states, many=True).data)


class ConsentGrantView(AccessLoggedAPIMixin, APIView):
    """Accept the current document of a purpose. Records version, time, IP, user agent, app."""

    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    access_log_action = AccessAction.CONSENT_CHANGE
    access_log_resource_type = "Consent"

    @extend_schema(
        operation_id="consents_grant",
        request=ConsentGrantSerializer,
        responses={
            200: ConsentStateSerializer,
            404: OpenApiResponse(description="`purpose_not_offered`"),
            409: OpenApiResponse(
                description="`consent_version_not_current`: extra.current_version"
            ),
        },
    )
    def post(self, request: Request, purpose: str) -> Response:
        body = ConsentGrantSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.consent_grant(
            patient=request.user.patient,  # type: ignore[union-attr]
            purpose=purpose,
            version=body.validated_data["version"],
            language=body.validated_data.get("language"),
            request=request,
        )
        return Response(ConsentStateSerializer(_state_for(request, purpose)).data)


class ConsentRevokeView(AccessLoggedAPIMixin, APIView):
    """Withdraw a consent. Takes effect at once; revoking twice changes nothing."""

    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    access_log_action = AccessAction.CONSENT_CHANGE
    access_log_resource_type = "Consent"

    @extend_schema(operation_id="consents_revoke", request=None, responses=ConsentStateSerializer)
    def post(self, request: Request, purpose: str) -> Response:
        if purpose not in Purpose.values:
            raise PurposeNotOffered()
        services.consent_revoke(
            patient=request.user.patient,  # type: ignore[union-attr]
            purpose=purpose,
            request=request,
        )
        return Response(ConsentStateSerializer(_state_for(request, purpose)).data)


class ConsentHistoryPagination(CursorPagination):
    ordering = "-created_at"


class ConsentHistoryView(AccessLoggedListMixin, generics.ListAPIView[ConsentRecord]):
    """Every grant, revocation and "consent needed" of the patient, newest first."""

    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    serializer_class = ConsentRecordSerializer
    pagination_class = ConsentHistoryPagination
    access_log_resource_type = "ConsentRecord"

    queryset = ConsentRecord.objects.none()  # for the schema; get_queryset serves

    def get_queryset(self) -> Any:
        return ConsentRecord.objects.filter(patient=self.request.user.patient)  # type: ignore[union-attr]

    @extend_schema(operation_id="consents_history")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ConsentFhirExportView(AccessLoggedAPIMixin, APIView):
    """The patient's consents as a FHIR R4 Bundle of Consent resources."""

    permission_classes = PATIENT_API
    required_scopes = ["consent"]
    access_log_action = AccessAction.EXPORT
    access_log_resource_type = "Consent"

    @extend_schema(
        operation_id="consents_fhir_export",
        responses={200: OpenApiResponse(description="A FHIR R4 Bundle (type collection).")},
    )
    def get(self, request: Request) -> Response:
        patient = request.user.patient  # type: ignore[union-attr]
        consents = selectors.patient_consents(patient=patient)
        pairs = [
            (c, selectors.effective_status(consent=c, purpose=purpose))
            for purpose, c in sorted(consents.items())
        ]
        self.access_log_touch(resource_ids=[c.purpose for c, _ in pairs])
        return Response(consents_bundle(pairs), content_type="application/fhir+json")


__all__ = [
    "ConsentDocumentListView",
    "ConsentFhirExportView",
    "ConsentGrantView",
    "ConsentHistoryView",
    "ConsentListView",
    "ConsentRevokeView",
]
