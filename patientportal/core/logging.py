"""Logging filters: the request id on every record, and a last-line scrub of secrets and PHI.

The first line of defence is never logging a token or PHI; the scrub catches what slips through.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any

import pythonjsonlogger.json

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

REDACTED = "[REDACTED]"

# What a secret looks like when it slips into a log line.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # JWT / JWE compact serialisations (three or five base64url segments).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){2,4}"), REDACTED),
    # Bearer credentials.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # key=value / "key": "value" for secret-bearing names.
    (
        re.compile(
            r"(?i)([\"']?\b(?:access_token|refresh_token|id_token|client_secret|code_verifier|"
            r"code|password|secret|state|nonce|assertion|client_assertion|authorization)"
            r"[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,}]+)"
        ),
        r"\1" + REDACTED,
    ),
    # E-mail addresses (PHI when they identify a patient).
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
]

# Long opaque strings (base64 / hex blobs of 40+ chars): tokens, keys, ciphertext. File paths in
# tracebacks look alike, so a run of short lower-case path segments is kept.
_BLOB = re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}")
_PATH_SEGMENT = re.compile(r"[a-z0-9_-]{1,40}")  # random base64 is never all lower case


def _redact_blob(match: re.Match[str]) -> str:
    blob = match.group(0)
    segments = blob.strip("/").split("/")
    if "+" not in blob and len(segments) >= 3 and all(_PATH_SEGMENT.fullmatch(s) for s in segments):
        return blob
    return REDACTED


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _BLOB.sub(_redact_blob, text)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class RedactingFilter(logging.Filter):
    """Renders the message once, scrubs it, and drops the arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the log line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class TextFormatter(logging.Formatter):
    """Plain text lines with tracebacks scrubbed too."""

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """JSON lines (production) with tracebacks scrubbed too."""

    def formatException(self, ei: Any) -> str:
        return redact(str(super().formatException(ei)))
