"""Consent endpoints under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("consents", views.ConsentListView.as_view(), name="consent-list"),
    path("consents/documents", views.ConsentDocumentListView.as_view(), name="consent-documents"),
    path("consents/history", views.ConsentHistoryView.as_view(), name="consent-history"),
    path("consents/fhir", views.ConsentFhirExportView.as_view(), name="consent-fhir"),
    path("consents/<str:purpose>/grant", views.ConsentGrantView.as_view(), name="consent-grant"),
    path("consents/<str:purpose>/revoke", views.ConsentRevokeView.as_view(), name="consent-revoke"),
]
