"""The sandbox origin's URLs (ROOT_URLCONF of patientportal.settings.sandbox)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
