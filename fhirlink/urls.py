"""Browser-facing fhirlink URLs: the launch's start URL and the SMART redirect URIs
(/fhirlink/callback/<slug>, one per health system; /fhirlink/callback for older registrations)."""

from django.urls import URLPattern, URLResolver, path

from fhirlink import views

app_name = "fhirlink"
urlpatterns: list[URLPattern | URLResolver] = [
    path("launch/<str:token>", views.launch_start, name="launch-start"),
    path("callback", views.smart_callback, name="callback"),
    path("callback/<slug:key>", views.smart_callback, name="callback-health-system"),
    path("jwks.json", views.jwks, name="jwks"),
]
