"""EHR link endpoints under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from .sync_views import ConnectionSyncView
from .views import ConnectionDetailView, ConnectionListView, HealthSystemListView

urlpatterns: list[URLPattern | URLResolver] = [
    path("health-systems", HealthSystemListView.as_view(), name="fhirlink-health-systems"),
    path("connections", ConnectionListView.as_view(), name="fhirlink-connections"),
    path(
        "connections/<uuid:connection_id>",
        ConnectionDetailView.as_view(),
        name="fhirlink-connection-detail",
    ),
    path(
        "connections/<uuid:connection_id>/sync",
        ConnectionSyncView.as_view(),
        name="fhirlink-connection-sync",
    ),
]

# --- Records API (fhirlink/api/records_views.py) -------------------------------------------------
from . import records_views as rv  # noqa: E402

urlpatterns += [
    path("records/summary", rv.RecordsSummaryView.as_view(), name="fhirlink-records-summary"),
    path("records/trends", rv.TrendView.as_view(), name="fhirlink-records-trends"),
    path("records/timeline", rv.TimelineView.as_view(), name="fhirlink-records-timeline"),
    path("records/changes", rv.ChangesView.as_view(), name="fhirlink-records-changes"),
    path("records/exports", rv.ExportCreateView.as_view(), name="fhirlink-records-exports"),
    path(
        "records/exports/<slug:export_id>",
        rv.ExportDetailView.as_view(),
        name="fhirlink-records-export-detail",
    ),
    path(
        "records/exports/<slug:export_id>/download",
        rv.ExportDownloadView.as_view(),
        name="fhirlink-records-export-download",
    ),
    path(
        "records/documents/<int:record_id>/content",
        rv.DocumentContentView.as_view(),
        name="fhirlink-records-document-content",
    ),
    path("records/<slug:record_type>", rv.RecordListView.as_view(), name="fhirlink-records-list"),
    path(
        "records/<slug:record_type>/<int:record_id>",
        rv.RecordDetailView.as_view(),
        name="fhirlink-records-detail",
    ),
]
