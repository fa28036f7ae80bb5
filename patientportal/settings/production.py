"""Production: required secrets, PostgreSQL and Redis, HTTPS everywhere, TOTP for staff, JSON logs.

Every value comes from the environment (deploy/env.example lists them all). The process refuses to
start (ImproperlyConfigured, naming the variables, never printing a value) when a required
variable is missing or malformed: there is no fallback to SQLite, the embedded broker, a default
key or the Cerner sandbox here.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.http.request import validate_host

DOCS = "See deploy/env.example and deploy/README.md."

# --- Required environment (checked before base.py parses any of it) -----------------------------
REQUIRED_ENV = (
    "SECRET_KEY",
    "VAULT_KEYS",
    "VAULT_ACTIVE_KEY_ID",
    "ALLOWED_HOSTS",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    # The access log's HMAC chain key: derived from SECRET_KEY it would break verification of
    # every past row the day SECRET_KEY is rotated, so production sets it explicitly.
    "ACCESS_LOG_CHAIN_KEY",
    # The synced-record store's index-hash keys (HMAC of the filter columns): derived from
    # nothing in the database, so a dump alone does not say who has which diagnosis.
    "FHIRLINK_INDEX_KEYS",
    "FHIRLINK_INDEX_ACTIVE_KEY_ID",
)
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "psql"}


def _require_environment() -> None:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name, "").strip()]
    if missing:
        raise ImproperlyConfigured(
            "Production settings refuse to start: missing required environment variable(s): "
            f"{', '.join(missing)}. {DOCS}"
        )
    try:
        scheme = urlsplit(os.environ["DATABASE_URL"].strip()).scheme
    except ValueError:
        scheme = ""
    if scheme not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(
            "DATABASE_URL must point at PostgreSQL (postgres://user:password@host:5432/name); "
            f"production never uses SQLite. {DOCS}"
        )


_require_environment()

from .base import *  # noqa: E402, F403
from .base import (  # noqa: E402
    DATABASES,
    INSTALLED_APPS,
    LOGGING,
    REST_FRAMEWORK,
    SPECTACULAR_SETTINGS,
    STATIC_ROOT,
    env,
)

DEBUG = False

# --- Secrets --------------------------------------------------------------------------------------
# SECRET_KEY signs sessions, CSRF tokens, password-reset and e-mail verification links.
# SECRET_KEY_FALLBACKS: the previous keys while rotating (sessions signed with them stay valid).
SECRET_KEY: str = env.str("SECRET_KEY").strip()
SECRET_KEY_FALLBACKS: list[str] = env.list("SECRET_KEY_FALLBACKS", default=[])
MIN_SECRET_KEY_LENGTH = 50


def _check_secret_key(name: str, value: str) -> None:
    if len(value) < MIN_SECRET_KEY_LENGTH or len(set(value)) < 5:
        raise ImproperlyConfigured(
            f"{name} is too weak: use at least {MIN_SECRET_KEY_LENGTH} random characters. {DOCS}"
        )
    if value.startswith(("django-insecure", "dev-only")) or "CHANGE_ME" in value:
        raise ImproperlyConfigured(f"{name} is a development value or a placeholder. {DOCS}")


_check_secret_key("SECRET_KEY", SECRET_KEY)
for _fallback in SECRET_KEY_FALLBACKS:
    _check_secret_key("SECRET_KEY_FALLBACKS", _fallback)

# Vault key-encryption keys: "key_id:base64(32 random bytes)", comma-separated; the active one
# wraps new data keys, the others stay listed until `manage.py vault_rotate` has re-wrapped.
VAULT_KEYS: str = env.str("VAULT_KEYS").strip()
VAULT_ACTIVE_KEY_ID: str = env.str("VAULT_ACTIVE_KEY_ID").strip()
VAULT_KEY_BYTES = 32
_VAULT_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def vault_key_ids(
    raw: str, active: str, name: str = "VAULT_KEYS", active_name: str = "VAULT_ACTIVE_KEY_ID"
) -> list[str]:
    """Validates VAULT_KEYS / VAULT_ACTIVE_KEY_ID (or another key list of the same form, named
    `name` / `active_name`); returns the key ids. Never echoes key bytes."""
    ids: list[str] = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not _VAULT_KEY_ID.match(key_id):
            raise ImproperlyConfigured(
                f"{name} entry {position} is not key_id:base64key (key ids are 1-64 of "
                f"A-Z a-z 0-9 . _ -). {DOCS}"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(
                f"{name} key {key_id!r} is not valid base64. {DOCS}"
            ) from None
        if len(key) != VAULT_KEY_BYTES:
            raise ImproperlyConfigured(
                f"{name} key {key_id!r} decodes to {len(key)} bytes; each key must be "
                f"{VAULT_KEY_BYTES} random bytes (AES-256). {DOCS}"
            )
        if key_id in ids:
            raise ImproperlyConfigured(f"{name} lists key id {key_id!r} twice. {DOCS}")
        ids.append(key_id)
    if not ids:
        raise ImproperlyConfigured(f"{name} holds no key. {DOCS}")
    if active not in ids:
        raise ImproperlyConfigured(
            f"{active_name} {active!r} is not one of the key ids in {name} "
            f"({', '.join(ids)}). {DOCS}"
        )
    return ids


VAULT_KEY_IDS = vault_key_ids(VAULT_KEYS, VAULT_ACTIVE_KEY_ID)

# The synced-record store's index-hash keys, in the same form; the active one hashes new rows,
# the others stay listed until `manage.py vault_rotate` has re-hashed every row.
FHIRLINK_INDEX_KEYS: str = env.str("FHIRLINK_INDEX_KEYS").strip()
FHIRLINK_INDEX_ACTIVE_KEY_ID: str = env.str("FHIRLINK_INDEX_ACTIVE_KEY_ID").strip()
FHIRLINK_INDEX_KEY_IDS = vault_key_ids(
    FHIRLINK_INDEX_KEYS,
    FHIRLINK_INDEX_ACTIVE_KEY_ID,
    name="FHIRLINK_INDEX_KEYS",
    active_name="FHIRLINK_INDEX_ACTIVE_KEY_ID",
)

# The access log's hash-chain key (required, never weak).
ACCESS_LOG_CHAIN_KEY = env.str("ACCESS_LOG_CHAIN_KEY").strip()
if len(ACCESS_LOG_CHAIN_KEY) < 32:
    raise ImproperlyConfigured(
        f"ACCESS_LOG_CHAIN_KEY is too weak: use at least 32 random characters. {DOCS}"
    )

# --- Hosts and origin -----------------------------------------------------------------------------
ALLOWED_HOSTS = [host.strip() for host in env.list("ALLOWED_HOSTS") if host.strip()]
if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must list this server's host names; '*' is refused in production "
        f"(it lets a forged Host header into password-reset links). {DOCS}"
    )
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL").strip().rstrip("/")
_public = urlsplit(PUBLIC_BASE_URL)
if (
    _public.scheme != "https"
    or not _public.hostname
    or _public.username
    or _public.path
    or _public.query
    or _public.fragment
):
    raise ImproperlyConfigured(
        "PUBLIC_BASE_URL must be this server's https origin, e.g. https://portal.example.org "
        f"(no path). {DOCS}"
    )
if not validate_host(_public.hostname, ALLOWED_HOSTS):
    raise ImproperlyConfigured(
        f"PUBLIC_BASE_URL's host {_public.hostname!r} is not in ALLOWED_HOSTS. {DOCS}"
    )
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

# --- Database: PostgreSQL only (no SQLite fallback) ----------------------------------------------
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        "DATABASE_URL must point at PostgreSQL (postgres://user:password@host:5432/name); "
        f"production never uses SQLite. {DOCS}"
    )

# --- Broker and cache: Redis (no embedded broker) ----------------------------------------------
REDIS_URL = env.str("REDIS_URL").strip()
if urlsplit(REDIS_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// or rediss:// URL. {DOCS}")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL).strip()
if urlsplit(CELERY_BROKER_URL).scheme not in {"redis", "rediss", "amqp", "amqps", "pyamqp"}:
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must be a Redis (redis://, rediss://) or AMQP broker; the embedded "
        f"SQLite/filesystem broker is for development only. {DOCS}"
    )
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else {}
)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="pp"),
    }
}

# --- No sandbox, no demo ------------------------------------------------------------------------
if "fhirlink.sandbox" in INSTALLED_APPS:
    raise ImproperlyConfigured("The Cerner sandbox must never be installed in production.")
SANDBOX_ENABLED = False
DEMO_ENABLED = False

# --- HTTPS: the TLS front end (deploy/nginx) terminates TLS and sets X-Forwarded-Proto ----------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
# The container health check calls these over plain HTTP on loopback.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = 31536000  # one year: the minimum for the preload list
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# __Host- cookies: Secure, Path=/, no Domain, so a sibling subdomain cannot set or read them.
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken"

# How many reverse proxies (the TLS front end, a load balancer) sit in front of gunicorn. The
# client address is the one that many hops from the right of X-Forwarded-For; the front end
# must overwrite the header (deploy/nginx does), never pass a client's value through.
# Lockouts, rate limits and the access log read it through patientportal.core.http.client_ip.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)
# DRF's per-client throttles read X-Forwarded-For the same way.
REST_FRAMEWORK = {**REST_FRAMEWORK, "NUM_PROXIES": TRUSTED_PROXY_COUNT}


def schema_mock_request(
    method: str, path: str, view: Any, original_request: Any, **kwargs: Any
) -> Any:
    """drf-spectacular's mock request, addressed to PUBLIC_BASE_URL's host over https.

    The stock one says Host: testserver, which ALLOWED_HOSTS refuses here, so offline schema
    generation and its `check --deploy` pass would fail on any view that authenticates.
    """
    from drf_spectacular.plumbing import build_mock_request

    request = build_mock_request(method, path, view, original_request, **kwargs)
    if original_request is None:
        request.META["HTTP_HOST"] = _public.netloc
        request.META["HTTP_X_FORWARDED_PROTO"] = "https"
    return request


SPECTACULAR_SETTINGS = {**SPECTACULAR_SETTINGS, "GET_MOCK_REQUEST": schema_mock_request}

# --- Staff: TOTP two-factor, always -------------------------------------------------------------
STAFF_OTP_REQUIRED = True

# --- Static files: collected into the image at build time ---------------------------------------
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(STATIC_ROOT)))

# --- E-mail (verification, password reset): SMTP from the environment ---------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured(f"Set EMAIL_USE_TLS or EMAIL_USE_SSL, not both. {DOCS}")
# A hung SMTP server must not hold a gunicorn thread or a Celery worker forever.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@patientportal.invalid")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)

# --- Logging: JSON lines on stdout/stderr, scrubbed -----------------------------------------------
LOG_FORMAT = "json"
LOGGING = {**LOGGING, "handlers": {**LOGGING["handlers"]}}
LOGGING["handlers"]["console"] = {**LOGGING["handlers"]["console"], "formatter": "json"}
