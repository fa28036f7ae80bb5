"""E-mail through Django's e-mail backend (SMTP in production).

The Message-ID is derived from the outbox row's idempotency key, so if a crash between the SMTP
server's acceptance and our status update causes a resend, mail systems can recognise the copy.
"""

from __future__ import annotations

import hashlib
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from engagement.channels.base import (
    OutgoingMessage,
    RetryableSendError,
    SendResult,
    TerminalSendError,
)
from patientportal.accounts.models import User


class EmailChannel:
    def available_for(self, *, patient_ids: list[str]) -> set[str]:
        rows = User.objects.filter(patient__pk__in=patient_ids, is_active=True).exclude(email="")
        return {str(pk) for pk in rows.values_list("patient__pk", flat=True)}

    def send(self, message: OutgoingMessage) -> SendResult:
        address = (
            User.objects.filter(patient__pk=message.patient_id, is_active=True)
            .values_list("email", flat=True)
            .first()
        )
        if not address:
            raise TerminalSendError("no_email_address")
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        message_id = f"<reminder.{digest}@patientportal.invalid>"
        email = EmailMessage(
            subject=message.title,
            body=f"{message.body}\n\n{settings.PUBLIC_BASE_URL}\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
            headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
            connection=get_connection(fail_silently=False, timeout=10),
        )
        try:
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(400 <= code < 500 for code in codes):
                raise RetryableSendError("smtp_recipient_deferred") from exc
            raise TerminalSendError("smtp_recipient_refused") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetryableSendError(f"smtp_{exc.smtp_code}") from exc
            raise TerminalSendError(f"smtp_{exc.smtp_code}") from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise RetryableSendError("smtp_unavailable") from exc
        return SendResult(delivered=False, provider_message_id=message_id)
