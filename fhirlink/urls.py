"""Browser-facing fhirlink URLs (the SMART redirect URI lives here: /fhirlink/callback)."""

from django.urls import URLPattern, URLResolver, path

from fhirlink import views

app_name = "fhirlink"
urlpatterns: list[URLPattern | URLResolver] = [
    path("callback", views.smart_callback, name="callback"),
    path("jwks.json", views.jwks, name="jwks"),
]
