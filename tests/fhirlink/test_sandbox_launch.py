"""The full SMART patient standalone launch against the Cerner sandbox, over HTTP (live server):
connect, unticked scopes, denial, refresh, throttling, revoked grant -> needs_reauth, reconnect,
disconnect with a receipt, signing-key rotation, private_key_jwt, and no token anywhere."""

from __future__ import annotations

import json
import logging
from io import StringIO
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command

from fhirlink.models import Connection, ConnectionStatus, HealthSystem
from fhirlink.services.registry import health_system_register
from fhirlink.services.tokens import connection_access_token, connection_refresh, token_open
from tests.fhirlink.conftest import RETURN_URI, grant_ehr_sync
from tests.fhirlink.test_no_leaks import _database_dump
from tests.fixtures.launch import deep_link, launch_begin, launch_return

pytestmark = [pytest.mark.integration]

REDIRECT_URI = "http://127.0.0.1:8000/fhirlink/callback/sandbox"  # the health system's own
CLIENT_ID = "portal-integration"


@pytest.fixture
def sandbox_hs(sandbox) -> HealthSystem:
    sandbox.register_client(CLIENT_ID, REDIRECT_URI)
    hs, _ = health_system_register(
        slug="sandbox",
        name="Sandbox Health",
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id=CLIENT_ID,
        client_auth="public",
        scope_syntax="v2",
        resources=[
            "Patient",
            "Observation",
            "Condition",
            "AllergyIntolerance",
            "MedicationRequest",
        ],
    )
    assert hs.redirect_uri == REDIRECT_URI
    return hs


@pytest.fixture
def sb_patient(transactional_db):
    from tests.factories import PatientFactory

    patient = PatientFactory.create()
    grant_ehr_sync(patient)
    return patient


def _launch(sandbox, api, client, patient, hs, who="nancy", **kw):
    """The app's start, the browser (signed in as the patient) through the start URL, the
    sandbox's login and approval, the callback: (start body, callback params, deep link)."""
    launch = launch_begin(api, client, patient, hs)
    location = sandbox.login(who, launch.authorize_url, **kw)
    assert location.startswith(REDIRECT_URI + "?")
    params = dict(parse_qsl(urlsplit(location).query))
    result = launch_return(client, location)
    assert result["location"].startswith(RETURN_URI + "?")
    return launch.start, params, deep_link(result)


def test_full_launch_refresh_reauth_reconnect_disconnect(
    sandbox, sandbox_hs, sb_patient, api_client_for, client, caplog
):
    caplog.set_level(logging.DEBUG)
    api = api_client_for(sb_patient, scope="connections")
    start, params, result = _launch(sandbox, api, client, sb_patient, sandbox_hs)
    assert result["outcome"] == "connected", result
    connection = Connection.objects.get(pk=result["connection"])
    nancy = sandbox.patients["nancy"]
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.fhir_patient_id == nancy.fhir_id
    assert connection.fhir_user.endswith(f"/Patient/{nancy.fhir_id}")
    assert set(connection.granted_resources) == {
        "Patient",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "MedicationRequest",
        # read by reference (issue #20 item 1)
        "Practitioner",
        "Organization",
        "Location",
    }
    assert "patient/Observation.s" in connection.granted_scopes.split()
    issued = [token_open(connection, "access_token"), token_open(connection, "refresh_token")]
    assert all(issued)

    # Refresh: Cerner sends no new refresh token; we keep the original.
    assert connection_refresh(connection_id=connection.pk, force=True) == "refreshed"
    connection.refresh_from_db()
    assert token_open(connection, "refresh_token") == issued[1]
    new_access = token_open(connection, "access_token")
    assert new_access != issued[0]
    issued.append(new_access)
    # Throttled within the minute, without calling the server.
    assert connection_refresh(connection_id=connection.pk, force=True) == "throttled"

    # No token anywhere: database, logs, API responses.
    text, raw = _database_dump()
    dump = StringIO()
    call_command("dumpdata", stdout=dump)
    bodies = [
        api.get("/api/v1/connections").content.decode(),
        api.get(f"/api/v1/connections/{connection.pk}").content.decode(),
        json.dumps(start),
    ]
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for token in [*issued, params["code"]]:
        assert token not in text
        assert token.encode() not in raw
        assert token not in dump.getvalue()
        assert token not in logs
        assert all(token not in body for body in bodies)

    # The patient revokes the grant at the health system: the next refresh -> needs_reauth.
    # (a minute later, so neither side's refresh throttle applies)
    sandbox.set_switches(refresh_min_interval_seconds=0)
    Connection.objects.filter(pk=connection.pk).update(last_refresh_attempt_at=None)
    assert sandbox.revoke_grant(patient="nancy", client_id=CLIENT_ID) >= 1
    from fhirlink.exceptions import ReauthRequired

    with pytest.raises(ReauthRequired):
        connection_refresh(connection_id=connection.pk, force=True)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert not connection.has_tokens
    assert api.get(f"/api/v1/connections/{connection.pk}").json()["status"] == "needs_reauth"

    # Reconnect: the same connection comes back.
    _, _, again = _launch(sandbox, api, client, sb_patient, sandbox_hs)
    assert again == {"connection": str(connection.pk), "outcome": "connected"}
    assert Connection.objects.filter(patient=sb_patient).count() == 1
    assert connection_access_token(connection_id=connection.pk)

    # Disconnect with a receipt; the token is revoked at the sandbox.
    receipt = api.delete(f"/api/v1/connections/{connection.pk}").json()
    assert receipt["revocation"]["endpoint_advertised"] is True
    assert receipt["revocation"]["refresh_token"] == "revoked"
    assert receipt["local_tokens_destroyed"] is True
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.DISCONNECTED
    assert not connection.has_tokens


