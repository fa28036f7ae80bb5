"""Helpers for the sandbox conformance suite: a plain requests-oauthlib SMART client."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests_oauthlib import OAuth2Session

REDIRECT = "https://app.example.org/callback"
CLIENT = "conformance-app"
FULL_SCOPES = [
    "openid",
    "fhirUser",
    "launch/patient",
    "offline_access",
    "patient/Patient.rs",
    "patient/Observation.s",
    "patient/Condition.rs",
    "patient/AllergyIntolerance.rs",
    "patient/MedicationRequest.rs",
    "patient/Immunization.rs",
    "patient/Procedure.rs",
    "patient/Encounter.rs",
    "patient/DiagnosticReport.rs",
    "patient/DocumentReference.rs",
    "patient/Binary.r",
    "patient/CarePlan.rs",
    "patient/Goal.rs",
    "patient/CareTeam.rs",
    "patient/Device.rs",
    "patient/Provenance.rs",
    "patient/ServiceRequest.rs",
    "patient/NutritionOrder.rs",
    "patient/Consent.rs",
]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class Launch:
    oauth: OAuth2Session
    token: dict[str, Any]
    state: str
    nonce: str
    location: str

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        headers = {"Accept": "application/fhir+json", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return self.oauth.get(url, headers=headers, **kwargs)


class Smart:
    """Discovers the sandbox, builds authorize URLs with PKCE, runs launches."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.config = requests.get(sandbox.smart_configuration_url, timeout=10).json()

    def session(
        self, *, client_id: str = CLIENT, scopes: list[str] | None = None, pkce: bool = True
    ) -> OAuth2Session:
        return OAuth2Session(
            client_id,
            redirect_uri=REDIRECT,
            scope=scopes or FULL_SCOPES,
            pkce="S256" if pkce else None,
        )

    def authorize_url(
        self,
        oauth: OAuth2Session,
        *,
        state: str | None = None,
        nonce: str | None = None,
        **extra: str,
    ) -> str:
        params: dict[str, str] = {"aud": self.sandbox.fhir_base, **extra}
        if nonce is not None:
            params["nonce"] = nonce
        url, _ = oauth.authorization_url(
            self.config["authorization_endpoint"],
            state=state or secrets.token_urlsafe(12),
            **params,
        )
        return url

    def code_location(
        self,
        *,
        patient: str = "nancy",
        scopes: list[str] | None = None,
        client_id: str = CLIENT,
        untick: tuple[str, ...] = (),
        pick: str | None = None,
        untick_categories: tuple[str, ...] = (),
        **extra: str,
    ) -> tuple[OAuth2Session, str, str]:
        oauth = self.session(client_id=client_id, scopes=scopes)
        state = secrets.token_urlsafe(12)
        url = self.authorize_url(oauth, state=state, **extra)
        location = self.sandbox.login(
            patient, url, untick=untick, pick=pick, untick_categories=untick_categories
        )
        return oauth, location, state

    def launch(
        self,
        *,
        patient: str = "nancy",
        scopes: list[str] | None = None,
        client_id: str = CLIENT,
        untick: tuple[str, ...] = (),
        pick: str | None = None,
        untick_categories: tuple[str, ...] = (),
        **fetch: Any,
    ) -> Launch:
        oauth = self.session(client_id=client_id, scopes=scopes)
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        url = self.authorize_url(oauth, state=state, nonce=nonce)
        location = self.sandbox.login(
            patient, url, untick=untick, pick=pick, untick_categories=untick_categories
        )
        assert query_of(location).get("state") == state, location
        token = oauth.fetch_token(
            self.config["token_endpoint"],
            authorization_response=location,
            include_client_id=True,
            timeout=10,
            **fetch,
        )
        return Launch(oauth, dict(token), state, nonce, location)

    def token_post(self, data: dict[str, str], **kwargs: Any) -> requests.Response:
        return requests.post(self.config["token_endpoint"], data=data, timeout=10, **kwargs)


@pytest.fixture
def smart(sandbox, monkeypatch) -> Smart:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    # Cerner may grant less than asked: the client reads the returned scope.
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    sandbox.register_client(CLIENT, REDIRECT)
    return Smart(sandbox)


@pytest.fixture
def generic_smart(generic_sandbox, monkeypatch) -> Smart:
    """The same client against the sandbox's generic SMART 2.x profile."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    generic_sandbox.register_client(CLIENT, REDIRECT)
    return Smart(generic_sandbox)


@pytest.fixture
def nancy(smart) -> Launch:
    return smart.launch(patient="nancy")
