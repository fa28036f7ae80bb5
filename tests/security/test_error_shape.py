"""The error shape under malformed input: one JSON shape and the precise 4xx, never a 5xx.

Each test is one attack from the outside assessment (issue 19, item 6), named after it, and
cites the OWASP ASVS 5.0 requirement it checks. Every test asserts the exact status and `code`
and, where the request could have written, that nothing changed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from fhirlink import vault
from fhirlink.records import export as records_export
from fhirlink.services.connections import connection_disconnect_all
from patientportal.accounts.models import Patient
from tests.fhirlink.conftest import grant_ehr_sync
from tests.fhirlink.test_records_api import make_connection, seed_chart

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ERROR_KEYS = {"code", "message", "status", "request_id"}

# Every list the DRF cursor paginator serves (patientportal.core.api.pagination), and the
# records API's own lists (fhirlink.records.paging), which answer the same way.
DRF_LISTS = [
    "/api/v1/connections",
    "/api/v1/access-log",
    "/api/v1/consents/history",
    "/api/v1/me/sessions",
    "/api/v1/reminders",
]
RECORDS_LISTS = [
    "/api/v1/records/conditions",
    "/api/v1/records/timeline",
    "/api/v1/records/changes",
]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the shared error shape with exactly this status and code."""
    assert (response.status_code, response["Content-Type"]) == (status, "application/json"), (
        response.content
    )
    body: dict[str, Any] = json.loads(response.content)
    assert set(body) >= ERROR_KEYS, body
    assert (body["status"], body["code"]) == (status, code), body
    assert body["request_id"] == response["X-Request-ID"]
    return body


def account_state(patient: Patient) -> tuple[Any, ...]:
    patient.refresh_from_db()
    user = patient.user
    user.refresh_from_db()
    return (user.first_name, user.last_name, patient.time_zone, user.email)


@pytest.fixture
def me(patient: Patient, api_client_for: Callable[..., APIClient]) -> APIClient:
    return api_client_for(patient)


# --- Bodies: nesting, size, media type, JSON types ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("patch", "/api/v1/me"),
        ("post", "/api/v1/reminders/devices"),
        ("post", "/api/v1/consents/ehr_sync/grant"),
        ("post", "/api/v1/connections"),
    ],
)
def test_deeply_nested_json_on_an_authenticated_endpoint_is_400(patient, me, method, path):
    """OWASP ASVS 5.0 V1.5.2 / V2.2.1 (deserialization and input validation): a JSON document
    nested 100,000 levels deep is parsed while the bearer token is checked, before any view
    runs; it is a 400 `malformed_request`, not a RecursionError and a 500."""
    before = account_state(patient)
    body = "[" * 100_000 + "]" * 100_000
    response = getattr(me, method)(path, body, content_type="application/json")
    assert_error(response, 400, "malformed_request")
    assert account_state(patient) == before


def test_body_over_the_upload_limit_is_413_not_400(patient, me):
    """OWASP ASVS 5.0 V4.4.x / V13 (resource limits on API input): a 1.5 MiB body answers 413
    `payload_too_large` on the API and on the OAuth token endpoint, before anything reads it."""
    before = account_state(patient)
    big = json.dumps({"given_name": "x" * (1536 * 1024)})
    assert len(big) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert_error(
        me.patch("/api/v1/me", big, content_type="application/json"), 413, "payload_too_large"
    )
    token = Client().post(
        "/o/token/",
        "grant_type=x&pad=" + "x" * (1536 * 1024),
        content_type="application/x-www-form-urlencoded",
    )
    assert_error(token, 413, "payload_too_large")
    assert account_state(patient) == before


@pytest.mark.parametrize(
    "content_type", ["application/xml", "application/x-www-form-urlencoded", "text/plain"]
)
def test_wrong_content_type_is_415(patient, me, content_type):
    """OWASP ASVS 5.0 V4.1.1 (the API checks the Content-Type it receives): a body that is not
    JSON answers 415 `unsupported_media_type` and changes nothing."""
    before = account_state(patient)
    response = me.patch("/api/v1/me", "given_name=Mallory", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert account_state(patient) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"family_name": 0}, "family_name"),
        ({"given_name": ["Mallory"]}, "given_name"),
        ({"time_zone": {"name": "Europe/Paris"}}, "time_zone"),
    ],
)
def test_json_value_of_the_wrong_type_is_400(patient, me, body, field):
    """OWASP ASVS 5.0 V2.2.1 (input is validated against its declared type): a number or a
    list where the schema says string is refused (DRF would have coerced it to "0")."""
    before = account_state(patient)
    error = assert_error(me.patch("/api/v1/me", body, format="json"), 400, "validation_failed")
    assert error["errors"] == {field: [{"code": "invalid", "message": "Not a valid string."}]}
    assert account_state(patient) == before


# --- Query strings: impossible dates, page sizes, cursors -----------------------------------------


