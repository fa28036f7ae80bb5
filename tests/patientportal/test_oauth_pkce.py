"""The mobile app's sign-in through django-oauth-toolkit: Authorization Code + PKCE (S256)."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import AccessToken, Application, Grant, RefreshToken
from rest_framework.test import APIClient

from patientportal.accounts.models import User
from tests.factories import PatientFactory, StaffFactory
from tests.patientportal.accounts_helpers import (
    CLIENT_ID,
    MOBILE_REDIRECT_URI,
    UNIVERSAL_LINK_REDIRECT_URI,
    approve,
    authorize_query,
    make_pkce,
    redirect_params,
    sign_in_with_pkce,
    token_request,
    verified_patient,
)

pytestmark = pytest.mark.django_db


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def user(mobile_app: Application) -> User:
    return verified_patient(user__email="nancy@example.test").user


@pytest.fixture
def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_full_pkce_flow_authorize_token_api_refresh_and_reuse_revokes_family(user, browser):
    pkce = make_pkce()
    url = authorize_query(pkce=pkce, scope="account records:read", state="s-1")

    page = browser.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Allow <span>Patient Portal mobile</span> to use your account?" in html
    assert "Your account" in html
    assert "Your health records" in html
    assert "nancy@example.test" in html
    assert "no-store" in page["Cache-Control"]
    assert page["X-Frame-Options"] == "DENY"  # the approval page cannot be framed (clickjacking)
    assert Grant.objects.count() == 0

    data = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    response = browser.post(url, {**data, "allow": "Allow"})
    base, params = redirect_params(response)
    assert base == MOBILE_REDIRECT_URI
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "s-1"
    assert Grant.objects.filter(user=user).count() == 1

    tokens = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=MOBILE_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    )
    assert tokens.status_code == 200, tokens.content
    assert tokens["Cache-Control"] == "no-store"
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "account records:read"
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "scope"}
    assert Grant.objects.count() == 0  # the code is single-use
    # Only checksums are stored.
    stored = AccessToken.objects.get(user=user)
    assert stored.token == ""
    assert body["access_token"] not in stored.token_checksum

    me = bearer(body["access_token"]).get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["email"] == "nancy@example.test"

    refreshed = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert refreshed.status_code == 200, refreshed.content
    new = refreshed.json()
    assert new["refresh_token"] != body["refresh_token"]
    assert new["access_token"] != body["access_token"]
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 401
    assert bearer(new["access_token"]).get("/api/v1/me").status_code == 200
    family = RefreshToken.objects.get(user=user, revoked__isnull=True).token_family
    assert RefreshToken.objects.filter(token_family=family).count() == 2

    # Replaying the rotated-away refresh token is refused and revokes the whole family.
    replay = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert RefreshToken.objects.filter(token_family=family, revoked__isnull=True).count() == 0
    assert AccessToken.objects.filter(user=user).count() == 0
    assert bearer(new["access_token"]).get("/api/v1/me").status_code == 401
    again = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=new["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_https_universal_link_is_an_exact_registered_redirect(user):
    body = sign_in_with_pkce(user, redirect_uri=UNIVERSAL_LINK_REDIRECT_URI)
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 200


def test_authorization_code_cannot_be_exchanged_twice(user, browser):
    pkce = make_pkce()
    _, params = redirect_params(approve(browser, authorize_query(pkce=pkce)))
    exchange = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": MOBILE_REDIRECT_URI,
        "client_id": CLIENT_ID,
        "code_verifier": pkce.verifier,
    }
    assert token_request(Client(), **exchange).status_code == 200
    second = token_request(Client(), **exchange)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert AccessToken.objects.filter(user=user).count() == 1


def test_missing_code_challenge_is_refused(user, browser):
    response = browser.get(authorize_query(pkce=None))
    base, params = redirect_params(response)
    assert base == MOBILE_REDIRECT_URI
    assert params["error"] == "invalid_request"
    assert params["state"] == "state-123"
    assert Grant.objects.count() == 0


@pytest.mark.parametrize("method", ["plain", None])
def test_plain_code_challenge_is_refused_before_the_approval_page(user, browser, method):
    # Without a method, RFC 7636 means "plain": refused too.
    response = browser.get(authorize_query(pkce=make_pkce(), method=method))
    base, params = redirect_params(response)
    assert base == MOBILE_REDIRECT_URI
    assert params["error"] == "invalid_request"
    assert params["error_description"] == 'PKCE code_challenge_method must be "S256".'
    assert params["state"] == "state-123"
    assert Grant.objects.count() == 0


def test_plain_code_challenge_posted_directly_is_refused(user, browser):
    pkce = make_pkce()
    page = browser.get(authorize_query(pkce=pkce))
    data = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    data.update({"code_challenge": pkce.verifier, "code_challenge_method": "plain", "allow": "1"})
    response = browser.post("/o/authorize/", data)
    _, params = redirect_params(response)
    assert params["error"] == "invalid_request"
    assert "code" not in params
    assert Grant.objects.count() == 0


def test_wrong_code_verifier_is_refused(user, browser):
    pkce = make_pkce()
    _, params = redirect_params(approve(browser, authorize_query(pkce=pkce)))
    response = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=MOBILE_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=make_pkce().verifier,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert AccessToken.objects.count() == 0
    assert RefreshToken.objects.count() == 0


def test_token_exchange_with_a_different_redirect_uri_is_refused(user, browser):
    pkce = make_pkce()
    _, params = redirect_params(approve(browser, authorize_query(pkce=pkce)))
    response = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=UNIVERSAL_LINK_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    )
    assert response.status_code == 400
    assert AccessToken.objects.count() == 0


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "org.patientportal.app:/oauth/callback/extra",
        "org.patientportal.app:/oauth/callback?next=x",
        "org.evil.app:/oauth/callback",
        "https://app.patientportal.example/oauth/callback/",
        "https://app.patientportal.example.evil.test/oauth/callback",
        "http://app.patientportal.example/oauth/callback",
    ],
)
def test_unregistered_redirect_uri_is_refused_without_redirecting(user, browser, redirect_uri):
    response = browser.get(authorize_query(pkce=make_pkce(), redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "This sign-in request cannot be completed" in response.content.decode()
    assert Grant.objects.count() == 0


def test_unknown_client_is_refused(user, browser):
    response = browser.get(authorize_query(pkce=make_pkce(), client_id="nope"))
    assert response.status_code == 400
    assert not response.has_header("Location")


def test_denying_returns_access_denied(user, browser):
    url = authorize_query(pkce=make_pkce())
    page = browser.get(url)
    data = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    _, params = redirect_params(browser.post(url, data))  # no "allow"
    assert params["error"] == "access_denied"
    assert Grant.objects.count() == 0


def test_unknown_scope_is_refused(user, browser):
    response = browser.get(authorize_query(pkce=make_pkce(), scope="account admin"))
    _, params = redirect_params(response)
    assert params["error"] == "invalid_scope"


def test_signed_out_user_is_sent_to_the_login_page(mobile_app):
    url = authorize_query(pkce=make_pkce())
    response = Client().get(url)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/login/"
    assert parse_qs(location.query)["next"] == [url]


def test_unverified_email_cannot_authorize(mobile_app):
    patient = PatientFactory.create()
    browser = Client()
    browser.force_login(patient.user)
    pkce = make_pkce()
    url = authorize_query(pkce=pkce)
    page = browser.get(url)
    assert page.status_code == 403
    html = page.content.decode()
    assert "Confirm your e-mail address first" in html
    assert 'action="/accounts/verify/resend/"' in html
    # A forged approval is refused too.
    response = browser.post(
        url,
        {
            "client_id": CLIENT_ID,
            "redirect_uri": MOBILE_REDIRECT_URI,
            "response_type": "code",
            "scope": "account",
            "state": "x",
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "allow": "Allow",
        },
    )
    assert response.status_code == 403
    assert Grant.objects.count() == 0


def test_staff_account_cannot_authorize_the_patient_app(mobile_app):
    staff = StaffFactory.create()
    browser = Client()
    browser.force_login(staff)
    response = browser.get(authorize_query(pkce=make_pkce()))
    assert response.status_code == 403
    assert "This account cannot use the app" in response.content.decode()
    assert Grant.objects.count() == 0


def test_password_grant_is_refused(user):
    from tests.factories import TEST_PASSWORD

    response = token_request(
        Client(),
        grant_type="password",
        username=user.email,
        password=TEST_PASSWORD,
        client_id=CLIENT_ID,
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in {"unauthorized_client", "unsupported_grant_type"}
    assert AccessToken.objects.count() == 0


def test_password_grant_is_refused_even_for_an_app_registered_for_it(user):
    from tests.factories import TEST_PASSWORD

    Application.objects.create(
        name="legacy",
        client_id="legacy-password-app",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_PASSWORD,
        algorithm="",
    )
    response = token_request(
        Client(),
        grant_type="password",
        username=user.email,
        password=TEST_PASSWORD,
        client_id="legacy-password-app",
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "unauthorized_client"
    assert AccessToken.objects.count() == 0


def test_implicit_grant_is_refused(user, browser):
    response = browser.get(
        "/o/authorize/?response_type=token&client_id=mobile-app"
        "&redirect_uri=org.patientportal.app:/oauth/callback&scope=account"
    )
    assert AccessToken.objects.count() == 0
    assert "access_token" not in response.get("Location", "")


def test_revocation_endpoint_revokes_the_refresh_token_and_its_access_token(user):
    body = sign_in_with_pkce(user)
    response = Client().post(
        "/o/revoke_token/",
        {
            "token": body["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": CLIENT_ID,
        },
    )
    assert response.status_code == 200
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 401
    refreshed = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert refreshed.status_code == 400
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 0


def test_revoking_an_access_token_also_revokes_its_refresh_token(user):
    body = sign_in_with_pkce(user)
    response = Client().post(
        "/o/revoke_token/", {"token": body["access_token"], "client_id": CLIENT_ID}
    )
    assert response.status_code == 200
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 401
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 0


def test_access_token_in_the_query_string_is_not_accepted(user):
    body = sign_in_with_pkce(user)
    response = APIClient().get(f"/api/v1/me?access_token={body['access_token']}")
    assert response.status_code == 401


def test_server_metadata_advertises_s256_only_and_no_password_grant(mobile_app):
    response = Client().get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "password" not in metadata.get("grant_types_supported", [])
    assert "token" not in metadata.get("response_types_supported", [])


def test_no_code_or_token_reaches_the_logs_even_at_debug(user, browser, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        pkce = make_pkce()
        _, params = redirect_params(approve(browser, authorize_query(pkce=pkce)))
        body = token_request(
            Client(),
            grant_type="authorization_code",
            code=params["code"],
            redirect_uri=MOBILE_REDIRECT_URI,
            client_id=CLIENT_ID,
            code_verifier=pkce.verifier,
        ).json()
        token_request(
            Client(),
            grant_type="refresh_token",
            refresh_token=body["refresh_token"],
            client_id=CLIENT_ID,
        )
    text = caplog.text
    for secret in (params["code"], pkce.verifier, body["access_token"], body["refresh_token"]):
        assert secret not in text


def test_demo_patient_can_authorize(mobile_app):
    import io

    from patientportal.accounts import demo

    demo.seed(io.StringIO())
    demo.seed(io.StringIO())  # idempotent
    demo_user = User.objects.get(email=demo.DEMO_PATIENT_EMAIL)
    assert demo_user.email_verified is True
    body = sign_in_with_pkce(demo_user)
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 200


def test_expired_authorization_code_is_refused(user, browser):
    from datetime import timedelta

    from django.utils import timezone

    pkce = make_pkce()
    _, params = redirect_params(approve(browser, authorize_query(pkce=pkce)))
    Grant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    response = token_request(
        Client(),
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=MOBILE_REDIRECT_URI,
        client_id=CLIENT_ID,
        code_verifier=pkce.verifier,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert AccessToken.objects.count() == 0


def test_expired_access_token_is_refused_and_refresh_still_works(user):
    from datetime import timedelta

    from django.utils import timezone

    body = sign_in_with_pkce(user)
    AccessToken.objects.filter(user=user).update(expires=timezone.now() - timedelta(seconds=1))
    assert bearer(body["access_token"]).get("/api/v1/me").status_code == 401
    refreshed = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert refreshed.status_code == 200
    assert bearer(refreshed.json()["access_token"]).get("/api/v1/me").status_code == 200


def test_refresh_cannot_widen_the_scope(user):
    body = sign_in_with_pkce(user, scope="account")
    response = token_request(
        Client(),
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=CLIENT_ID,
        scope="account records:read",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 1


def test_prompt_login_asks_a_signed_in_user_to_sign_in_again(user, browser):
    url = authorize_query(pkce=make_pkce()) + "&prompt=login"
    response = browser.get(url)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/login/"
    next_url = parse_qs(location.query)["next"][0]
    assert "prompt" not in next_url
    page = browser.get(response["Location"])
    assert page.status_code == 200
    assert "Sign in" in page.content.decode()
    assert Grant.objects.count() == 0


def test_not_you_signs_out_and_returns_to_the_same_authorize_request(user, browser):
    url = authorize_query(pkce=make_pkce())
    page = browser.get(url)
    not_you = f'href="/accounts/logout/?next={quote(url, safe="/")}"'
    assert not_you in page.content.decode()
    confirm = browser.get("/accounts/logout/", {"next": url})
    assert f'value="{url}"'.replace("&", "&amp;") in confirm.content.decode()
    response = browser.post("/accounts/logout/", {"next": url})
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/login/"
    assert parse_qs(location.query)["next"] == [url]
    assert "_auth_user_id" not in browser.session
