"""Accounts endpoints under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("me", views.MeView.as_view(), name="accounts-me"),
    path(
        "me/deletion-request",
        views.MeDeletionRequestView.as_view(),
        name="accounts-me-deletion-request",
    ),
    path("me/sessions", views.MeSessionListView.as_view(), name="accounts-me-sessions"),
    path(
        "me/sessions/<uuid:session_id>",
        views.MeSessionRevokeView.as_view(),
        name="accounts-me-session-revoke",
    ),
]
