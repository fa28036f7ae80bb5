"""Access log endpoints under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("access-log", views.AccessEventListView.as_view(), name="access-log"),
]
