"""The account e-mails: verification, "you already have an account", password reset.

Bodies are rendered from templates in `accounts/email/`. Links are absolute, built on
`PUBLIC_BASE_URL`. Nothing here logs an address, a link or a token.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from .models import User
from .tokens import email_verification_token

logger = logging.getLogger(__name__)


def absolute_url(path: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}{path}"


def _send(
    *, user: User, template: str, context: dict[str, Any], raise_errors: bool = False
) -> bool:
    context = {"user": user, "site_name": "Patient Portal", **context}
    subject = render_to_string(f"accounts/email/{template}_subject.txt", context)
    body = render_to_string(f"accounts/email/{template}.txt", context)
    try:
        send_mail(
            " ".join(subject.split()),
            body,
            settings.DEFAULT_FROM_EMAIL,
            [user.email],
            fail_silently=False,
        )
    except Exception as exc:
        # The type only: SMTP errors carry the recipient's address in their text.
        logger.error(
            "Could not send the %s e-mail to user %s: %s", template, user.pk, type(exc).__name__
        )
        if raise_errors:
            raise
        return False
    return True


def verification_url(user: User) -> str:
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = email_verification_token.make_token(user)
    return absolute_url(reverse("accounts:verify-email", args=[uidb64, token]))


def send_verification_email(*, user: User, raise_errors: bool = False) -> bool:
    return _send(
        user=user,
        raise_errors=raise_errors,
        template="verify_email",
        context={
            "verify_url": verification_url(user),
            "expires_hours": max(1, settings.PASSWORD_RESET_TIMEOUT // 3600),
        },
    )


def send_account_exists_email(*, user: User, raise_errors: bool = False) -> bool:
    """Sent instead of a second account, so sign-up never reveals which addresses exist."""
    return _send(
        user=user,
        raise_errors=raise_errors,
        template="account_exists",
        context={
            "login_url": absolute_url(reverse("accounts:login")),
            "reset_url": absolute_url(reverse("accounts:password-reset")),
        },
    )


def send_password_reset_email(*, user: User, raise_errors: bool = False) -> bool:
    """Django's reset link (uid + token), made here so the token never travels via the broker."""
    return _send(
        user=user,
        raise_errors=raise_errors,
        template="password_reset",
        context={
            "base_url": settings.PUBLIC_BASE_URL,
            "uid": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
