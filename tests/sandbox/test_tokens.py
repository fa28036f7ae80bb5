"""Refresh, throttling, grant lifetime, revocation, introspection, token expiry, key rotation."""

from __future__ import annotations

import jwt
import pytest
import requests

from fhirlink.sandbox.models import SandboxGrant

from .conftest import CLIENT

pytestmark = pytest.mark.integration


def _refresh(smart, refresh_token: str, **extra: str) -> requests.Response:
    return smart.token_post(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT,
            **extra,
        }
    )


def _patient_read(sandbox, access_token: str) -> requests.Response:
    return requests.get(
        f"{sandbox.fhir_base}/Patient/{sandbox.patients['nancy'].fhir_id}",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"},
        timeout=10,
    )


def test_refresh_returns_a_new_access_token_and_no_new_refresh_token(smart, nancy):
    response = _refresh(smart, nancy.token["refresh_token"])

    assert response.status_code == 200
    body = response.json()
    assert "refresh_token" not in body
    assert body["expires_in"] == 570
    assert body["access_token"] != nancy.token["access_token"]
    assert body["scope"] == " ".join(nancy.token["scope"])
    assert body["patient"] == nancy.token["patient"]
    assert response.headers["Cache-Control"] == "no-store"


def test_refresh_works_through_requests_oauthlib(smart, nancy):
    refreshed = nancy.oauth.refresh_token(
        smart.config["token_endpoint"],
        refresh_token=nancy.token["refresh_token"],
        client_id=CLIENT,
        include_client_id=True,
    )

    assert refreshed["access_token"] != nancy.token["access_token"]


def test_refreshing_more_than_once_a_minute_is_throttled(smart, sandbox, nancy):
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200

    throttled = _refresh(smart, nancy.token["refresh_token"])

    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 61
    sandbox.advance_clock(seconds=61)
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200


