"""The demo's sign-up from the console (issue #20 item 5), as the README tells a newcomer: sign
up, read the verification e-mail the worker prints on its console, open the link, sign in.

The account e-mails are sent by the Celery worker, which turns `sys.stdout` into a logger: with
Django's console backend the message became log lines, and the scrubber redacted the link."""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from pathlib import Path

import pytest
from django.core.mail import EmailMessage
from django.test import Client

from patientportal.accounts.models import User
from patientportal.core.logging import REDACTED, RedactingFilter
from patientportal.core.mail import ConsoleEmailBackend
from tests.fixtures.celery_worker import WorkerProcess

PASSWORD = "lantern-meadow-quartz-71"
LINK = re.compile(r"http://127\.0\.0\.1:8000(/accounts/verify/[^\s]+/)")


def test_the_console_backend_writes_to_the_real_stdout_not_a_redirected_one(capfd, monkeypatch):
    """What Celery does to sys.stdout (a logger's proxy) does not reach the e-mail."""
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stdout", redirected)
    link = "http://127.0.0.1:8000/accounts/verify/MQ/cz1abc-0123456789abcdef0123456789abcdef/"
    sent = ConsoleEmailBackend().send_messages(
        [EmailMessage("Confirm", f"Open {link}", "noreply@demo.test", ["a@example.test"])]
    )
    assert sent == 1
    assert redirected.getvalue() == ""
    assert link in capfd.readouterr().out
    # The same text through the log scrubber loses the token: why the e-mail is not a log line.
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, f"Open {link}", None, None)
    RedactingFilter().filter(record)
    assert link not in record.getMessage()
    assert REDACTED in record.getMessage()


def _printed_link(log: Path, deadline: float) -> str:
    """The verification link as the worker printed it (polls the worker's console output)."""
    while time.monotonic() < deadline:
        match = LINK.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no verification link on the worker's console: see {log}")


@pytest.mark.integration
def test_signup_verify_and_sign_in_by_the_link_printed_on_the_console(
    transactional_db, tmp_path, monkeypatch
):
    from patientportal.celery import app

    # The worker sends as `make demo` does (settings.dev's default backend).
    monkeypatch.setenv("TEST_EMAIL_BACKEND", "patientportal.core.mail.ConsoleEmailBackend")
    app.control.purge()
    worker = WorkerProcess(tmp_path / "worker.log")
    worker.start()
    try:
        client = Client()
        response = client.post(
            "/accounts/signup/",
            {
                "email": "newcomer@example.test",
                "given_name": "Ada",
                "family_name": "Lovelace",
                "password1": PASSWORD,
                "password2": PASSWORD,
                "time_zone": "Europe/London",
            },
        )
        assert response.status_code == 302
        assert response["Location"] == "/accounts/signup/done/"
        user = User.objects.get(email="newcomer@example.test")
        assert user.email_verified_at is None

        path = _printed_link(tmp_path / "worker.log", time.monotonic() + 60)
    finally:
        worker.stop()
    assert REDACTED not in path
    opened = client.get(path)
    assert opened.status_code == 200
    user.refresh_from_db()
    assert user.email_verified_at is not None
    signed_in = client.post(
        "/accounts/login/", {"username": "newcomer@example.test", "password": PASSWORD}
    )
    assert signed_in.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