def test_unticked_scopes_and_denial(sandbox, sandbox_hs, sb_patient, api_client_for, client):
    api = api_client_for(sb_patient, scope="connections")
    _, _, result = _launch(
        sandbox,
        api,
        client,
        sb_patient,
        sandbox_hs,
        untick=("patient/Condition.rs", "patient/MedicationRequest.rs"),
    )
    assert result["outcome"] == "connected_partial"
    connection = Connection.objects.get(pk=result["connection"])
    assert sorted(connection.declined_resources) == ["Condition", "MedicationRequest"]
    assert "Condition" not in connection.granted_resources

    _, _, denied = _launch(sandbox, api, client, sb_patient, sandbox_hs, deny=True)
    assert denied["outcome"] == "access_denied"
    # A denied reconnect leaves the working connection as it was.
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE


def test_signing_key_rotation(sandbox, sandbox_hs, sb_patient, api_client_for, client):
    api = api_client_for(sb_patient, scope="connections")
    assert _launch(sandbox, api, client, sb_patient, sandbox_hs)[2]["outcome"] == "connected"
    sandbox.rotate_signing_key()  # our cached JWKS does not know the new kid
    assert (
        _launch(sandbox, api, client, sb_patient, sandbox_hs, who="joe")[2]["outcome"]
        == "connected"
    )


def test_private_key_jwt_against_the_sandbox(sandbox, sb_patient, api_client_for, client):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": "portal-1", "alg": "RS384", "use": "sig"})
    sandbox.register_client(
        "portal-confidential", REDIRECT_URI, confidential=True, jwks={"keys": [public_jwk]}
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    hs, _ = health_system_register(
        slug="sandbox-jwt",
        name="Sandbox (private_key_jwt)",
        fhir_base_url=sandbox.fhir_base,
        tenant=sandbox.tenant,
        client_id="portal-confidential",
        client_auth="private_key_jwt",
        jwt_key_id="portal-1",
        jwt_alg="RS384",
        secret=pem,
        resources=["Patient", "Observation"],
        redirect_uri=REDIRECT_URI,
    )
    api = api_client_for(sb_patient, scope="connections")
    _, _, result = _launch(sandbox, api, client, sb_patient, hs)
    assert result["outcome"] == "connected", result
    connection = Connection.objects.get(pk=result["connection"])
    sandbox.set_switches(refresh_min_interval_seconds=0)
    assert connection_refresh(connection_id=connection.pk, force=True) == "refreshed"
    receipt = api.delete(f"/api/v1/connections/{connection.pk}").json()
    assert receipt["revocation"]["refresh_token"] == "revoked"


def test_refresh_task_in_a_real_worker(
    sandbox, sandbox_hs, sb_patient, api_client_for, client, celery_worker_process
):
    """The refresh task, run by a real Celery worker process, against the live sandbox."""
    import time as _time
    from datetime import timedelta

    from django.utils import timezone

    from fhirlink.tasks import refresh_connection

    api = api_client_for(sb_patient, scope="connections")
    _, _, result = _launch(sandbox, api, client, sb_patient, sandbox_hs)
    connection = Connection.objects.get(pk=result["connection"])
    refresh = token_open(connection, "refresh_token")
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    refresh_connection.delay(str(connection.pk))
    deadline = _time.monotonic() + 60
    while _time.monotonic() < deadline:
        connection.refresh_from_db()
        if connection.last_refreshed_at:
            break
        _time.sleep(0.2)
    assert connection.last_refreshed_at is not None
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.access_token_expires_at is not None
    assert connection.access_token_expires_at > timezone.now()
    assert token_open(connection, "refresh_token") == refresh