def test_an_offline_grant_expires_after_three_months_unused(smart, sandbox, nancy):
    sandbox.advance_clock(days=89)
    assert (
        _refresh(smart, nancy.token["refresh_token"]).status_code == 200
    )  # used: the 90 days restart

    sandbox.advance_clock(days=91)
    response = _refresh(smart, nancy.token["refresh_token"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "refresh-token-expired" in response.json()["error_uri"]


@pytest.mark.parametrize(
    ("suspend", "urn"), [(False, "refresh-token-revoked"), (True, "refresh-token-suspended")]
)
def test_a_revoked_or_suspended_grant_gives_invalid_grant(smart, sandbox, nancy, suspend, urn):
    assert sandbox.revoke_grant(patient="nancy", suspend=suspend) == 1

    response = _refresh(smart, nancy.token["refresh_token"])

    assert response.json()["error"] == "invalid_grant"
    assert urn in response.json()["error_uri"]
    assert _patient_read(sandbox, nancy.token["access_token"]).status_code == 401


def test_a_refresh_token_from_another_client_is_invalid(smart, sandbox, nancy):
    sandbox.register_client("other-app", "https://other.example.org/cb")

    response = smart.token_post(
        {
            "grant_type": "refresh_token",
            "refresh_token": nancy.token["refresh_token"],
            "client_id": "other-app",
        }
    )

    assert response.json()["error"] == "invalid_grant"


def test_refresh_failure_fault(smart, sandbox, nancy):
    sandbox.set_faults(refresh_failure={"error": "server_error", "status": 503, "times": 1})

    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 503
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200


def test_revoking_the_refresh_token_ends_the_grant(smart, sandbox, nancy):
    response = requests.post(
        smart.config["revocation_endpoint"],
        data={
            "token": nancy.token["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": CLIENT,
        },
        timeout=10,
    )

    assert response.status_code == 200
    assert SandboxGrant.objects.get().status == "revoked"
    assert _refresh(smart, nancy.token["refresh_token"]).json()["error"] == "invalid_grant"
    assert _patient_read(sandbox, nancy.token["access_token"]).status_code == 401


def test_revoking_an_access_token_leaves_the_grant(smart, sandbox, nancy):
    requests.post(
        smart.config["revocation_endpoint"],
        data={"token": nancy.token["access_token"], "client_id": CLIENT},
        timeout=10,
    )

    assert _patient_read(sandbox, nancy.token["access_token"]).status_code == 401
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200
    # An unknown token is not an error (RFC 7009 §2.2).
    assert (
        requests.post(
            smart.config["revocation_endpoint"],
            data={"token": "nope", "client_id": CLIENT},
            timeout=10,
        ).status_code
        == 200
    )


def test_introspection(smart, sandbox, nancy):
    active = requests.post(
        smart.config["introspection_endpoint"],
        data={"token": nancy.token["access_token"]},
        timeout=10,
    ).json()

    assert active["active"] is True
    assert active["patient"] == sandbox.patients["nancy"].fhir_id
    assert active["client_id"] == CLIENT
    assert requests.post(
        smart.config["introspection_endpoint"], data={"token": "nope"}, timeout=10
    ).json() == {"active": False}


def test_access_tokens_expire_after_570_seconds(smart, sandbox, nancy):
    sandbox.advance_clock(seconds=565)
    assert _patient_read(sandbox, nancy.token["access_token"]).status_code == 200

    sandbox.advance_clock(seconds=6)
    response = _patient_read(sandbox, nancy.token["access_token"])

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="fhir-myrecord.cerner.com", error="invalid_token"'
    )
    assert response.json()["issue"][0]["code"] == "login"


def test_rotating_the_signing_key_keeps_the_old_key_in_the_jwks(smart, sandbox):
    first = smart.launch()
    old_kid = jwt.get_unverified_header(first.token["id_token"])["kid"]

    new_kid = sandbox.rotate_signing_key()
    second = smart.launch()

    kids = [k["kid"] for k in requests.get(f"{sandbox.origin}/jwk", timeout=10).json()["keys"]]
    assert kids == [new_kid, old_kid]
    assert jwt.get_unverified_header(second.token["id_token"])["kid"] == new_kid
    jwks = jwt.PyJWKClient(f"{sandbox.origin}/jwk")
    for token in (first.token["id_token"], second.token["id_token"]):
        jwt.decode(
            token, jwks.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=CLIENT
        )


def test_unsupported_grant_type(smart):
    response = smart.token_post(
        {"grant_type": "password", "username": "x", "password": "y", "client_id": CLIENT}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_an_online_grant_ends_with_the_session(smart, sandbox):
    sandbox.register_client("online-app", "https://app.example.org/callback", access="online")
    launch = smart.launch(
        client_id="online-app", scopes=["launch/patient", "online_access", "patient/Patient.rs"]
    )
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": launch.token["refresh_token"],
        "client_id": "online-app",
    }

    sandbox.advance_clock(seconds=11 * 3600)
    assert smart.token_post(refresh).status_code == 200
    sandbox.advance_clock(seconds=2 * 3600)
    ended = smart.token_post(refresh)

    assert ended.json()["error"] == "invalid_grant"
    assert "session-ended" in ended.json()["error_uri"]


def test_refresh_throttle_switches(smart, sandbox, nancy):
    sandbox.set_switches(refresh_throttle_status=400)
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 400

    sandbox.set_switches(refresh_min_interval_seconds=0)
    assert _refresh(smart, nancy.token["refresh_token"]).status_code == 200


def test_refresh_token_rotation_switch(smart, sandbox, nancy):
    sandbox.set_switches(refresh_token_rotation=True, refresh_min_interval_seconds=0)

    rotated = _refresh(smart, nancy.token["refresh_token"]).json()

    assert rotated["refresh_token"] != nancy.token["refresh_token"]
    again = _refresh(smart, rotated["refresh_token"])
    assert again.status_code == 200
    # Reusing a rotated refresh token fails and revokes the family (RFC 9700 4.14.2), the
    # current refresh token included.
    assert _refresh(smart, nancy.token["refresh_token"]).json()["error"] == "invalid_grant"
    assert _refresh(smart, again.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_offline_lifetime_switch(smart, sandbox, nancy):
    sandbox.set_switches(offline_unused_days=30)
    sandbox.advance_clock(days=31)

    assert _refresh(smart, nancy.token["refresh_token"]).json()["error"] == "invalid_grant"
