"""Helpers for the accounts and OAuth tests: PKCE pairs and the authorize/token round trip."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.test import Client
from django.utils import timezone

from patientportal.accounts.models import Patient, User
from tests.factories import PatientFactory

MOBILE_REDIRECT_URI = "org.patientportal.app:/oauth/callback"
UNIVERSAL_LINK_REDIRECT_URI = "https://app.patientportal.example/oauth/callback"
CLIENT_ID = "mobile-app"  # the mobile_app fixture


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str


def make_pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return Pkce(verifier=verifier, challenge=challenge)


def verified_patient(**kwargs: Any) -> Patient:
    patient: Patient = PatientFactory.create(**kwargs)
    patient.user.email_verified_at = timezone.now()
    patient.user.save(update_fields=["email_verified_at"])
    return patient


def authorize_query(
    *,
    pkce: Pkce | None,
    redirect_uri: str = MOBILE_REDIRECT_URI,
    scope: str = "account records:read",
    state: str = "state-123",
    method: str | None = "S256",
    client_id: str = CLIENT_ID,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
    }
    if pkce is not None:
        params["code_challenge"] = pkce.challenge
        if method is not None:
            params["code_challenge_method"] = method
    return "/o/authorize/?" + urlencode(params)


def approve(client: Client, query_url: str) -> Any:
    """GET the approval page, then POST its form with "Allow"."""
    page = client.get(query_url)
    assert page.status_code == 200, page.content
    data = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    data["allow"] = "Allow"
    return client.post(query_url, data)


def redirect_params(response: Any) -> tuple[str, dict[str, str]]:
    """(redirect target without query, {param: value}) of an authorization response."""
    assert response.status_code == 302, response.content
    location = response["Location"]
    parts = urlsplit(location)
    base = location.split("?", 1)[0]
    return base, {k: v[0] for k, v in parse_qs(parts.query).items()}


def token_request(client: Client, **data: str) -> Any:
    return client.post(
        "/o/token/", urlencode(data), content_type="application/x-www-form-urlencoded"
    )


def sign_in_with_pkce(
    user: User, *, redirect_uri: str = MOBILE_REDIRECT_URI, scope: str = "account records:read"
) -> dict[str, Any]:
    """The whole mobile sign-in for `user`: authorize, approve, exchange. Returns the token JSON."""
    browser = Client()
    browser.force_login(user)
    pkce = make_pkce()
    response = approve(browser, authorize_query(pkce=pkce, redirect_uri=redirect_uri, scope=scope))
    _, params = redirect_params(response)
    tokens = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=redirect_uri,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    )
    assert tokens.status_code == 200, tokens.content
    body: dict[str, Any] = tokens.json()
    return body


def run_account_emails_inline(monkeypatch: Any) -> list[tuple[str, int]]:
    """Unit tests of the wiring: the e-mail job runs in-process when it is enqueued.

    Returns the (kind, user_id) pairs that were enqueued.
    """
    from patientportal.accounts import tasks

    enqueued: list[tuple[str, int]] = []

    def delay(kind: str, user_id: int) -> None:
        enqueued.append((kind, user_id))
        tasks.send_account_email.apply(args=(kind, user_id))

    monkeypatch.setattr(tasks.send_account_email, "delay", delay)
    return enqueued
