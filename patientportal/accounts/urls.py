"""Sign-up, login (used by the OAuth authorize step), e-mail verification, password reset."""

from django.urls import URLPattern, URLResolver

app_name = "accounts"
urlpatterns: list[URLPattern | URLResolver] = []
