"""Browser-facing fhirlink URLs (the SMART redirect URI lives here: /fhirlink/callback)."""

from django.urls import URLPattern, URLResolver

app_name = "fhirlink"
urlpatterns: list[URLPattern | URLResolver] = []