@pytest.mark.parametrize(
    "since", ["2024-13-45T25:61:00Z", "2024-02-30T00:00:00Z", "2023-02-29", "9999-99-99T99:99"]
)
def test_impossible_calendar_date_in_access_log_since_is_400(patient, api_client_for, since):
    """OWASP ASVS 5.0 V2.2.1 (input validation): a well-formed but impossible date-time in the
    access log's `since` is a 400 on the field, never a ValueError and a 500."""
    client = api_client_for(patient, scope="audit:read")
    error = assert_error(
        client.get("/api/v1/access-log", {"since": since}), 400, "validation_failed"
    )
    assert error["errors"] == {
        "since": [{"code": "invalid", "message": "Use an ISO 8601 date-time."}]
    }


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/access-log", "since"),
        ("/api/v1/access-log", "until"),
        ("/api/v1/records/trends", "date_to"),
        ("/api/v1/records/conditions", "date_from"),
    ],
)
def test_date_with_an_offset_the_database_refuses_is_not_a_500(patient, me, path, param):
    """OWASP ASVS 5.0 V2.2.1: an ISO 8601 date-time with an offset Python reads and PostgreSQL
    refuses (-19:29; found by the fuzzer as a 500) is read in UTC and served."""
    grant_ehr_sync(patient)
    response = me.get(path, {param: "1283-02-09T14:26:14-19:29"})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("path", DRF_LISTS + RECORDS_LISTS)
@pytest.mark.parametrize(
    ("page_size", "code"),
    [
        ("-1", "min_value"),
        ("0", "min_value"),
        ("1" + "0" * 30, "max_value"),
        ("201", "max_value"),
        ("null", "invalid"),
        ("ten", "invalid"),
    ],
)
def test_bad_page_size_on_every_list_is_400(patient, me, path, page_size, code):
    """OWASP ASVS 5.0 V4.3.x / V2.2.1 (API input validation, resource limits): `page_size`
    outside 1-200, `null` or not a number is a 400 on the field on every list, as the records
    API answers (before: -1 and 10^30 were served with the default size)."""
    grant_ehr_sync(patient)
    error = assert_error(me.get(path, {"page_size": page_size}), 400, "validation_failed")
    assert [e["code"] for e in error["errors"]["page_size"]] == [code]


FORGED_DRF_CURSOR = base64.b64encode(b"p=not-a-date&o=0").decode()


@pytest.mark.parametrize("path", DRF_LISTS + RECORDS_LISTS)
@pytest.mark.parametrize("cursor", ["zzz", FORGED_DRF_CURSOR, "cD0yMDI0LTAxLTAx"])
def test_bad_cursor_on_every_list_is_400(patient, me, path, cursor):
    """OWASP ASVS 5.0 V4.3.x / V2.2.1: a cursor this server did not issue (garbage, or DRF's
    unsigned base64 edited to an arbitrary position) is a 400 `invalid_cursor` on every list,
    never a 404 or a database error."""
    grant_ehr_sync(patient)
    assert_error(me.get(path, {"cursor": cursor}), 400, "invalid_cursor")


def test_cursor_of_one_list_is_refused_by_another(patient, me):
    """OWASP ASVS 5.0 V4.3.x: a cursor is bound to its listing's ordering (signed)."""
    grant_ehr_sync(patient)
    for _ in range(3):
        me.get("/api/v1/me")  # access-log rows
    page = me.get("/api/v1/access-log", {"page_size": 1}).json()
    cursor = page["next"].split("cursor=", 1)[1]
    make_connection(patient, slug="a")
    make_connection(patient, slug="b")
    assert_error(me.get("/api/v1/connections", {"cursor": unquote(cursor)}), 400, "invalid_cursor")


def test_valid_cursors_are_followed_on_every_list_with_data(patient, me):
    """OWASP ASVS 5.0 V4 (the documented contract holds): the `next` link of each list is
    accepted and walks every item once."""
    grant_ehr_sync(patient)
    make_connection(patient, slug="a", name="A")
    make_connection(patient, slug="b", name="B")
    make_connection(patient, slug="c", name="C")
    for _ in range(3):
        me.get("/api/v1/me")
    for path, expected in (("/api/v1/connections", 3), ("/api/v1/access-log", None)):
        seen: list[Any] = []
        url: str | None = f"{path}?page_size=1"
        while url:
            response = me.get(url)
            assert response.status_code == 200, response.content
            page = response.json()
            seen.extend(item["id"] for item in page["results"])
            url = page["next"]
        assert len(seen) == len(set(seen))
        if expected is not None:
            assert len(seen) == expected
        else:
            assert len(seen) >= 3


# --- An export downloaded after a disconnect with purge -------------------------------------------


