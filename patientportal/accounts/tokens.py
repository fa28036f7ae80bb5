"""Signed, expiring, single-use links for e-mail verification.

Built on Django's password-reset token machinery (HMAC over the user's state with the secret
key, timestamped, checked in constant time). The hash covers the e-mail address and
`email_verified_at`, so a link stops working once it has been used or the address changes,
and it expires after `PASSWORD_RESET_TIMEOUT` seconds.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.tokens import PasswordResetTokenGenerator


class EmailVerificationTokenGenerator(PasswordResetTokenGenerator):
    key_salt = "patientportal.accounts.tokens.EmailVerificationTokenGenerator"

    def _make_hash_value(self, user: Any, timestamp: int) -> str:
        verified = user.email_verified_at
        verified_marker = "" if verified is None else verified.replace(microsecond=0).isoformat()
        return f"{user.pk}{user.email}{verified_marker}{timestamp}"


email_verification_token = EmailVerificationTokenGenerator()
