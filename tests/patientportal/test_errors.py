"""Every API error has the same shape: code, message, status, request_id (+ errors / extra)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.patientportal.errors_urls")]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


def test_400_validation_lists_field_errors(patient_api):
    response = patient_api.post("/api/v1/echo", {"name": "x" * 11, "age": -1}, format="json")
    body = assert_error(response, 400, "validation_failed")
    too_long = "Ensure this field has no more than 10 characters."
    too_small = "Ensure this value is greater than or equal to 0."
    assert body["errors"] == {
        "name": [{"code": "max_length", "message": too_long}],
        "age": [{"code": "min_value", "message": too_small}],
    }


def test_400_malformed_json(patient_api):
    response = patient_api.generic(
        "POST", "/api/v1/echo", b'{"name": ', content_type="application/json"
    )
    body = assert_error(response, 400, "malformed_request")
    assert "errors" not in body


def test_401_without_a_token():
    body = assert_error(APIClient().get("/api/v1/echo"), 401, "not_authenticated")
    assert "errors" not in body


def test_401_with_an_unknown_token():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
    assert_error(client.get("/api/v1/echo"), 401, "not_authenticated")


def test_401_token_in_the_query_string_is_not_accepted(patient, mobile_app):
    from tests.fixtures.api import issue_token

    raw = issue_token(patient.user, mobile_app)
    assert_error(APIClient().get(f"/api/v1/echo?access_token={raw}"), 401, "not_authenticated")


def test_403_insufficient_scope(patient, api_client_for):
    client = api_client_for(patient, scope="account")
    assert_error(client.get("/api/v1/echo"), 403, "insufficient_scope")


def test_403_staff_user_is_not_a_patient(api_client_for):
    from tests.factories import StaffFactory

    staff = StaffFactory()
    assert_error(api_client_for(staff).get("/api/v1/echo"), 403, "permission_denied")


def test_404_unknown_api_path_is_json(patient_api):
    body = assert_error(patient_api.get("/api/v1/no-such-thing"), 404, "not_found")
    assert body["message"] == "Not found."


def test_405_method_not_allowed(patient_api):
    assert_error(patient_api.delete("/api/v1/echo"), 405, "method_not_allowed")


def test_409_application_error_keeps_its_own_code(patient_api):
    body = assert_error(patient_api.get("/api/v1/conflict"), 409, "sync_in_progress")
    assert body["message"] == "That connection is already being synced."


def test_429_throttled_with_retry_after(patient_api):
    assert patient_api.get("/api/v1/throttled").status_code == 200
    assert patient_api.get("/api/v1/throttled").status_code == 200
    response = patient_api.get("/api/v1/throttled")
    body = assert_error(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 61
    assert body["extra"]["retry_after"] == int(response["Retry-After"])


def test_throttling_is_per_user(patient_api, api_client_for):
    from tests.factories import PatientFactory

    for _ in range(2):
        assert patient_api.get("/api/v1/throttled").status_code == 200
    assert patient_api.get("/api/v1/throttled").status_code == 429
    other = api_client_for(PatientFactory())
    assert other.get("/api/v1/throttled").status_code == 200


def test_429_application_rate_limit_sets_retry_after(patient_api):
    response = patient_api.get("/api/v1/rate-limited")
    assert_error(response, 429, "rate_limited")
    assert response["Retry-After"] == "300"


def test_413_oversized_body(patient_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = patient_api.post("/api/v1/echo", {"name": "x" * 5000, "age": 1}, format="json")
    assert_error(response, 413, "payload_too_large")


def test_500_is_json_and_leaks_nothing(patient, api_client_for, caplog):
    client = api_client_for(patient)
    client.raise_request_exception = False
    response = client.get("/api/v1/boom")
    body = assert_error(response, 500, "server_error")
    assert "Jane" not in response.content.decode()
    assert body["message"] == "An unexpected error occurred."


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(patient_api):
    response = patient_api.get("/api/v1/echo", HTTP_X_REQUEST_ID="mobile-req-12345678")
    assert response["X-Request-ID"] == "mobile-req-12345678"
    response = patient_api.get("/api/v1/echo", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32
