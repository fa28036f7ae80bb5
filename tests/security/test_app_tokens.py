"""Attacks on this server's own OAuth tokens (the mobile app's sign-in, django-oauth-toolkit).

RFC 9700 §4.14.2 (refresh token rotation and reuse detection for public clients), OWASP ASVS
5.0 V10.4 (OAuth authorization server): a refresh token that was rotated away and is presented
again means it leaked; the whole family (every refresh and access token descended from that
sign-in) is revoked, so neither the thief nor the app holds a working token afterwards."""

from __future__ import annotations

import pytest
from django.test import Client
from oauth2_provider.models import AccessToken, RefreshToken
from rest_framework.test import APIClient

from tests.patientportal.accounts_helpers import (
    CLIENT_ID,
    sign_in_with_pkce,
    token_request,
    verified_patient,
)

pytestmark = pytest.mark.django_db


def _me(access_token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client.get("/api/v1/me").status_code


def _refresh(refresh_token: str) -> tuple[int, dict[str, str]]:
    response = token_request(
        Client(), grant_type="refresh_token", refresh_token=refresh_token, client_id=CLIENT_ID
    )
    return response.status_code, response.json()


def test_refresh_token_reuse_revokes_the_whole_family(mobile_app):
    user = verified_patient(user__email="reuse@example.test").user
    first = sign_in_with_pkce(user)
    status, second = _refresh(first["refresh_token"])  # the app's normal rotation
    assert status == 200
    assert _me(second["access_token"]) == 200

    status, replay = _refresh(first["refresh_token"])  # a stolen, rotated-away token
    assert (status, replay["error"]) == (400, "invalid_grant")
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 0
    assert AccessToken.objects.filter(user=user).count() == 0
    assert _me(second["access_token"]) == 401
    status, again = _refresh(second["refresh_token"])
    assert (status, again["error"]) == (400, "invalid_grant")


def test_refresh_token_of_another_client_is_refused(mobile_app):
    """RFC 6749 §6: a refresh token is bound to the client it was issued to."""
    user = verified_patient(user__email="bound@example.test").user
    tokens = sign_in_with_pkce(user)
    response = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id="another-client",
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_client", "invalid_grant")
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 1
