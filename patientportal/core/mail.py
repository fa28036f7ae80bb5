"""The dev and demo e-mail backend: each message printed whole on the process's own stdout.

Django's console backend writes to `sys.stdout`, which a Celery worker (where the account
e-mails are sent) replaces with a logger, so the message became log lines and the scrubber
(`patientportal.core.logging`) redacted the verification link a newcomer needs. An e-mail is
not a log line: this backend writes to the real stdout (`sys.__stdout__`), which `make demo`
shows on the console. Never used in production (settings/production.py sends by SMTP).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.mail.backends.console import EmailBackend


class ConsoleEmailBackend(EmailBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream", sys.__stdout__ or sys.stdout)
        super().__init__(*args, **kwargs)
