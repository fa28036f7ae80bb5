"""After a launch and a refresh, no token (nor code, state, verifier, nonce, id_token) appears in
a dump of the database, the captured logs (DEBUG), any API response or the admin."""

from __future__ import annotations

import logging
from io import StringIO
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.core.management import call_command
from django.db import connection as db

from fhirlink.services.tokens import connection_refresh
from tests.factories import UserFactory
from tests.fhirlink.conftest import connection_of

pytestmark = pytest.mark.django_db


def _database_dump() -> tuple[str, bytes]:
    text: list[str] = []
    raw: list[bytes] = []
    with db.cursor() as cursor:
        for table in db.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        raw.append(bytes(value))
                    else:
                        text.append(str(value))
    return "\n".join(text), b"\n".join(raw)


def test_tokens_appear_nowhere(consenting_patient, connect, ehr, caplog, client):
    caplog.set_level(logging.DEBUG)
    run = connect(consenting_patient)
    connection = connection_of(run)
    connection_refresh(connection_id=connection.pk, force=True)

    authorize_query = dict(parse_qsl(urlsplit(run["launch"].authorize_url).query))
    exchange = ehr.token_requests[0]["form"]
    start_token = run["start"]["start_url"].rsplit("/", 1)[-1]
    secrets = [
        *ehr.issued_tokens,  # both access tokens, the refresh token, the id_token
        run["params"]["code"],
        authorize_query["state"],
        authorize_query["nonce"],
        exchange["code_verifier"],
        start_token,  # the single-use start URL's token (stored as SHA-256 only)
    ]
    assert len(ehr.issued_tokens) == 4
    assert all(len(s) >= 20 for s in secrets)

    api = run["api"]
    # The start response carries the start URL (its token) by design; it must carry no EHR
    # token, code, verifier, state or nonce.
    start_body = str(run["start"])
    bodies = [
        run["location"],
        api.get("/api/v1/connections").content.decode(),
        api.get(f"/api/v1/connections/{connection.pk}").content.decode(),
        api.get("/api/v1/health-systems").content.decode(),
    ]
    admin = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(admin)
    for url in (
        f"/admin/fhirlink/connection/{connection.pk}/change/",
        "/admin/fhirlink/connection/",
        f"/admin/fhirlink/healthsystem/{connection.health_system_id}/change/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        bodies.append(page.content.decode())

    text, raw = _database_dump()
    dumpdata = StringIO()
    call_command("dumpdata", stdout=dumpdata)
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "EHR POST" in logs  # the logs were captured

    for secret in secrets:
        assert secret not in text
        assert secret.encode() not in raw
        assert secret not in dumpdata.getvalue()
        assert secret not in logs
        for body in bodies:
            assert secret not in body
    for secret in secrets[:-1]:
        assert secret not in start_body

    # The disconnect receipt carries none either.
    receipt = api.delete(f"/api/v1/connections/{connection.pk}").content.decode()
    for secret in secrets:
        assert secret not in receipt
