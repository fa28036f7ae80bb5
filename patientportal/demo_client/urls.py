"""/demo/: mounted by patientportal/urls.py only when settings.DEMO_ENABLED (never in prod)."""

from django.urls import URLPattern, URLResolver, path

from . import views

app_name = "demo_client"
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.demo_page, name="index"),
]
