"""/api/v1/me: read, update, deletion request, signed-in app sessions."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from oauth2_provider.models import AccessToken, RefreshToken
from rest_framework.test import APIClient

from patientportal.accounts.models import AccountDeletionRequest, Patient, User
from tests.factories import TEST_PASSWORD, StaffFactory
from tests.patientportal.accounts_helpers import (
    authorize_query,
    make_pkce,
    run_account_emails_inline,
    sign_in_with_pkce,
    verified_patient,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def account_emails(monkeypatch):
    return run_account_emails_inline(monkeypatch)


handler_calls: list[dict[str, str]] = []


def record_deletion(**kwargs: str) -> None:
    handler_calls.append(kwargs)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response["X-Request-ID"]
    return body


@pytest.fixture
def nancy(mobile_app) -> Patient:
    return verified_patient(
        user__email="nancy@example.test",
        user__first_name="Nancy",
        user__last_name="Smart",
        time_zone="America/Chicago",
    )


# --- GET /api/v1/me ----------------------------------------------------------------------------


def test_me_returns_exactly_the_account_fields(nancy, api_client_for):
    response = api_client_for(nancy, scope="account").get("/api/v1/me")
    assert response.status_code == 200
    assert response.json() == {
        "id": str(nancy.pk),
        "email": "nancy@example.test",
        "given_name": "Nancy",
        "family_name": "Smart",
        "email_verified": True,
        "time_zone": "America/Chicago",
        "created_at": nancy.created_at.isoformat().replace("+00:00", "Z"),
    }


def test_me_needs_the_account_scope(nancy, api_client_for):
    response = api_client_for(nancy, scope="records:read").get("/api/v1/me")
    assert_error(response, 403, "insufficient_scope")


def test_me_needs_a_token():
    assert_error(APIClient().get("/api/v1/me"), 401, "not_authenticated")


def test_me_is_for_patients_only(api_client_for):
    staff = StaffFactory.create()
    assert_error(api_client_for(staff).get("/api/v1/me"), 403, "permission_denied")


def test_me_refuses_a_session_cookie_without_a_token(nancy):
    client = APIClient()
    client.force_login(nancy.user)
    assert_error(client.get("/api/v1/me"), 401, "not_authenticated")


# --- PATCH /api/v1/me ------------------------------------------------------------------------


def test_patch_updates_names_and_time_zone(nancy, api_client_for):
    response = api_client_for(nancy, scope="account").patch(
        "/api/v1/me",
        {"given_name": " Nan ", "family_name": "Smart-Jones", "time_zone": "Europe/London"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["given_name"], body["family_name"], body["time_zone"]) == (
        "Nan",
        "Smart-Jones",
        "Europe/London",
    )
    nancy.refresh_from_db()
    nancy.user.refresh_from_db()
    assert (nancy.user.first_name, nancy.user.last_name, nancy.time_zone) == (
        "Nan",
        "Smart-Jones",
        "Europe/London",
    )


def _snapshot(patient: Patient) -> tuple:
    patient.refresh_from_db()
    user = User.objects.get(pk=patient.user_id)
    return (user.email, user.first_name, user.last_name, patient.time_zone)


def test_patch_refuses_an_unknown_time_zone(nancy, api_client_for):
    before = _snapshot(nancy)
    response = api_client_for(nancy).patch(
        "/api/v1/me", {"time_zone": "Europe/Atlantis", "given_name": "X"}, format="json"
    )
    body = assert_error(response, 400, "validation_failed")
    assert body["errors"] == {
        "time_zone": [{"code": "invalid_time_zone", "message": "Unknown time zone."}]
    }
    assert _snapshot(nancy) == before


def test_patch_refuses_read_only_and_unknown_fields(nancy, api_client_for):
    before = _snapshot(nancy)
    response = api_client_for(nancy).patch(
        "/api/v1/me", {"email": "evil@example.test", "is_staff": True}, format="json"
    )
    body = assert_error(response, 400, "validation_failed")
    assert body["errors"] == {
        "email": [{"code": "read_only", "message": "This field cannot be changed."}],
        "is_staff": [{"code": "read_only", "message": "This field cannot be changed."}],
    }
    assert _snapshot(nancy) == before
    assert User.objects.get(pk=nancy.user_id).is_staff is False


def test_patch_refuses_too_long_names(nancy, api_client_for):
    before = _snapshot(nancy)
    response = api_client_for(nancy).patch("/api/v1/me", {"family_name": "x" * 151}, format="json")
    body = assert_error(response, 400, "validation_failed")
    assert body["errors"] == {
        "family_name": [
            {"code": "max_length", "message": "Ensure this field has no more than 150 characters."}
        ]
    }
    assert _snapshot(nancy) == before


def test_patch_refuses_an_empty_body(nancy, api_client_for):
    response = api_client_for(nancy).patch("/api/v1/me", {}, format="json")
    body = assert_error(response, 400, "validation_failed")
    assert body["errors"] == {
        "non_field_errors": [
            {"code": "empty", "message": "Send at least one of given_name, family_name, time_zone."}
        ]
    }


def test_patch_needs_the_account_scope(nancy, api_client_for):
    before = _snapshot(nancy)
    response = api_client_for(nancy, scope="records:read").patch(
        "/api/v1/me", {"time_zone": "Europe/London"}, format="json"
    )
    assert_error(response, 403, "insufficient_scope")
    assert _snapshot(nancy) == before


# --- POST /api/v1/me/deletion-request ----------------------------------------------------------


def test_deletion_request_returns_a_receipt_and_revokes_every_token(
    nancy, settings, django_capture_on_commit_callbacks
):
    handler_calls.clear()
    settings.ACCOUNT_DELETION_REQUEST_HANDLERS = [
        "tests.patientportal.test_accounts_api.record_deletion"
    ]
    first = sign_in_with_pkce(nancy.user)
    second = sign_in_with_pkce(nancy.user)
    other = verified_patient()
    other_tokens = sign_in_with_pkce(other.user)

    with django_capture_on_commit_callbacks(execute=True):
        response = bearer(first["access_token"]).post("/api/v1/me/deletion-request")
    assert response.status_code == 202
    body = response.json()
    receipt = AccountDeletionRequest.objects.get()
    assert body == {
        "receipt_id": str(receipt.pk),
        "status": "pending",
        "requested_at": receipt.requested_at.isoformat().replace("+00:00", "Z"),
        "sessions_revoked": 2,
        "message": (
            "Your request is recorded and you are signed out everywhere. Your data will be "
            "erased by our team; keep this receipt id if you contact us."
        ),
    }
    assert receipt.patient_id == nancy.pk
    assert receipt.user_id == nancy.user_id

    user = User.objects.get(pk=nancy.user_id)
    assert user.deletion_requested_at == receipt.requested_at
    assert user.is_active is False
    assert AccessToken.objects.filter(user=user).count() == 0
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 0
    for tokens in (first, second):
        assert bearer(tokens["access_token"]).get("/api/v1/me").status_code == 401
        refresh = Client().post(
            "/o/token/",
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "mobile-app",
            },
        )
        assert refresh.status_code == 400
    # Other patients are untouched.
    assert bearer(other_tokens["access_token"]).get("/api/v1/me").status_code == 200
    # Nothing is erased yet.
    assert Patient.objects.filter(pk=nancy.pk).exists()
    assert handler_calls == [{"patient_id": str(nancy.pk)}]


def test_after_a_deletion_request_sign_in_is_closed(nancy):
    tokens = sign_in_with_pkce(nancy.user)
    bearer(tokens["access_token"]).post("/api/v1/me/deletion-request")
    response = Client().post(
        "/accounts/login/", {"username": "nancy@example.test", "password": TEST_PASSWORD}
    )
    assert response.status_code == 200
    assert "_auth_user_id" not in response.wsgi_request.session


def test_deletion_request_is_idempotent(nancy, api_client_for):
    from patientportal.accounts.services import account_deletion_request

    first = account_deletion_request(user=nancy.user)
    second = account_deletion_request(user=User.objects.get(pk=nancy.user_id))
    assert first.pk == second.pk
    assert AccountDeletionRequest.objects.count() == 1


def test_deletion_request_needs_the_account_scope(nancy, api_client_for):
    response = api_client_for(nancy, scope="records:read").post("/api/v1/me/deletion-request")
    assert_error(response, 403, "insufficient_scope")
    assert AccountDeletionRequest.objects.count() == 0
    user = User.objects.get(pk=nancy.user_id)
    assert user.is_active is True
    assert user.deletion_requested_at is None
    assert AccessToken.objects.filter(user=user).count() == 1


# --- /api/v1/me/sessions ---------------------------------------------------------------------


def test_sessions_list_the_live_sign_ins_without_token_values(nancy):
    first = sign_in_with_pkce(nancy.user, scope="account")
    second = sign_in_with_pkce(nancy.user, scope="account records:read")
    sign_in_with_pkce(verified_patient().user)  # someone else's

    response = bearer(second["access_token"]).get("/api/v1/me/sessions")
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    results = body["results"]
    assert len(results) == 2
    for item in results:
        assert set(item) == {
            "id",
            "application",
            "scopes",
            "signed_in_at",
            "last_refreshed_at",
            "current",
        }
        assert item["application"] == "Patient Portal mobile"
    raw = response.content.decode()
    for secret in (first["access_token"], first["refresh_token"], second["refresh_token"]):
        assert secret not in raw
    current = [item for item in results if item["current"]]
    assert len(current) == 1
    assert current[0]["scopes"] == ["account", "records:read"]
    families = {
        str(f)
        for f in RefreshToken.objects.filter(user=nancy.user).values_list("token_family", flat=True)
    }
    assert {item["id"] for item in results} == families


def test_revoking_a_session_signs_that_app_out_only(nancy):
    first = sign_in_with_pkce(nancy.user)
    second = sign_in_with_pkce(nancy.user)
    sessions = bearer(second["access_token"]).get("/api/v1/me/sessions").json()["results"]
    target = next(item for item in sessions if not item["current"])

    response = bearer(second["access_token"]).delete(f"/api/v1/me/sessions/{target['id']}")
    assert response.status_code == 204
    assert bearer(first["access_token"]).get("/api/v1/me").status_code == 401
    assert bearer(second["access_token"]).get("/api/v1/me").status_code == 200
    assert RefreshToken.objects.filter(token_family=target["id"], revoked__isnull=True).count() == 0


def test_revoking_someone_elses_session_is_not_found(nancy):
    mine = sign_in_with_pkce(nancy.user)
    other = verified_patient()
    sign_in_with_pkce(other.user)
    other_family = RefreshToken.objects.get(user=other.user).token_family

    response = bearer(mine["access_token"]).delete(f"/api/v1/me/sessions/{other_family}")
    assert_error(response, 404, "session_not_found")
    assert RefreshToken.objects.filter(token_family=other_family, revoked__isnull=True).count() == 1

    missing = bearer(mine["access_token"]).delete(f"/api/v1/me/sessions/{uuid.uuid4()}")
    assert_error(missing, 404, "session_not_found")


def test_unverified_patient_signs_up_verifies_and_then_authorizes(
    mobile_app, django_capture_on_commit_callbacks
):
    """The whole journey of a new patient, through the pages, to an API call."""
    import re

    from django.core import mail

    from tests.patientportal.accounts_helpers import approve, redirect_params, token_request

    browser = Client()
    pkce = make_pkce()
    authorize = authorize_query(pkce=pkce, scope="account")
    with django_capture_on_commit_callbacks(execute=True):
        browser.post(
            "/accounts/signup/",
            {
                "email": "jo@example.test",
                "password1": "lantern-meadow-quartz-71",
                "password2": "lantern-meadow-quartz-71",
            },
        )
    browser.post(
        "/accounts/login/", {"username": "jo@example.test", "password": "lantern-meadow-quartz-71"}
    )
    assert browser.get(authorize).status_code == 403  # not verified yet
    link = re.search(r"http://127\.0\.0\.1:8000(/accounts/verify/\S+/)", str(mail.outbox[0].body))
    assert link
    assert Client().get(link.group(1)).status_code == 200  # e.g. in the phone's mail app
    _, params = redirect_params(approve(browser, authorize))
    tokens = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri="org.patientportal.app:/oauth/callback",
        client_id="mobile-app",
        code_verifier=pkce.verifier,
    ).json()
    me = bearer(tokens["access_token"]).get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["email"] == "jo@example.test"
    assert me.json()["email_verified"] is True
    assert Patient.objects.count() == 1


def test_me_reads_and_the_deletion_request_are_access_logged(nancy, api_client_for):
    from patientportal.accesslog.models import AccessEvent

    client = api_client_for(nancy, scope="account")
    assert client.get("/api/v1/me").status_code == 200
    read = AccessEvent.objects.get()
    assert (read.action, read.actor_kind, read.patient_id, read.resource_type, read.outcome) == (
        "read",
        "patient",
        nancy.pk,
        "Account",
        "success",
    )
    assert client.post("/api/v1/me/deletion-request").status_code == 202
    deletion = AccessEvent.objects.order_by("-seq").first()
    assert deletion is not None
    assert (deletion.action, deletion.patient_id, deletion.actor_user_id) == (
        "delete",
        nancy.pk,
        nancy.user_id,
    )
    assert AccessEvent.objects.count() == 2


def broken_handler(**kwargs: str) -> None:
    raise RuntimeError("boom")


def test_a_failing_deletion_handler_does_not_undo_the_request(
    nancy, api_client_for, settings, django_capture_on_commit_callbacks, caplog
):
    handler_calls.clear()
    settings.ACCOUNT_DELETION_REQUEST_HANDLERS = [
        "tests.patientportal.test_accounts_api.broken_handler",
        "tests.patientportal.test_accounts_api.record_deletion",
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(nancy).post("/api/v1/me/deletion-request")
    assert response.status_code == 202
    assert AccountDeletionRequest.objects.filter(status="pending").count() == 1
    assert handler_calls == [{"patient_id": str(nancy.pk)}]
    assert "broken_handler failed: RuntimeError" in caplog.text
