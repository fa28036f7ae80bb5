"""The vault: AES-GCM envelope encryption, key ids, AAD binding, rotation, per-patient keys."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.management import call_command

from fhirlink import vault
from fhirlink.models import Connection, HealthSystem, LaunchAttempt, PatientDataKey
from fhirlink.services.oauth_client import health_system_secret
from fhirlink.services.registry import health_system_set_secret
from fhirlink.services.tokens import token_open
from tests.fhirlink.conftest import connection_of

pytestmark = pytest.mark.django_db


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def two_keys(settings):
    k1, k2 = _key(), _key()
    settings.VAULT_KEYS = f"k1:{k1}"
    settings.VAULT_ACTIVE_KEY_ID = "k1"
    return {"k1": k1, "k2": k2}


def test_seal_open_roundtrip_and_binding():
    sealed = vault.seal("secret-value", aad="fhirlink.connection:1:access_token")
    assert sealed.key_id == vault.active_key_id()
    assert b"secret-value" not in sealed.blob
    assert (
        vault.open_sealed(
            sealed.blob, key_id=sealed.key_id, aad="fhirlink.connection:1:access_token"
        )
        == "secret-value"
    )
    # Another row's or field's AAD does not open it (no ciphertext swapping).
    with pytest.raises(vault.DecryptionFailed):
        vault.open_sealed(
            sealed.blob, key_id=sealed.key_id, aad="fhirlink.connection:2:access_token"
        )
    tampered = bytearray(sealed.blob)
    tampered[-1] ^= 1
    with pytest.raises(vault.DecryptionFailed):
        vault.open_sealed(
            bytes(tampered), key_id=sealed.key_id, aad="fhirlink.connection:1:access_token"
        )
    with pytest.raises(vault.UnknownKey):
        vault.open_sealed(sealed.blob, key_id="nope", aad="fhirlink.connection:1:access_token")
    # Two seals of the same value differ (fresh data key and nonce).
    assert vault.seal("secret-value", aad="a").blob != vault.seal("secret-value", aad="a").blob


def test_errors_carry_nothing():
    assert repr(vault.DecryptionFailed()) == "DecryptionFailed()"
    assert str(vault.DecryptionFailed()) == ""


def test_settings_provider_validates_keys():
    with pytest.raises(vault.VaultError):
        vault.SettingsKeyProvider(keys="k1:not-base64!", active="k1")
    with pytest.raises(vault.VaultError):
        vault.SettingsKeyProvider(keys=f"k1:{base64.b64encode(b'short').decode()}", active="k1")
    with pytest.raises(vault.VaultError):
        vault.SettingsKeyProvider(keys=f"k1:{_key()}", active="k2")


def test_rotation_online_batched_resumable(
    two_keys, settings, consenting_patient, other_patient, connect, ehr, health_system
):
    first = connection_of(connect(consenting_patient))
    second = connection_of(connect(other_patient))
    health_system_set_secret(health_system, "client-secret-xyz")
    health_system.save()
    vault.patient_cipher(patient_id=consenting_patient.pk)
    payload = vault.patient_cipher(patient_id=consenting_patient.pk).encrypt(
        b"payload", aad="Observation/1"
    )
    tokens = {
        c.pk: (token_open(c, "access_token"), token_open(c, "refresh_token"))
        for c in (first, second)
    }
    assert {c.token_key_id for c in Connection.objects.all()} == {"k1"}

    # A new key becomes active; the old one stays listed until rotation is done.
    settings.VAULT_KEYS = f"k1:{two_keys['k1']},k2:{two_keys['k2']}"
    settings.VAULT_ACTIVE_KEY_ID = "k2"
    call_command("vault_rotate", "--batch-size", "1", "--max-batches", "1")
    assert sorted(Connection.objects.values_list("token_key_id", flat=True)) == ["k1", "k2"]
    # Resumed: finishes the rest.
    call_command("vault_rotate", "--batch-size", "1")
    assert set(Connection.objects.values_list("token_key_id", flat=True)) == {"k2"}
    assert set(
        HealthSystem.objects.exclude(secret_key_id="").values_list("secret_key_id", flat=True)
    ) == {"k2"}
    assert set(LaunchAttempt.objects.values_list("verifier_key_id", flat=True)) == {"k2"}
    assert set(PatientDataKey.objects.values_list("key_id", flat=True)) == {"k2"}

    # The old key can go: everything still opens.
    settings.VAULT_KEYS = f"k2:{two_keys['k2']}"
    for connection in Connection.objects.all():
        assert (
            token_open(connection, "access_token"),
            token_open(connection, "refresh_token"),
        ) == tokens[connection.pk]
    assert (
        health_system_secret(HealthSystem.objects.get(pk=health_system.pk)) == "client-secret-xyz"
    )
    assert (
        vault.patient_cipher(patient_id=consenting_patient.pk).decrypt(payload, aad="Observation/1")
        == b"payload"
    )


def test_refresh_during_rotation_writes_one_key_id(
    two_keys, settings, consenting_patient, connect, ehr
):
    connection = connection_of(connect(consenting_patient))
    refresh = token_open(connection, "refresh_token")
    settings.VAULT_KEYS = f"k1:{two_keys['k1']},k2:{two_keys['k2']}"
    settings.VAULT_ACTIVE_KEY_ID = "k2"
    from fhirlink.services.tokens import connection_refresh

    connection_refresh(connection_id=connection.pk, force=True)
    connection.refresh_from_db()
    # New access token under k2; the kept refresh token was re-wrapped to k2 too.
    assert connection.token_key_id == "k2"
    settings.VAULT_KEYS = f"k2:{two_keys['k2']}"
    assert token_open(connection, "refresh_token") == refresh


def test_patient_cipher(consenting_patient, other_patient):
    a = vault.patient_cipher(patient_id=consenting_patient.pk)
    blob = a.encrypt(b"x" * 100, aad="r1")
    assert (
        vault.patient_cipher(patient_id=consenting_patient.pk).decrypt(blob, aad="r1") == b"x" * 100
    )
    with pytest.raises(vault.DecryptionFailed):
        vault.patient_cipher(patient_id=other_patient.pk).decrypt(blob, aad="r1")
    with pytest.raises(vault.DecryptionFailed):
        a.decrypt(blob, aad="r2")
    assert vault.patient_key_destroy(patient_id=consenting_patient.pk) is True
    assert vault.patient_key_destroy(patient_id=consenting_patient.pk) is False
    with pytest.raises(vault.KeyDestroyed):
        vault.patient_cipher(patient_id=consenting_patient.pk, create=False)


def test_patient_cipher_encrypts_a_batch_with_distinct_nonces(consenting_patient):
    cipher = vault.patient_cipher(patient_id=consenting_patient.pk)
    items = [(f"resource {n}".encode(), f"row-{n}") for n in range(300)]
    blobs = cipher.encrypt_many(items)
    assert [cipher.decrypt(b, aad=aad) for b, (_, aad) in zip(blobs, items, strict=True)] == [
        p for p, _ in items
    ]
    assert len({bytes(b[2:14]) for b in blobs}) == 300  # one fresh 96-bit nonce each
    with pytest.raises(vault.DecryptionFailed):
        cipher.decrypt(blobs[0], aad="row-1")  # still bound to its own row
    assert cipher.encrypt_many([]) == []
