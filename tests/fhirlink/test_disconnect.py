"""Disconnect: RFC 7009 revocation when advertised, local tokens destroyed, optional purge
(the sync store's erasure hook + the patient's data key), a receipt; idempotent."""

from __future__ import annotations

import pytest

from fhirlink import vault
from fhirlink.models import Connection, ConnectionStatus, PatientDataKey
from fhirlink.services.tokens import token_open
from patientportal.accesslog.models import AccessEvent
from tests.fhirlink.conftest import connection_of

pytestmark = pytest.mark.django_db


def test_disconnect_revokes_and_destroys_tokens(consenting_patient, connect, ehr):
    run = connect(consenting_patient)
    connection = connection_of(run)
    access = token_open(connection, "access_token")
    refresh = token_open(connection, "refresh_token")
    response = run["api"].delete(f"/api/v1/connections/{connection.pk}")
    assert response.status_code == 200
    receipt = response.json()
    assert receipt["connection"] == str(connection.pk)
    assert receipt["revocation"] == {
        "endpoint_advertised": True,
        "refresh_token": "revoked",
        "access_token": "revoked",
    }
    assert receipt["local_tokens_destroyed"] is True
    assert receipt["purged"] is False
    assert receipt["erased"] == {}
    assert receipt["data_key_destroyed"] is False
    assert ehr.revoked == [
        {"token": refresh, "token_type_hint": "refresh_token", "client_id": "portal-test-client"},
        {"token": access, "token_type_hint": "access_token", "client_id": "portal-test-client"},
    ]
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.DISCONNECTED
    assert connection.access_token_blob is None
    assert connection.refresh_token_blob is None
    assert connection.disconnect_receipt is not None
    assert connection.disconnect_receipt["revocation"]["refresh_token"] == "revoked"
    assert AccessEvent.objects.filter(action="disconnect").count() == 1
    # The grant is really gone at the server.
    assert all(g.revoked for g in ehr.refresh_index.values())
    # Idempotent: a second DELETE answers a receipt with nothing left to revoke.
    again = run["api"].delete(f"/api/v1/connections/{connection.pk}").json()
    assert again["local_tokens_destroyed"] is False
    assert again["revocation"]["refresh_token"] is None
    assert len(ehr.revoked) == 2


def test_disconnect_with_purge_erases_synced_data(consenting_patient, connect, ehr, monkeypatch):
    run = connect(consenting_patient)
    connection = connection_of(run)
    cipher = vault.patient_cipher(patient_id=consenting_patient.pk)
    blob = cipher.encrypt(b'{"resourceType":"Observation"}')
    erased_calls = []

    def erase(*, connection_id, patient_id):
        erased_calls.append((connection_id, patient_id))
        return {"Observation": 3}

    monkeypatch.setattr("fhirlink.hooks.synced_data_erase", erase)
    response = run["api"].delete(f"/api/v1/connections/{connection.pk}?purge=true")
    assert response.status_code == 200
    receipt = response.json()
    assert receipt["purged"] is True
    assert receipt["erased"] == {"Observation": 3}
    assert receipt["data_key_destroyed"] is True
    assert erased_calls == [(str(connection.pk), str(consenting_patient.pk))]
    assert not PatientDataKey.objects.filter(patient=consenting_patient).exists()
    with pytest.raises(vault.KeyDestroyed):
        vault.patient_cipher(patient_id=consenting_patient.pk, create=False)
    # A fresh key cannot read the old payloads: cryptographic erasure.
    with pytest.raises(vault.DecryptionFailed):
        vault.patient_cipher(patient_id=consenting_patient.pk).decrypt(blob)


def test_purge_keeps_the_key_while_another_connection_exists(consenting_patient, connect, ehr):
    first = connect(consenting_patient)
    connect(consenting_patient, patient="4342008")
    vault.patient_cipher(patient_id=consenting_patient.pk)
    receipt = (
        first["api"]
        .delete(f"/api/v1/connections/{first['result']['connection']}?purge=true")
        .json()
    )
    assert receipt["data_key_destroyed"] is False
    assert PatientDataKey.objects.filter(patient=consenting_patient).exists()


def test_disconnect_without_revocation_endpoint(consenting_patient, connect, ehr, monkeypatch):
    run = connect(consenting_patient)
    connection = connection_of(run)
    hs = connection.health_system
    assert hs.discovery is not None
    hs.discovery = {**hs.discovery, "revocation_endpoint": ""}
    hs.save(update_fields=["discovery"])
    receipt = run["api"].delete(f"/api/v1/connections/{connection.pk}").json()
    assert receipt["revocation"] == {
        "endpoint_advertised": False,
        "refresh_token": None,
        "access_token": None,
    }
    assert receipt["local_tokens_destroyed"] is True
    assert ehr.revoked == []
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.DISCONNECTED


def test_reconnect_after_disconnect_reuses_the_connection(consenting_patient, connect, ehr):
    first = connect(consenting_patient)
    first["api"].delete(f"/api/v1/connections/{first['result']['connection']}")
    second = connect(consenting_patient)
    assert second["result"] == {"connection": first["result"]["connection"], "outcome": "connected"}
    connection = Connection.objects.get()
    assert connection.status == ConnectionStatus.ACTIVE
    assert connection.disconnected_at is None


def test_disconnect_all_for_account_deletion(consenting_patient, connect, ehr):
    from fhirlink.services.connections import connection_disconnect_all

    connect(consenting_patient)
    connect(consenting_patient, patient="4342008")
    vault.patient_cipher(patient_id=consenting_patient.pk)
    receipts = connection_disconnect_all(patient=consenting_patient)
    assert len(receipts) == 2
    assert all(r["revocation"]["refresh_token"] == "revoked" for r in receipts)
    assert set(Connection.objects.values_list("status", flat=True)) == {"disconnected"}
    assert not any(c.has_tokens for c in Connection.objects.all())
    assert not PatientDataKey.objects.filter(patient=consenting_patient).exists()


def test_account_deletion_handler_is_registered(settings, consenting_patient, connect, ehr):
    from unittest import mock

    from fhirlink.tasks import on_account_deletion_requested, patient_connections_erase

    assert "fhirlink.tasks.on_account_deletion_requested" in (
        settings.ACCOUNT_DELETION_REQUEST_HANDLERS
    )
    with mock.patch("fhirlink.tasks.patient_connections_erase.delay") as delay:
        on_account_deletion_requested(patient_id=consenting_patient.pk)
    delay.assert_called_once_with(str(consenting_patient.pk))
    connect(consenting_patient)
    assert patient_connections_erase.apply(args=(str(consenting_patient.pk),)).get() == 1
    assert Connection.objects.get().status == ConnectionStatus.DISCONNECTED
