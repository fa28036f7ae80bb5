"""The deployment's security settings as they are, beside production's defaults.

The values are read from the running settings. Production's defaults are read by importing
`patientportal.settings.production` in a separate process with a throw-away environment (random
placeholder secrets, unreachable hosts: nothing connects), so they are the code's, not a copy.
Secrets are never shown: only whether they are set.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from base64 import b64encode
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str  # a setting, or SETTING.key for a dict entry
    group: str
    why: str
    view: str = "value"  # "value", "is_set", "scheme"


CHECKS: tuple[Check, ...] = (
    Check("DEBUG", "TLS and headers", "Debug pages leak settings and code."),
    Check("SECURE_SSL_REDIRECT", "TLS and headers", "Plain HTTP is redirected to HTTPS."),
    Check("SECURE_PROXY_SSL_HEADER", "TLS and headers", "HTTPS as seen by the TLS front end."),
    Check("SECURE_HSTS_SECONDS", "TLS and headers", "Browsers refuse plain HTTP for this long."),
    Check("SECURE_HSTS_INCLUDE_SUBDOMAINS", "TLS and headers", "HSTS covers subdomains."),
    Check("SECURE_HSTS_PRELOAD", "TLS and headers", "Eligible for the browsers' preload list."),
    Check("SECURE_CONTENT_TYPE_NOSNIFF", "TLS and headers", "No MIME sniffing."),
    Check("SECURE_REFERRER_POLICY", "TLS and headers", "No full URLs in Referer."),
    Check("X_FRAME_OPTIONS", "TLS and headers", "No framing (clickjacking)."),
    Check("PUBLIC_BASE_URL", "TLS and headers", "The public origin's scheme.", view="scheme"),
    Check("SESSION_COOKIE_SECURE", "Cookies", "The session cookie only over HTTPS."),
    Check("SESSION_COOKIE_HTTPONLY", "Cookies", "Scripts cannot read the session cookie."),
    Check("SESSION_COOKIE_SAMESITE", "Cookies", "Cross-site requests carry no session."),
    Check("SESSION_COOKIE_NAME", "Cookies", "__Host- prefix: no Domain, Path=/, Secure."),
    Check("CSRF_COOKIE_SECURE", "Cookies", "The CSRF cookie only over HTTPS."),
    Check("CSRF_COOKIE_HTTPONLY", "Cookies", "Scripts cannot read the CSRF cookie."),
    Check("CSRF_COOKIE_NAME", "Cookies", "__Host- prefix."),
    Check("STAFF_OTP_REQUIRED", "MFA for staff", "Staff sign in to the admin with TOTP."),
    Check("STAFF_SESSION_IDLE_TIMEOUT", "Sessions", "Staff sessions end after idle seconds."),
    Check("SESSION_COOKIE_AGE", "Sessions", "Longest web session (seconds)."),
    Check("OAUTH2_PROVIDER.ACCESS_TOKEN_EXPIRE_SECONDS", "Sessions", "App access token lifetime."),
    Check(
        "OAUTH2_PROVIDER.REFRESH_TOKEN_EXPIRE_SECONDS", "Sessions", "App refresh token lifetime."
    ),
    Check("OAUTH2_PROVIDER.ROTATE_REFRESH_TOKEN", "Sessions", "Refresh tokens rotate."),
    Check("OAUTH2_PROVIDER.PKCE_REQUIRED", "Sessions", "PKCE on every authorization."),
    Check("AXES_FAILURE_LIMIT", "Lockout", "Failed sign-ins before a lockout."),
    Check("AXES_COOLOFF_TIME", "Lockout", "Lockout length (seconds)."),
    Check("AXES_LOCKOUT_PARAMETERS", "Lockout", "What a lockout is keyed on."),
    Check("TRUSTED_PROXY_COUNT", "Lockout", "Proxies trusted in X-Forwarded-For."),
    Check("ACCESS_LOG_CHAIN_KEY", "Audit", "The access log's own HMAC key.", view="is_set"),
    Check("ACCESS_LOG_SYNCHRONOUS_COMMIT", "Audit", "Log rows wait for the WAL flush."),
    Check("ACCESS_LOG_RETENTION_DAYS", "Audit", "Access-log retention (days)."),
    Check("SANDBOX_ENABLED", "Environment", "The Cerner emulator is served."),
    Check("DEMO_ENABLED", "Environment", "Demo users and the demo client exist."),
    Check("EMAIL_USE_TLS", "Environment", "SMTP with STARTTLS."),
)


def _normalise(value: Any) -> Any:
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, tuple | list):
        return [_normalise(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _read(source: Any, check: Check) -> Any:
    head, _, tail = check.name.partition(".")
    value = getattr(source, head, None)
    if tail:
        value = value.get(tail) if isinstance(value, dict) else None
    if check.view == "is_set":
        return "set" if value else "not set"
    if check.view == "scheme":
        return urlsplit(str(value or "")).scheme
    return _normalise(value)


# Runs in the child: import production settings, print the checked values (secrets as set/unset).
_CHILD = """
import importlib, json, sys
from patientportal.reviewpack.services import settings_audit as audit
module = importlib.import_module("patientportal.settings.production")
print(json.dumps({c.name: audit._read(module, c) for c in audit.CHECKS}))
"""


def required_environment() -> tuple[str, ...]:
    """production.py's REQUIRED_ENV, read from its source (importing it needs them set)."""
    source = (settings.BASE_DIR / "patientportal" / "settings" / "production.py").read_text()
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "REQUIRED_ENV" for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            return tuple(
                e.value
                for e in node.value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return ()


def _placeholder(name: str) -> str:
    """A throw-away value of the right shape for a required variable this module does not know."""
    if name.endswith("_ACTIVE_KEY_ID"):
        return "placeholder"
    if name.endswith("_KEYS"):
        return f"placeholder:{b64encode(secrets.token_bytes(32)).decode()}"
    return secrets.token_urlsafe(48)


def production_defaults(*, timeout: float = 60.0) -> dict[str, Any]:
    """{setting: production's value} or {"_error": reason}."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "patientportal.settings.production",
            "VAR_DIR": os.path.join(scratch, "var"),
            "STATIC_ROOT": os.path.join(scratch, "static"),
            # Throw-away placeholders: never used for anything but importing the settings.
            "SECRET_KEY": secrets.token_urlsafe(60),
            "VAULT_KEYS": f"placeholder:{b64encode(secrets.token_bytes(32)).decode()}",
            "VAULT_ACTIVE_KEY_ID": "placeholder",
            "ALLOWED_HOSTS": "portal.example.invalid",
            "PUBLIC_BASE_URL": "https://portal.example.invalid",
            "DATABASE_URL": "postgres://placeholder@db.example.invalid:5432/placeholder",
            "REDIS_URL": "redis://redis.example.invalid:6379/0",
            "ACCESS_LOG_CHAIN_KEY": secrets.token_urlsafe(48),
        }
        for name in required_environment():
            env.setdefault(name, _placeholder(name))
        try:
            done = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
                [sys.executable, "-c", _CHILD],
                env=env,
                cwd=str(settings.BASE_DIR),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"_error": f"importing the production settings took over {timeout:.0f} s"}
    if done.returncode != 0:
        # The last line of the traceback names the exception, never a value of ours.
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        logger.warning("Production settings could not be read for the review pack")
        return {"_error": f"importing the production settings failed: {last}"}
    values: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return values


def security_settings(*, production: dict[str, Any] | None = None) -> dict[str, Any]:
    if production is None:
        production = production_defaults()
    error = production.get("_error")
    rows = []
    for check in CHECKS:
        current = _read(settings, check)
        expected = None if error else production.get(check.name)
        rows.append(
            {
                "setting": check.name,
                "group": check.group,
                "value": current,
                "production_default": expected,
                "deviation": (not error) and current != expected,
                "why": check.why,
            }
        )
    return {
        "settings_module": os.environ.get("DJANGO_SETTINGS_MODULE", ""),
        "production_defaults": "read" if not error else f"unavailable: {error}",
        "rows": rows,
        "deviations": [row["setting"] for row in rows if row["deviation"]],
    }