def _ready_export(client: APIClient) -> str:
    created = client.post("/api/v1/records/exports", {"format": "ndjson"}, format="json")
    assert created.status_code == 202, created.content
    export_id: str = created.json()["id"]
    built = records_export.export_build(export_id)
    assert built is not None
    assert built["status"] == "ready"
    return export_id


@pytest.mark.parametrize(
    "purge",
    [
        # the service a disconnect with purge=true runs (the purge voids the prepared export)
        lambda patient: connection_disconnect_all(patient=patient, purge=True),
        # the patient's data key destroyed while the export blob is still in the cache
        lambda patient: vault.patient_key_destroy(patient_id=patient.pk),
    ],
    ids=["disconnect-all-with-purge", "data-key-destroyed"],
)
def test_export_downloaded_after_disconnect_with_purge_is_410_not_500(
    patient, api_client_for, purge
):
    """OWASP ASVS 5.0 V14.2 / V16 (data removed on request stays removed; errors stay handled):
    an export prepared before the patient disconnected with purge (cryptographic erasure)
    answers 410 `export_gone`, never a 500 (before: the download decrypted with a destroyed
    key and failed), and serves no byte of the purged data."""
    grant_ehr_sync(patient)
    seed_chart(patient)
    client = api_client_for(patient, scope="records:export records:read")
    export_id = _ready_export(client)
    purge(patient)
    response = client.get(f"/api/v1/records/exports/{export_id}/download")
    assert_error(response, 410, "export_gone")


# --- The OAuth server's metadata ------------------------------------------------------------------


def test_oauth_metadata_advertises_only_usable_grants(client):
    """OWASP ASVS 5.0 V10.4.x / RFC 8414 and RFC 9700 §2.1: discovery advertises the code flow
    with PKCE S256 and refresh only, never client_credentials, device_code, implicit or
    password, and only the response type `code`."""
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert "device_authorization_endpoint" not in metadata


# --- Request line and headers over the limits: gunicorn and nginx ---------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body)


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """gunicorn with deploy/gunicorn.conf.py on loopback (dev settings, its own VAR_DIR)."""
    var_dir = tmp_path_factory.mktemp("gunicorn-var")
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "patientportal.settings.dev",
        "VAR_DIR": str(var_dir),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    log = (var_dir / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "patientportal.wsgi", "--config", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (var_dir / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_query_string_over_the_limit_is_414_in_the_error_shape_from_gunicorn(gunicorn_port):
    """OWASP ASVS 5.0 V4 / V13 (limits on request size, errors without detail): a 20 KB query
    string is refused by gunicorn itself with 414 `uri_too_long` in the API's JSON error shape,
    not its HTML page echoing the request line."""
    query = b"x=" + b"a" * 20_000
    status, headers, body = _raw(
        gunicorn_port, b"GET /api/v1/me?" + query + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    assert (status, headers["content-type"], headers["cache-control"]) == (
        414,
        "application/json",
        "no-store",
    )
    assert body == {
        "code": "uri_too_long",
        "message": "The request line (path and query string) is too long.",
        "status": 414,
        "request_id": headers["x-request-id"],
    }


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 20_000 + b"\r\n",
        b"".join(b"X-H%d: 1\r\n" % i for i in range(150)),
    ],
    ids=["one-huge-header", "too-many-headers"],
)
def test_headers_over_the_limit_are_431_in_the_error_shape_from_gunicorn(gunicorn_port, headers):
    """OWASP ASVS 5.0 V4 / V13: a header over 8 KB, or more than 100 headers, is refused by
    gunicorn with 431 `headers_too_large` in the JSON error shape."""
    status, response_headers, body = _raw(
        gunicorn_port, b"GET /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"
    )
    assert (status, response_headers["content-type"]) == (431, "application/json")
    assert body == {
        "code": "headers_too_large",
        "message": "The request headers are too large.",
        "status": 431,
        "request_id": response_headers["x-request-id"],
    }


def test_nginx_answers_its_own_414_and_431_in_the_error_shape():
    """OWASP ASVS 5.0 V4 / V13: the TLS front end refuses an over-long request line (414) or
    header (nginx's 494, sent as 431) and a malformed request (400) itself, in the same JSON
    error shape, never cached. (tests/test_deploy.py runs `nginx -t` on the template.)"""
    conf = (ROOT / "deploy/nginx/templates/default.conf.template").read_text()
    for status, named, code, sent in (
        ("400", "@bad_request", "bad_request", "400"),
        ("414", "@uri_too_long", "uri_too_long", "414"),
        ("494", "@headers_too_large", "headers_too_large", "431"),
        ("413", "@payload_too_large", "payload_too_large", "413"),
    ):
        assert f"error_page {status} = {named};" in conf
        block = conf.split(f"location {named} {{", 1)[1].split("\n    }", 1)[0]
        assert "default_type application/json;" in block
        assert f'return {sent} \'{{"code":"{code}",' in block
        assert f'"status":{sent},"request_id":"$request_id"}}' in block
