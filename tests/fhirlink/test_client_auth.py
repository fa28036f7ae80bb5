"""Client authentication at the token endpoint: private_key_jwt (RS384/ES384) and
client_secret_basic."""

from __future__ import annotations

import base64
from urllib.parse import unquote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhirlink.models import HealthSystem
from fhirlink.services.registry import health_system_register
from tests.fhirlink import fake_cerner
from tests.fhirlink.conftest import REDIRECT_URI, connection_of

pytestmark = pytest.mark.django_db


def _pem(private) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _reregister(**fields) -> HealthSystem:
    hs, _ = health_system_register(
        slug="test-health",
        fhir_base_url=fake_cerner.FHIR_BASE,
        client_id=fake_cerner.CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        **fields,
    )
    return hs


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_private_key_jwt(alg, consenting_patient, connect, ehr, health_system):
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS384":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP384R1())
    _reregister(
        client_auth="private_key_jwt", jwt_key_id="portal-key-1", jwt_alg=alg, secret=_pem(private)
    )
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "connected"
    exchange = ehr.token_requests[0]
    form = exchange["form"]
    assert exchange["authorization"] is None
    assert "client_secret" not in form
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == alg
    assert header["kid"] == "portal-key-1"
    claims = jwt.decode(
        form["client_assertion"],
        private.public_key(),
        algorithms=[alg],
        audience=fake_cerner.TOKEN_URL,
    )
    assert claims["iss"] == claims["sub"] == fake_cerner.CLIENT_ID
    assert claims["exp"] - claims["iat"] == 300
    assert len(claims["jti"]) == 32
    # Refresh and revocation authenticate the same way, each with a fresh assertion.
    from fhirlink.services.tokens import connection_refresh

    connection_refresh(connection_id=connection_of(run).pk, force=True)
    refresh_form = ehr.token_requests[1]["form"]
    assert refresh_form["client_assertion"] != form["client_assertion"]
    run["api"].delete(f"/api/v1/connections/{run['result']['connection']}")
    assert ehr.revoked[0]["client_assertion_type"] == form["client_assertion_type"]


def test_client_secret_basic(consenting_patient, connect, ehr, health_system):
    _reregister(client_auth="client_secret_basic", secret="s3cr:et/+")
    run = connect(consenting_patient)
    assert run["result"]["outcome"] == "connected"
    exchange = ehr.token_requests[0]
    assert "client_id" not in exchange["form"]
    scheme, _, value = exchange["authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(value).decode().partition(":")
    assert unquote(user) == fake_cerner.CLIENT_ID
    assert unquote(password) == "s3cr:et/+"


def test_confidential_client_needs_a_secret(db):
    from patientportal.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        health_system_register(
            slug="x",
            name="X",
            fhir_base_url=fake_cerner.FHIR_BASE,
            client_id="c",
            client_auth="client_secret_basic",
            redirect_uri=REDIRECT_URI,
        )
    assert not HealthSystem.objects.filter(slug="x").exists()


def test_secret_is_sealed_in_the_row(health_system):
    _reregister(client_auth="client_secret_basic", secret="very-secret-client-secret")
    row = HealthSystem.objects.values().get(pk=health_system.pk)
    assert "very-secret-client-secret" not in repr(row)
    assert row["secret_blob"] is not None
    assert b"very-secret-client-secret" not in bytes(row["secret_blob"])


def test_client_auth_not_offered_by_the_server(
    consenting_patient, api_client_for, ehr, health_system
):
    _reregister(client_auth="client_secret_basic", secret="s")
    config = ehr.smart_configuration()
    config["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    ehr.smart_configuration = lambda: config
    api = api_client_for(consenting_patient, scope="connections")
    response = api.post("/api/v1/connections", {"health_system": str(health_system.pk)})
    assert response.status_code == 502
    assert response.json()["code"] == "ehr_misconfigured"
    from fhirlink.models import LaunchAttempt

    assert LaunchAttempt.objects.count() == 0
