"""Background jobs of the accounts app: sending the account e-mails.

Sign-up, "send a new link" and password reset enqueue the e-mail, so a slow or failing mail
server never slows a page down, and the pages answer in the same time whether or not the address
has an account. Links and tokens are made here, in the job, never passed through the broker.
Mail-server errors are retried with backoff; a user who no longer qualifies (verified,
deactivated, deleted) gets nothing.
"""

from __future__ import annotations

import smtplib

from celery import shared_task

from . import emails
from .models import User

VERIFY_EMAIL = "verify_email"
ACCOUNT_EXISTS = "account_exists"
PASSWORD_RESET = "password_reset"


@shared_task(
    name="accounts.send_account_email",
    ignore_result=True,
    autoretry_for=(smtplib.SMTPException, OSError),
    retry_backoff=30,
    retry_backoff_max=15 * 60,
    retry_jitter=True,
    max_retries=6,
    soft_time_limit=60,
    time_limit=90,
)
def send_account_email(kind: str, user_id: int) -> None:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return
    if kind == VERIFY_EMAIL:
        if user.email_verified_at is None:
            emails.send_verification_email(user=user, raise_errors=True)
    elif kind == ACCOUNT_EXISTS:
        emails.send_account_exists_email(user=user, raise_errors=True)
    elif kind == PASSWORD_RESET:
        if user.has_usable_password():
            emails.send_password_reset_email(user=user, raise_errors=True)
    else:
        raise ValueError(f"Unknown account e-mail kind: {kind!r}")
