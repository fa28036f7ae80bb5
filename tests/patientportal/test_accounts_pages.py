"""Sign-up, login with lockout, logout, e-mail verification and password reset pages."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core import mail
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from patientportal.accounts import views
from patientportal.accounts.models import Patient, User
from patientportal.accounts.tokens import email_verification_token
from tests.factories import TEST_PASSWORD, PatientFactory
from tests.fixtures.api import issue_token
from tests.patientportal.accounts_helpers import (
    authorize_query,
    make_pkce,
    run_account_emails_inline,
    sign_in_with_pkce,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def account_emails(monkeypatch):
    return run_account_emails_inline(monkeypatch)


GOOD_PASSWORD = "lantern-meadow-quartz-71"
LINK = re.compile(r"http://127\.0\.0\.1:8000(/accounts/[^\s]+/)")


def signup(client: Client, **overrides: str):
    data = {
        "email": "new.patient@example.test",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "password1": GOOD_PASSWORD,
        "password2": GOOD_PASSWORD,
        "time_zone": "Europe/Paris",
        **overrides,
    }
    return client.post("/accounts/signup/", data)


def link_in(message: mail.EmailMessage) -> str:
    match = LINK.search(str(message.body))
    assert match, message.body
    return match.group(1)


def login(client: Client, email: str, password: str, **extra: str):
    return client.post("/accounts/login/", {"username": email, "password": password, **extra})


# --- Sign-up ---------------------------------------------------------------------------------


def test_signup_creates_user_and_patient_and_sends_verification(
    django_capture_on_commit_callbacks, account_emails
):
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        response = signup(client, email="New.Patient@Example.TEST")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/signup/done/"

    user = User.objects.get()
    assert user.email == "new.patient@example.test"
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
    assert user.check_password(GOOD_PASSWORD)
    assert user.email_verified_at is None
    assert user.is_staff is False
    assert Patient.objects.get(user=user).time_zone == "Europe/Paris"

    assert account_emails == [("verify_email", user.pk)]
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new.patient@example.test"]
    assert message.subject == "Confirm your e-mail address for Patient Portal"
    assert link_in(message).startswith("/accounts/verify/")

    done = client.get("/accounts/signup/done/")
    assert done.status_code == 200
    assert "new.patient@example.test" in done.content.decode()
    # Sign-up does not sign in: the same page whether or not the address was new.
    assert "_auth_user_id" not in client.session


def test_signup_keeps_the_authorize_url_for_after_verification(mobile_app):
    authorize = authorize_query(pkce=make_pkce())
    client = Client()
    page = client.get("/accounts/signup/", {"next": authorize})
    assert page.status_code == 200
    response = client.post(
        "/accounts/signup/?" + urlencode({"next": authorize}),
        {
            "email": "x@example.test",
            "password1": GOOD_PASSWORD,
            "password2": GOOD_PASSWORD,
        },
    )
    assert response.status_code == 302
    done = client.get("/accounts/signup/done/")
    assert done.context["login_url"] == "/accounts/login/?" + urlencode({"next": authorize})


def test_signup_ignores_an_external_next():
    client = Client()
    client.post(
        "/accounts/signup/?next=https://evil.example/steal",
        {"email": "x@example.test", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
    )
    assert client.get("/accounts/signup/done/").context["login_url"] == "/accounts/login/"


def test_signup_with_unknown_time_zone_falls_back_to_utc():
    signup(Client(), time_zone="Mars/Olympus_Mons")
    assert Patient.objects.get().time_zone == "UTC"


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("short1A!", "This password is too short. It must contain at least 10 characters."),
        ("password123", "This password is too common."),
        ("8273649182736", "This password is entirely numeric."),
        ("new.patient@example", "The password is too similar to the e-mail address."),
    ],
)
def test_signup_refuses_passwords_the_validators_reject(password, error):
    response = signup(Client(), password1=password, password2=password)
    assert response.status_code == 200
    assert error in response.context["form"].errors["password1"]
    assert User.objects.count() == 0
    assert Patient.objects.count() == 0
    assert mail.outbox == []


def test_signup_refuses_mismatched_passwords():
    response = signup(Client(), password2=GOOD_PASSWORD + "x")
    assert response.status_code == 200
    assert response.context["form"].errors["password2"] == ["The two passwords do not match."]
    assert User.objects.count() == 0


def test_signup_refuses_an_invalid_email():
    response = signup(Client(), email="not-an-address")
    assert response.status_code == 200
    assert response.context["form"].errors["email"] == ["Enter a valid email address."]
    assert User.objects.count() == 0


def test_signup_with_a_registered_email_reveals_nothing_and_changes_nothing(
    django_capture_on_commit_callbacks, account_emails
):
    existing = PatientFactory.create(user__email="taken@example.test").user
    password_before = existing.password
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        response = signup(client, email="TAKEN@example.test")
    # Same answer as for a new address ...
    assert response.status_code == 302
    assert response["Location"] == "/accounts/signup/done/"
    # ... but nothing was created or changed; the owner of the address is told instead.
    assert User.objects.count() == 1
    assert Patient.objects.count() == 1
    existing.refresh_from_db()
    assert existing.password == password_before
    assert existing.first_name != "Ada"
    assert account_emails == [("account_exists", existing.pk)]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["taken@example.test"]
    assert mail.outbox[0].subject == "You already have a Patient Portal account"


def test_signup_is_rate_limited_per_ip(monkeypatch):
    monkeypatch.setattr(views, "SIGNUP_LIMIT_PER_IP", (2, 3600))
    client = Client()
    assert signup(client, email="a@example.test").status_code == 302
    assert signup(client, email="b@example.test").status_code == 302
    response = signup(client, email="c@example.test")
    assert response.status_code == 429
    assert User.objects.filter(email="c@example.test").count() == 0


def test_signup_needs_a_csrf_token():
    client = Client(enforce_csrf_checks=True)
    response = signup(client)
    assert response.status_code == 403
    assert User.objects.count() == 0


# --- Login, lockout, logout ------------------------------------------------------------------


@pytest.fixture
def nancy() -> User:
    patient: Patient = PatientFactory.create(user__email="nancy@example.test")
    return patient.user


def test_login_page_renders_with_a_csrf_token():
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    assert "csrfmiddlewaretoken" in response.content.decode()


def test_login_needs_a_csrf_token(nancy):
    client = Client(enforce_csrf_checks=True)
    response = login(client, "nancy@example.test", TEST_PASSWORD)
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_login_redirects_to_next(nancy, mobile_app):
    authorize = authorize_query(pkce=make_pkce())
    client = Client()
    response = login(client, "Nancy@Example.test", TEST_PASSWORD, next=authorize)
    assert response.status_code == 302
    assert response["Location"] == authorize
    assert client.session["_auth_user_id"] == str(nancy.pk)


def test_login_without_next_goes_to_welcome(nancy):
    client = Client()
    response = login(client, "nancy@example.test", TEST_PASSWORD)
    assert response["Location"] == "/accounts/welcome/"
    welcome = client.get("/accounts/welcome/")
    assert welcome.status_code == 200
    assert "nancy@example.test" in welcome.content.decode()


def test_login_refuses_an_external_next(nancy):
    response = login(Client(), "nancy@example.test", TEST_PASSWORD, next="https://evil.example/")
    assert response["Location"] == "/accounts/welcome/"


def test_wrong_password_and_unknown_address_get_the_same_message(nancy):
    wrong = login(Client(), "nancy@example.test", "not-the-password")
    unknown = login(Client(), "nobody@example.test", "not-the-password")
    for response in (wrong, unknown):
        assert response.status_code == 200
        assert response.context["form"].non_field_errors() == [
            "The e-mail address or password is not correct."
        ]
        assert "_auth_user_id" not in response.wsgi_request.session


def test_inactive_account_gets_the_same_message(nancy):
    nancy.is_active = False
    nancy.save(update_fields=["is_active"])
    response = login(Client(), "nancy@example.test", TEST_PASSWORD)
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "The e-mail address or password is not correct."
    ]


def test_lockout_after_repeated_failures_and_unlock_after_cool_off(nancy):
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5
    client = Client()
    for _ in range(limit - 1):
        assert login(client, "nancy@example.test", "wrong-password").status_code == 200
    locked = login(client, "NANCY@example.test", "wrong-password")  # case does not reset it
    assert locked.status_code == 429
    assert "Too many sign-in attempts" in locked.content.decode()
    assert "Try again in 15 minutes." in locked.content.decode()
    assert "nancy@example.test" not in locked.content.decode()

    # Locked: even the right password is refused, and nobody is signed in.
    refused = login(client, "nancy@example.test", TEST_PASSWORD)
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    nancy.refresh_from_db()
    assert nancy.last_login is None

    # After the cool-off the right password works again.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = login(client, "nancy@example.test", TEST_PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(nancy.pk)


def test_lockout_looks_the_same_for_an_unknown_address():
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "ghost@example.test", "wrong-password").status_code == 200
    response = login(client, "ghost@example.test", "wrong-password")
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.content.decode()


def test_logout_asks_on_get_and_signs_out_on_post(nancy):
    client = Client()
    client.force_login(nancy)
    page = client.get("/accounts/logout/")
    assert page.status_code == 200
    assert "_auth_user_id" in client.session
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert "_auth_user_id" not in client.session


def test_welcome_needs_sign_in():
    response = Client().get("/accounts/welcome/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/accounts/welcome/"


# --- E-mail verification ---------------------------------------------------------------------


def _verification_path(user: User) -> str:
    from patientportal.accounts.emails import verification_url

    return verification_url(user).removeprefix(settings.PUBLIC_BASE_URL)


def test_verification_link_verifies_once(nancy):
    path = _verification_path(nancy)
    response = Client().get(path)
    assert response.status_code == 200
    assert "your e-mail address is confirmed" in response.content.decode()
    nancy.refresh_from_db()
    verified_at = nancy.email_verified_at
    assert verified_at is not None
    assert "no-store" in response["Cache-Control"]

    again = Client().get(path)
    assert again.status_code == 400
    nancy.refresh_from_db()
    assert nancy.email_verified_at == verified_at


def test_expired_verification_link_is_refused(nancy, monkeypatch):
    path = _verification_path(nancy)
    later = datetime.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)
    monkeypatch.setattr(email_verification_token, "_now", lambda: later)
    response = Client().get(path)
    assert response.status_code == 400
    assert "This link is not valid" in response.content.decode()
    nancy.refresh_from_db()
    assert nancy.email_verified_at is None


@pytest.mark.parametrize("part", ["token", "uid"])
def test_tampered_verification_link_is_refused(nancy, part):
    other = PatientFactory.create().user
    _, _, _, uidb64, token, _ = _verification_path(nancy).split("/")
    if part == "token":
        token = token[:-1] + ("a" if token[-1] != "a" else "b")
    else:
        _, _, _, uidb64, _, _ = _verification_path(other).split("/")
    response = Client().get(f"/accounts/verify/{uidb64}/{token}/")
    assert response.status_code == 400
    assert User.objects.filter(email_verified_at__isnull=False).count() == 0


def test_verification_link_dies_when_the_address_changes(nancy):
    path = _verification_path(nancy)
    nancy.email = "nancy.new@example.test"
    nancy.save(update_fields=["email"])
    assert Client().get(path).status_code == 400
    nancy.refresh_from_db()
    assert nancy.email_verified_at is None


def test_resend_verification_is_rate_limited(nancy, django_capture_on_commit_callbacks):
    client = Client()
    client.force_login(nancy)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/accounts/verify/resend/", {"next": "/accounts/welcome/"})
        assert response.status_code == 302
        assert response["Location"] == "/accounts/welcome/"
    assert len(mail.outbox) == 3
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        client.post("/accounts/verify/resend/", {"next": "/accounts/welcome/"})
    assert callbacks == []
    assert len(mail.outbox) == 3
    # The newest link works.
    assert Client().get(link_in(mail.outbox[-1])).status_code == 200


def test_resend_does_nothing_for_a_verified_address(nancy):
    nancy.email_verified_at = timezone.now()
    nancy.save(update_fields=["email_verified_at"])
    client = Client()
    client.force_login(nancy)
    client.post("/accounts/verify/resend/", {"next": "https://evil.example/"})
    assert mail.outbox == []


def test_resend_needs_sign_in():
    response = Client().post("/accounts/verify/resend/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert mail.outbox == []


# --- Password reset --------------------------------------------------------------------------


def test_password_reset_full_round_trip_signs_apps_out(nancy, mobile_app):
    nancy.email_verified_at = timezone.now()
    nancy.save(update_fields=["email_verified_at"])
    tokens = sign_in_with_pkce(nancy)
    assert RefreshToken.objects.filter(user=nancy, revoked__isnull=True).count() == 1

    client = Client()
    response = client.post("/accounts/password/reset/", {"email": "NANCY@example.test"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/sent/"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["nancy@example.test"]
    assert mail.outbox[0].subject == "Reset your Patient Portal password"
    link = link_in(mail.outbox[0])

    # Django moves the token out of the URL into the session before showing the form.
    step = client.get(link)
    assert step.status_code == 302
    form_url = step["Location"]
    assert form_url.endswith("/set-password/")
    new_password = "orchard-violet-tundra-42"
    done = client.post(form_url, {"new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302
    assert done["Location"] == "/accounts/password/reset/complete/"

    nancy.refresh_from_db()
    assert nancy.check_password(new_password)
    assert RefreshToken.objects.filter(user=nancy, revoked__isnull=True).count() == 0
    assert AccessToken.objects.filter(user=nancy).count() == 0
    assert tokens["access_token"]  # the old token is gone from the database
    # The link is single-use.
    assert Client().get(link).status_code == 200
    assert Client().get(link).context["validlink"] is False


def test_password_reset_marks_the_address_verified(nancy):
    client = Client()
    client.post("/accounts/password/reset/", {"email": "nancy@example.test"})
    form_url = client.get(link_in(mail.outbox[0]))["Location"]
    client.post(
        form_url,
        {"new_password1": "orchard-violet-tundra-42", "new_password2": "orchard-violet-tundra-42"},
    )
    nancy.refresh_from_db()
    assert nancy.email_verified_at is not None


def test_password_reset_for_an_unknown_address_looks_the_same_and_sends_nothing(account_emails):
    response = Client().post("/accounts/password/reset/", {"email": "nobody@example.test"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/sent/"
    assert account_emails == []
    assert mail.outbox == []


def test_password_reset_is_sent_by_the_job_which_makes_the_link(nancy, account_emails):
    Client().post("/accounts/password/reset/", {"email": "nancy@example.test"})
    # Only the kind and the user id go through the broker, never a token.
    assert account_emails == [("password_reset", nancy.pk)]
    assert len(mail.outbox) == 1


def test_password_reset_refuses_weak_passwords(nancy):
    client = Client()
    client.post("/accounts/password/reset/", {"email": "nancy@example.test"})
    form_url = client.get(link_in(mail.outbox[0]))["Location"]
    password_before = User.objects.get(pk=nancy.pk).password
    response = client.post(form_url, {"new_password1": "password", "new_password2": "password"})
    assert response.status_code == 200
    assert "This password is too common." in response.context["form"].errors["new_password2"]
    assert User.objects.get(pk=nancy.pk).password == password_before


def test_password_reset_is_rate_limited_per_address_without_saying_so(nancy):
    client = Client()
    for _ in range(5):
        response = client.post("/accounts/password/reset/", {"email": "nancy@example.test"})
        assert response.status_code == 302
        assert response["Location"] == "/accounts/password/reset/sent/"
    assert len(mail.outbox) == 3


def test_tampered_password_reset_link_is_refused(nancy):
    client = Client()
    client.post("/accounts/password/reset/", {"email": "nancy@example.test"})
    link = link_in(mail.outbox[0])
    tampered = link[:-2] + ("a/" if link[-2] != "a" else "b/")
    response = client.get(tampered)
    assert response.status_code == 200
    assert response.context["validlink"] is False


def test_reset_email_links_use_the_public_base_url_not_the_host_header(nancy):
    Client().post(
        "/accounts/password/reset/", {"email": "nancy@example.test"}, HTTP_HOST="localhost"
    )
    assert "http://127.0.0.1:8000/accounts/password/reset/" in mail.outbox[0].body
    assert "localhost" not in mail.outbox[0].body


def test_pages_extend_the_accessible_base_template():
    html = Client().get("/accounts/login/").content.decode()
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html
    assert 'href="#main"' in html
    # No external CDN: no remote scripts, styles or fonts.
    assert re.search(r"<(script|link)[^>]+(src|href)=\"(https?:)?//", html) is None


def test_issue_token_fixture_tokens_are_revoked_by_password_reset(nancy, mobile_app):
    issue_token(nancy, mobile_app)
    client = Client()
    client.post("/accounts/password/reset/", {"email": "nancy@example.test"})
    form_url = client.get(link_in(mail.outbox[0]))["Location"]
    client.post(
        form_url,
        {"new_password1": "orchard-violet-tundra-42", "new_password2": "orchard-violet-tundra-42"},
    )
    assert AccessToken.objects.filter(user=nancy).count() == 0


def test_a_mail_outage_does_not_break_sign_up_and_logs_no_address(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    import smtplib

    from patientportal.accounts import emails

    def refuse(*args, **kwargs):
        raise smtplib.SMTPRecipientsRefused({"new.patient@example.test": (550, b"no")})

    monkeypatch.setattr(emails, "send_mail", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        response = signup(Client())
    assert response.status_code == 302
    assert User.objects.filter(email="new.patient@example.test").count() == 1
    assert "Could not send the verify_email e-mail" in caplog.text
    assert "new.patient@example.test" not in caplog.text


def test_the_email_job_sends_nothing_to_whom_it_no_longer_concerns(nancy):
    from patientportal.accounts.tasks import send_account_email

    nancy.email_verified_at = timezone.now()
    nancy.save(update_fields=["email_verified_at"])
    send_account_email.run("verify_email", nancy.pk)  # already verified
    send_account_email.run("verify_email", 999_999)  # no such user
    nancy.is_active = False
    nancy.save(update_fields=["is_active"])
    send_account_email.run("account_exists", nancy.pk)  # deactivated
    assert mail.outbox == []
    nancy.is_active = True
    nancy.save(update_fields=["is_active"])
    with pytest.raises(ValueError, match="Unknown account e-mail kind"):
        send_account_email.run("newsletter", nancy.pk)


def test_the_email_job_is_registered_with_the_worker_app():
    from patientportal.celery import app

    app.loader.import_default_modules()
    task = app.tasks["accounts.send_account_email"]
    assert task.ignore_result is True
    assert task.max_retries == 6
