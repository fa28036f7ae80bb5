"""The "Done means" check: a plain requests-oauthlib SMART client against a sandbox tenant.

Knowing only a tenant's FHIR base URL (and a test patient's login), it discovers the SMART
configuration, runs a standalone patient launch with PKCE S256 (driving the sandbox's login and
approval pages without a browser), refreshes the token, and pages through an Observation search of
the patient, following only the opaque ``next`` links.

    python -m fhirlink.sandbox.smart_client_check \\
        --fhir-base http://127.0.0.1:8001/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d

Defaults: the built-in public client ``sandbox-smart-check`` and the large test patient.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests_oauthlib import OAuth2Session

from .conf import BUILTIN_CLIENTS, LARGE_PATIENT
from .forms_driver import drive_authorize

DEFAULT_CLIENT = "sandbox-smart-check"

SCOPES = [
    "openid",
    "fhirUser",
    "launch/patient",
    "offline_access",
    "patient/Patient.rs",
    "patient/Observation.s",
    "patient/Condition.rs",
]


@contextlib.contextmanager
def loopback_http_allowed(url: str) -> Iterator[None]:
    """oauthlib refuses http (allowed here only for a loopback sandbox) and raises when the
    granted scope differs from the request (Cerner may grant less: the client reads ``scope``)."""
    host = urlsplit(url).hostname or ""
    names = ["OAUTHLIB_RELAX_TOKEN_SCOPE"]
    if urlsplit(url).scheme == "http" and host in {"127.0.0.1", "localhost", "::1"}:
        names.append("OAUTHLIB_INSECURE_TRANSPORT")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class CheckResult:
    patient: str = ""
    granted_scope: str = ""
    refreshed: bool = False
    pages: int = 0
    observations: int = 0
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def run_check(fhir_base: str, **kwargs: Any) -> CheckResult:
    with loopback_http_allowed(fhir_base):
        return _run_check(fhir_base, **kwargs)


def _run_check(
    fhir_base: str,
    *,
    username: str = LARGE_PATIENT.username,
    password: str = LARGE_PATIENT.password,
    client_id: str = DEFAULT_CLIENT,
    redirect_uri: str = BUILTIN_CLIENTS[DEFAULT_CLIENT]["redirect_uris"][0],
    page_count: int = 200,
    max_pages: int | None = None,
    timeout: float = 30,
) -> CheckResult:
    started = time.monotonic()
    result = CheckResult()
    fhir_base = fhir_base.rstrip("/")
    http = requests.Session()

    config = http.get(f"{fhir_base}/.well-known/smart-configuration", timeout=timeout)
    config.raise_for_status()
    smart = config.json()
    if "S256" not in smart.get("code_challenge_methods_supported", []):
        raise RuntimeError("server does not advertise PKCE S256")
    result.log.append(
        f"discovered authorize={smart['authorization_endpoint']} token={smart['token_endpoint']}"
    )
    metadata = http.get(
        f"{fhir_base}/metadata", headers={"Accept": "application/fhir+json"}, timeout=timeout
    ).json()
    if metadata.get("fhirVersion") != "4.0.1":
        raise RuntimeError(f"not FHIR R4: {metadata.get('fhirVersion')}")

    oauth = OAuth2Session(client_id, redirect_uri=redirect_uri, scope=SCOPES, pkce="S256")
    state = secrets.token_urlsafe(16)
    authorize_url, _ = oauth.authorization_url(
        smart["authorization_endpoint"], state=state, aud=fhir_base, nonce=secrets.token_urlsafe(16)
    )
    location = drive_authorize(authorize_url, username, password, timeout=timeout)
    query = parse_qs(urlsplit(location).query)
    if "error" in query:
        raise RuntimeError(f"authorization failed: {query['error'][0]}")
    if query.get("state", [""])[0] != state:
        raise RuntimeError("state mismatch")
    token = oauth.fetch_token(
        smart["token_endpoint"],
        authorization_response=location,
        include_client_id=True,
        timeout=timeout,
    )
    result.patient = str(token["patient"])
    result.granted_scope = str(
        token["scope"] if isinstance(token["scope"], str) else " ".join(token["scope"])
    )
    result.log.append(f"launched: patient={result.patient} scope={result.granted_scope}")
    refresh_token = token["refresh_token"]

    refreshed = oauth.refresh_token(
        smart["token_endpoint"],
        refresh_token=refresh_token,
        client_id=client_id,
        include_client_id=True,
        timeout=timeout,
    )
    if "refresh_token" not in refreshed:
        # Cerner returns no new refresh token: keep the original.
        oauth.token = {**refreshed, "refresh_token": refresh_token}
    result.refreshed = refreshed["access_token"] != token["access_token"]
    result.log.append("refreshed the access token (no new refresh token, as Cerner)")

    url: str | None = f"{fhir_base}/Observation?patient={result.patient}&_count={page_count}"
    while url:
        response = oauth.get(url, headers={"Accept": "application/fhir+json"}, timeout=timeout)
        response.raise_for_status()
        bundle: dict[str, Any] = response.json()
        result.pages += 1
        result.observations += sum(
            1
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Observation"
        )
        url = next(
            (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
        )
        if max_pages is not None and result.pages >= max_pages:
            break
    result.seconds = time.monotonic() - started
    result.log.append(
        f"paged {result.pages} pages, {result.observations} Observations in {result.seconds:.1f}s"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fhir-base", required=True)
    parser.add_argument("--username", default=LARGE_PATIENT.username)
    parser.add_argument("--password", default=LARGE_PATIENT.password)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT)
    parser.add_argument(
        "--redirect-uri", default=BUILTIN_CLIENTS[DEFAULT_CLIENT]["redirect_uris"][0]
    )
    parser.add_argument("--max-pages", type=int, default=None)
    args = parser.parse_args(argv)
    result = run_check(
        args.fhir_base,
        username=args.username,
        password=args.password,
        client_id=args.client_id,
        redirect_uri=args.redirect_uri,
        max_pages=args.max_pages,
    )
    for line in result.log:
        sys.stdout.write(line + "\n")
    sys.stdout.write("OK\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
