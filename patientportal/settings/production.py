"""Production: secrets are required, HTTPS everywhere, TOTP for staff, JSON logs, no sandbox."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, LOGGING, env

DEBUG = False
# No defaults: a missing variable stops the process at start-up (ImproperlyConfigured).
SECRET_KEY = env.str("SECRET_KEY")
VAULT_KEYS = env.str("VAULT_KEYS")
VAULT_ACTIVE_KEY_ID = env.str("VAULT_ACTIVE_KEY_ID")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL").rstrip("/")

if "fhirlink.sandbox" in INSTALLED_APPS:  # pragma: no cover - guarded by a test
    raise RuntimeError("The Cerner sandbox must never be installed in production.")
SANDBOX_ENABLED = False

# HTTPS: the TLS front end (deploy/) terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken"

STAFF_OTP_REQUIRED = env.bool("STAFF_OTP_REQUIRED", default=True)

LOGGING = {**LOGGING, "handlers": {**LOGGING["handlers"]}}
LOGGING["handlers"]["console"] = {
    **LOGGING["handlers"]["console"],
    "formatter": env.str("LOG_FORMAT", default="json"),
}
