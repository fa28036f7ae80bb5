"""The last line of defence: log lines are scrubbed of tokens, secrets and e-mail addresses."""

from __future__ import annotations

import logging

import pytest

from patientportal.core.logging import JsonFormatter, RedactingFilter, TextFormatter, redact

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("raw", "must_not_contain"),
    [
        (f"token {JWT} received", JWT),
        ("Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("POST body: code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj", "SplxlOBeZQQYbYS6WxSbIA"),
        ('{"refresh_token": "8xLOxBtZp8", "x": 1}', "8xLOxBtZp8"),
        ("client_secret=s3cr3t-value", "s3cr3t-value"),
        ("user jane.doe@example.org failed", "jane.doe@example.org"),
        ("blob " + "A" * 64, "A" * 64),
        ("code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "dBjftJeZ4CVP"),
    ],
)
def test_redact_removes_secrets(raw, must_not_contain):
    assert must_not_contain not in redact(raw)


def test_redact_keeps_file_paths_in_tracebacks():
    line = 'File "/work/main/.venv/lib/python3.11/site-packages/django/core/handlers/base.py"'
    assert redact(line) == line


def test_redact_keeps_ordinary_text():
    line = "Sync run 42 for connection 7 fetched 200 Observation resources in 1.5 s"
    assert redact(line) == line


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_filter_scrubs_arguments_and_the_formatted_traceback():
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError as exc:
        record = _record("refresh failed for %s", "refresh_token=abc123secret", exc=exc)
    RedactingFilter().filter(record)
    record.request_id = "-"
    for formatter in (TextFormatter("%(message)s"), JsonFormatter("%(message)s")):
        out = formatter.format(record)
        assert "abc123secret" not in out
        assert JWT not in out
        assert "ValueError" in out
