"""Settings shared by every environment.

Everything is read from the environment (django-environ). Nothing secret has a default here:
`dev` and `test` supply throw-away values, `production` refuses to start without real ones.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ

# Lets runtime code use the generic forms the type checker wants (ModelAdmin[Model], ...).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# Where embedded defaults keep their files (SQLite database, broker, cache, beat schedule).
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The public origin of this server, used to build absolute URLs (SMART redirect URI, links in
# e-mails). The sandbox has its own origin.
PUBLIC_BASE_URL: str = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    # Patient side (patientportal/)
    "patientportal.core",
    "patientportal.accounts",
    "patientportal.consent",
    "patientportal.accesslog",
    "patientportal.careteams",
    # EHR side
    "fhirlink",
    # Engagement
    "engagement",
    # Security-review pack (manage.py security_review_pack; per-health-system review state)
    "patientportal.reviewpack",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "patientportal.core.middleware.RequestIdMiddleware",
    # Static files (WhiteNoise, above) keep their caching; everything rendered below is no-store.
    "patientportal.core.middleware.NoStoreMiddleware",
    "patientportal.core.middleware.RequestLimitsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "patientportal.core.middleware.StaffSessionTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Axes must be last: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "patientportal.urls"
WSGI_APPLICATION = "patientportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "patientportal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL switches to PostgreSQL (postgres://user@host:5432/name); the default is SQLite.
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES: dict[str, dict[str, Any]] = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}"),
}


def tune_database(db: dict[str, Any]) -> dict[str, Any]:
    """SQLite: WAL and a busy timeout so web, worker, beat and sandbox can share one file."""
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("OPTIONS", {}).update(
            {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    else:
        db.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
        db.setdefault("CONN_HEALTH_CHECKS", True)
    return db


DATABASES["default"] = tune_database(DATABASES["default"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and Celery ---------------------------------------------------------------------
# REDIS_URL switches broker and cache to Redis. CELERY_BROKER_URL overrides the broker alone.
REDIS_URL: str | None = env.str("REDIS_URL", default=None)

if REDIS_URL:
    CACHES: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="pp"),
        }
    }
else:
    # File-based: shared by every process of the embedded setup (web, worker, beat).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        },
    }

# An embedded broker that needs no server and works across processes: kombu's SQLAlchemy
# transport on an SQLite file.
CELERY_BROKER_URL: str = env.str(
    "CELERY_BROKER_URL",
    default=REDIS_URL or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}",
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis: a task whose worker died is redelivered after this many seconds (acks_late tasks).
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else {}
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # state lives in the database, not in a result backend
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat schedules live in code: each app adds its entries here.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "oauth-clear-expired-tokens": {
        "task": "patientportal.clear_expired_oauth_tokens",
        "schedule": timedelta(hours=6),
    },
}

# --- Auth ---------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:welcome"
LOGOUT_REDIRECT_URL = "accounts:login"

# Login rate limiting and lockout (django-axes).
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_FORM_FIELD = "username"
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_VERBOSE = False
# Reverse proxies in front of gunicorn (0 in dev; production's TLS front end makes it 1). The
# client address is read from X-Forwarded-For accordingly (patientportal.core.http.client_ip).
TRUSTED_PROXY_COUNT: int = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "patientportal.core.http.client_ip"

# Staff: idle timeout (minutes) and TOTP two-factor (forced on in production).
STAFF_SESSION_IDLE_TIMEOUT = env.int("STAFF_SESSION_IDLE_TIMEOUT", default=15) * 60
STAFF_OTP_REQUIRED = env.bool("STAFF_OTP_REQUIRED", default=False)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Patient Portal")
# No admin page shows a TOTP seed or backup codes, to anyone (django-otp hides the key, the QR
# code and the static tokens; its key and QR views answer 403).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True

# E-mail verification and password-reset links expire after this many seconds.
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 3600)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@patientportal.invalid")

# --- This server as the mobile app's OAuth 2.0 authorization server (django-oauth-toolkit) -----
# Scopes separate what a token may do. The mobile app asks for what its screens need.
API_SCOPES: dict[str, str] = {
    "account": "Read and manage your account",
    "consent": "Read, give and withdraw your consents",
    "connections": "Connect, sync and disconnect your health systems",
    "records:read": "Read the health records you synced",
    "records:export": "Export your health records",
    "audit:read": "See who accessed your data",
    "reminders": "Receive and manage reminders",
}
# Custom URI schemes the mobile apps register (RFC 8252 private-use schemes), besides https.
MOBILE_REDIRECT_SCHEMES: list[str] = env.list(
    "MOBILE_REDIRECT_SCHEMES", default=["org.patientportal.app"]
)
OAUTH2_PROVIDER: dict[str, Any] = {
    "SCOPES": API_SCOPES,
    "DEFAULT_SCOPES": ["account"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_REFRESH_TOKEN_SECONDS", default=30 * 86400),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    # Reusing a rotated-away refresh token revokes the whole token family.
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "PKCE_REQUIRED": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https", *MOBILE_REDIRECT_SCHEMES],
    "ALLOWED_SCHEMES": ["https"],
    "ALLOW_URI_WILDCARDS": False,
    # RFC 9700 gates: refuse implicit and password grants and PKCE "plain"; bearer tokens
    # only in the Authorization header; iss in authorization responses.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    # Store only a SHA-256 checksum of this server's access and refresh tokens.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    # RFC 8414 metadata (/.well-known/oauth-authorization-server) advertises only what works:
    # the code flow with PKCE and refresh. No client_credentials, device code or implicit.
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": [
        "none",
        "client_secret_basic",
        "client_secret_post",
    ],
}

# --- REST API ----------------------------------------------------------------------------------
API_THROTTLE_USER = env.str("API_THROTTLE_USER", default="600/min")
API_THROTTLE_ANON = env.str("API_THROTTLE_ANON", default="60/min")
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oauth2_provider.contrib.rest_framework.OAuth2Authentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["patientportal.core.api.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["patientportal.core.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "patientportal.core.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "patientportal.core.api.throttling.UserRateThrottle",
        "patientportal.core.api.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": API_THROTTLE_USER,
        "anon": API_THROTTLE_ANON,
        "sync_request": env.str("API_THROTTLE_SYNC_REQUEST", default="1/5min"),
    },
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "patientportal.core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "Patient Portal API",
    "DESCRIPTION": (
        "The mobile app's API. Sign in with OAuth 2.0 Authorization Code + PKCE (S256) against "
        "this server; every error has the same shape: a stable machine `code`, a human "
        "`message`, and optional `errors` per field."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served by this project (no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": False, "displayOperationId": True},
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "OAUTH2_FLOWS": ["authorizationCode"],
    "OAUTH2_AUTHORIZATION_URL": "/o/authorize/",
    "OAUTH2_TOKEN_URL": "/o/token/",
    "OAUTH2_REFRESH_URL": "/o/token/",
    "OAUTH2_SCOPES": API_SCOPES,
    "ENUM_NAME_OVERRIDES": {
        "PurposeEnum": "patientportal.consent.models.Purpose",
        "AccessPurposeEnum": "patientportal.accesslog.models.AccessPurpose",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "patientportal.core.api.schema.add_error_responses",
    ],
}

# Request bodies: anything larger is refused with 413 before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# --- Static files, i18n ------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security headers that hold everywhere ------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp) on every response: scripts only from this origin's files,
# never inline (the pages, the admin, the /demo/ client and Swagger UI load theirs from /static/
# or a URL of their own). Inline styles stay allowed (Swagger UI and the admin set style
# attributes); they cannot run code. Forms may post here and, after the OAuth approval, send the
# browser on to the app's redirect URI (https or the app's own scheme) or, in dev, to the
# sandbox's or this origin's callback.
CONTENT_SECURITY_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": [
            "'self'",
            "https:",
            *(f"{scheme}:" for scheme in MOBILE_REDIRECT_SCHEMES),
            PUBLIC_BASE_URL,
        ],
    }
}

# --- Logging -------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # "json" in production
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "patientportal.core.logging.RequestIdFilter"},
        "redact": {"()": "patientportal.core.logging.RedactingFilter"},
    },
    "formatters": {
        "text": {
            "()": "patientportal.core.logging.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {
            "()": "patientportal.core.logging.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # oauthlib logs request bodies (codes, tokens) at DEBUG: never let it.
        "oauthlib": {"level": "WARNING"},
        # django-oauth-toolkit logs the authorization response URL (with the code) at DEBUG.
        "oauth2_provider": {"level": "INFO"},
        "requests_oauthlib": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Vault (envelope encryption of tokens, client secrets and synced payloads) -----------------
# VAULT_KEYS: comma-separated "key_id:base64-32-byte-key" key-encryption keys; VAULT_ACTIVE_KEY_ID
# names the one new data is wrapped with. Older keys stay listed until `vault_rotate` is done.
VAULT_BACKEND = env.str("VAULT_BACKEND", default="fhirlink.vault.SettingsKeyProvider")

# --- Cerner sandbox (dev, demo and tests only; never in production) ---------------------------
SANDBOX_ENABLED = False
# Demo conveniences (seeded users, the /demo/ reference client's registration): dev only.
DEMO_ENABLED = False
SANDBOX_BASE_URL: str = env.str("SANDBOX_BASE_URL", default="http://127.0.0.1:8001").rstrip("/")
# Its second profile, a generic SMART App Launch 2.x server (make demo: $GENERIC_SANDBOX_PORT).
GENERIC_SANDBOX_BASE_URL: str = env.str(
    "GENERIC_SANDBOX_BASE_URL", default="http://127.0.0.1:8002"
).rstrip("/")

# === App sections: each app's settings live in its own section below. ==========================

# --- Accounts (patientportal.accounts) ---------------------------------------------------------
# Called (dotted paths, with patient_id=) after a patient asks for the account to be deleted
# (tokens are already revoked and sign-in closed); apps append theirs to start their erasure.
ACCOUNT_DELETION_REQUEST_HANDLERS: list[str] = []

# --- Consent (patientportal.consent) -----------------------------------------------------------
# Called (dotted paths, with patient_id=) after a consent for the purpose is revoked, or when a
# new document version requiring re-consent moves the patient to "consent needed". Apps append
# theirs: CONSENT_REVOCATION_HANDLERS["ehr_sync"].append("fhirlink.services.sync_stop_for_patient").
CONSENT_REVOCATION_HANDLERS: dict[str, list[str]] = {
    "ehr_sync": [],
    "care_team_access": [],
    "engagement": [],
    "ai_processing": [],
}
# Purposes offered to patients. `ai_processing` is off unless an operator adds it.
CONSENT_ENABLED_PURPOSES: list[str] = env.list(
    "CONSENT_ENABLED_PURPOSES", default=["ehr_sync", "care_team_access", "engagement"]
)
CONSENT_DEFAULT_LANGUAGE: str = env.str("CONSENT_DEFAULT_LANGUAGE", default="en")
CELERY_BEAT_SCHEDULE["consent-apply-reconsent"] = {
    "task": "consent.apply_reconsent",
    "schedule": timedelta(minutes=env.int("CONSENT_RECONSENT_CHECK_MINUTES", default=5)),
}

# --- Access log (patientportal.accesslog) -----------------------------------------------------
# Rows older than this are purged daily (HIPAA asks for 6 years); an anchor keeps the rest
# verifiable.
ACCESS_LOG_RETENTION_DAYS: int = env.int("ACCESS_LOG_RETENTION_DAYS", default=6 * 366)
# Key of the HMAC-SHA256 hash chain. Set it (and keep it) in production: without the key, someone
# who can write to the database cannot forge a row that verifies. Unset: derived from SECRET_KEY.
ACCESS_LOG_CHAIN_KEY: str = env.str("ACCESS_LOG_CHAIN_KEY", default="")
# How staff appear in the patient's access log: "role_and_name", "role" or "name".
ACCESS_LOG_STAFF_DISPLAY: str = env.str("ACCESS_LOG_STAFF_DISPLAY", default="role_and_name")
# At most this many resource ids are kept on one row (a list page); the rest are counted.
ACCESS_LOG_MAX_RESOURCE_IDS: int = env.int("ACCESS_LOG_MAX_RESOURCE_IDS", default=200)
# PostgreSQL: True (default) makes every log row wait for the WAL flush, so an audit record is
# never lost. False lets a request's own row commit without waiting (it is still chained at
# once; only a database crash within ~0.6 s, 3 x wal_writer_delay, can lose the newest rows,
# never corrupt the chain): cheaper per request, at that risk.
ACCESS_LOG_SYNCHRONOUS_COMMIT: bool = env.bool("ACCESS_LOG_SYNCHRONOUS_COMMIT", default=True)
CELERY_BEAT_SCHEDULE["accesslog-purge"] = {
    "task": "accesslog.purge",
    "schedule": timedelta(hours=24),
}

# --- EHR link (fhirlink) -------------------------------------------------------------------------
# Called (dotted paths, with connection_id=) when a connection needs the patient to reconnect.
FHIRLINK_NEEDS_REAUTH_HANDLERS: list[str] = []
# The SMART redirect URI registered at each EHR (default: this origin's /fhirlink/callback).
FHIRLINK_REDIRECT_URI: str = env.str(
    "FHIRLINK_REDIRECT_URI", default=f"{PUBLIC_BASE_URL}/fhirlink/callback"
)
# The app's deep links the callback may send the browser to (exact matches; the first is the
# default). Only a connection id and an outcome code are ever appended.
FHIRLINK_APP_RETURN_URIS: list[str] = env.list(
    "FHIRLINK_APP_RETURN_URIS", default=["org.patientportal.app:/connections/result"]
)
# Outbound HTTP to EHRs: explicit timeouts (seconds), never redirects (fhirlink/http.py).
FHIRLINK_HTTP_CONNECT_TIMEOUT = env.float("FHIRLINK_HTTP_CONNECT_TIMEOUT", default=5.0)
FHIRLINK_HTTP_READ_TIMEOUT = env.float("FHIRLINK_HTTP_READ_TIMEOUT", default=20.0)
# Discovery (smart-configuration, CapabilityStatement, OIDC configuration) and JWKS caches.
FHIRLINK_DISCOVERY_TTL = env.int("FHIRLINK_DISCOVERY_TTL", default=3600)
FHIRLINK_JWKS_TTL = env.int("FHIRLINK_JWKS_TTL", default=3600)
# A launch attempt (state) lives this long; an id_token older than this is refused.
FHIRLINK_LAUNCH_TTL = env.int("FHIRLINK_LAUNCH_TTL", default=600)
FHIRLINK_ID_TOKEN_MAX_AGE = env.int("FHIRLINK_ID_TOKEN_MAX_AGE", default=900)
# Refresh: this long before expiry; at most one attempt per connection per interval (Cerner
# throttles more than one a minute); the lease one worker holds while refreshing.
FHIRLINK_REFRESH_MARGIN_SECONDS = env.int("FHIRLINK_REFRESH_MARGIN_SECONDS", default=120)
FHIRLINK_REFRESH_MIN_INTERVAL_SECONDS = env.int("FHIRLINK_REFRESH_MIN_INTERVAL_SECONDS", default=60)
FHIRLINK_REFRESH_LEASE_SECONDS = env.int("FHIRLINK_REFRESH_LEASE_SECONDS", default=60)
FHIRLINK_REFRESH_WAIT_SECONDS = env.int("FHIRLINK_REFRESH_WAIT_SECONDS", default=15)
# Grants that last: every connection holding a refresh token is refreshed at least this often
# (minutes). The refresh is the check: a grant the patient revoked at the health system answers
# invalid_grant, so the connection is marked needs_reauth and the patient nudged within this
# interval plus one tick; and an inactive patient's offline grant never sits unused long enough
# for Cerner to drop it (about three months). One token request per connection per interval.
FHIRLINK_GRANT_CHECK_MINUTES = env.int("FHIRLINK_GRANT_CHECK_MINUTES", default=55)
FHIRLINK_GRANT_CHECK_TICK_MINUTES = env.int("FHIRLINK_GRANT_CHECK_TICK_MINUTES", default=5)
FHIRLINK_GRANT_CHECK_BATCH = env.int("FHIRLINK_GRANT_CHECK_BATCH", default=5000)
CELERY_BEAT_SCHEDULE["fhirlink-grants-check"] = {
    "task": "fhirlink.grants_check",
    "schedule": timedelta(minutes=FHIRLINK_GRANT_CHECK_TICK_MINUTES),
}
CELERY_BEAT_SCHEDULE["fhirlink-launch-attempts-purge"] = {
    "task": "fhirlink.launch_attempts_purge",
    "schedule": timedelta(hours=24),
}
# Account deletion: revoke every connection at its health system, destroy tokens, erase data.
ACCOUNT_DELETION_REQUEST_HANDLERS.append("fhirlink.tasks.on_account_deletion_requested")
# Sync engine (fhirlink.sync). Per health system, shared by every worker: at most this many
# requests in flight and this many per second (fhirlink.ehr.limiter; Redis in production).
FHIRLINK_SYNC_CONCURRENCY = env.int("FHIRLINK_SYNC_CONCURRENCY", default=4)
FHIRLINK_SYNC_RATE_PER_SECOND = env.int("FHIRLINK_SYNC_RATE_PER_SECOND", default=50)
# Where those two limits are kept (fhirlink.ehr.limiter): Redis in production; in the embedded
# default (no Redis), memory, so they hold per worker process.
FHIRLINK_SYNC_LIMITER_URL = env.str("FHIRLINK_SYNC_LIMITER_URL", default=REDIS_URL or "memory://")
# One sync step (one page or one extra, its store included) takes seconds; these bound a stuck one.
FHIRLINK_SYNC_STEP_SOFT_TIME_LIMIT = env.int("FHIRLINK_SYNC_STEP_SOFT_TIME_LIMIT", default=120)
FHIRLINK_SYNC_STEP_TIME_LIMIT = env.int("FHIRLINK_SYNC_STEP_TIME_LIMIT", default=150)
# Retries of one request (429/5xx/timeouts): exponential backoff with jitter, Retry-After wins.
FHIRLINK_SYNC_MAX_ATTEMPTS_PER_REQUEST = env.int(
    "FHIRLINK_SYNC_MAX_ATTEMPTS_PER_REQUEST", default=6
)
FHIRLINK_SYNC_BACKOFF_BASE = env.float("FHIRLINK_SYNC_BACKOFF_BASE", default=0.5)
FHIRLINK_SYNC_BACKOFF_MAX = env.float("FHIRLINK_SYNC_BACKOFF_MAX", default=30.0)
# A page that is not JSON/FHIR is quarantined and asked for again this many times.
FHIRLINK_SYNC_PAGE_RETRIES = env.int("FHIRLINK_SYNC_PAGE_RETRIES", default=2)
# Bounds.
FHIRLINK_SYNC_PAGE_SIZE = env.int("FHIRLINK_SYNC_PAGE_SIZE", default=200)  # capped per type
FHIRLINK_SYNC_MAX_PAGES = env.int("FHIRLINK_SYNC_MAX_PAGES", default=5000)  # per stream
FHIRLINK_SYNC_MAX_PAGE_BYTES = env.int("FHIRLINK_SYNC_MAX_PAGE_BYTES", default=20 * 1024 * 1024)
FHIRLINK_SYNC_MAX_BINARY_BYTES = env.int("FHIRLINK_SYNC_MAX_BINARY_BYTES", default=10 * 1024 * 1024)
FHIRLINK_SYNC_BINARY_CONTENT_TYPES: list[str] = env.list(
    "FHIRLINK_SYNC_BINARY_CONTENT_TYPES",
    default=[
        "application/pdf",
        "text/plain",
        "text/html",
        "text/rtf",
        "application/xml",
        "text/xml",
        "image/jpeg",
        "image/png",
        "image/tiff",
    ],
)
FHIRLINK_SYNC_MAX_REFERENCES = env.int("FHIRLINK_SYNC_MAX_REFERENCES", default=2000)
# Observation's full pass: date windows of about this many pages, at most this many windows,
# reaching this many years back before one open-ended window.
FHIRLINK_SYNC_WINDOW_PAGES = env.int("FHIRLINK_SYNC_WINDOW_PAGES", default=8)
FHIRLINK_SYNC_MAX_WINDOWS = env.int("FHIRLINK_SYNC_MAX_WINDOWS", default=48)
FHIRLINK_SYNC_WINDOW_YEARS = env.int("FHIRLINK_SYNC_WINDOW_YEARS", default=25)
# Incremental: `_lastUpdated=ge(start of the last complete pass - overlap)`; a full reconcile
# (tombstoning what the server no longer returns) every this many days.
FHIRLINK_SYNC_WATERMARK_OVERLAP_SECONDS = env.int(
    "FHIRLINK_SYNC_WATERMARK_OVERLAP_SECONDS", default=600
)
FHIRLINK_SYNC_RECONCILE_DAYS = env.float("FHIRLINK_SYNC_RECONCILE_DAYS", default=7)
# A run's steps renew its lease; a run whose lease expired, or with a stream that has not moved
# for a lease (a lost step message), is taken over (resumed from its checkpoints), at most this
# many attempts.
FHIRLINK_SYNC_LEASE_SECONDS = env.int("FHIRLINK_SYNC_LEASE_SECONDS", default=60)
FHIRLINK_SYNC_MAX_ATTEMPTS = env.int("FHIRLINK_SYNC_MAX_ATTEMPTS", default=5)
FHIRLINK_SYNC_QUARANTINE_BYTES = env.int("FHIRLINK_SYNC_QUARANTINE_BYTES", default=256 * 1024)
# Scheduling: incremental syncs of connections not synced for this long, spread over this many
# seconds, this many connections per beat tick.
FHIRLINK_SYNC_INTERVAL_MINUTES = env.int("FHIRLINK_SYNC_INTERVAL_MINUTES", default=360)
FHIRLINK_SYNC_SPREAD_SECONDS = env.int("FHIRLINK_SYNC_SPREAD_SECONDS", default=3000)
FHIRLINK_SYNC_SCHEDULE_BATCH = env.int("FHIRLINK_SYNC_SCHEDULE_BATCH", default=500)
CELERY_BEAT_SCHEDULE["fhirlink-schedule-incremental-syncs"] = {
    "task": "fhirlink.schedule_incremental_syncs",
    "schedule": timedelta(minutes=env.int("FHIRLINK_SYNC_SCHEDULE_TICK_MINUTES", default=15)),
}
# Records API (fhirlink.records). The changes feed shows a change only after this many seconds,
# so a sync write that commits late is never skipped; exports are downloadable once within TTL.
FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS = env.int(
    "FHIRLINK_RECORDS_CHANGES_SETTLE_SECONDS", default=30
)
FHIRLINK_RECORDS_EXPORT_TTL = env.int("FHIRLINK_RECORDS_EXPORT_TTL", default=600)
FHIRLINK_RECORDS_TREND_MAX_POINTS = env.int("FHIRLINK_RECORDS_TREND_MAX_POINTS", default=2000)
FHIRLINK_RECORDS_SUMMARY_LIMIT = env.int("FHIRLINK_RECORDS_SUMMARY_LIMIT", default=20)
# Cerner codeSet code -> LOINC, for trends (empty: Cerner says the mapping varies by site).
FHIRLINK_RECORDS_CERNER_CODE_MAP: dict[str, str] = env.dict(
    "FHIRLINK_RECORDS_CERNER_CODE_MAP", default={}
)
# Health-system directory (fhirlink.directory): Oracle's published patient-access endpoints,
# re-imported on this schedule (hours; 0 turns it off); endpoint health checks every tick, each
# connected endpoint at most this often, the others a few per tick; down after N failures.
FHIRLINK_DIRECTORY_URL: str = env.str(
    "FHIRLINK_DIRECTORY_URL",
    default="https://raw.githubusercontent.com/oracle-samples/ignite-endpoints/refs/heads/main/"
    "oracle_health_fhir_endpoints/millennium_patient_r4_endpoints.json",
)
FHIRLINK_DIRECTORY_SOURCE: str = env.str("FHIRLINK_DIRECTORY_SOURCE", default="oracle-millennium")
FHIRLINK_DIRECTORY_IMPORT_HOURS = env.int("FHIRLINK_DIRECTORY_IMPORT_HOURS", default=24 * 7)
# Each process's search index checks for directory changes at most this often (seconds).
FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS = env.float(
    "FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS", default=2.0
)
FHIRLINK_ENDPOINT_CHECK_MINUTES = env.int("FHIRLINK_ENDPOINT_CHECK_MINUTES", default=60)
FHIRLINK_ENDPOINT_IDLE_CHECK_DAYS = env.int("FHIRLINK_ENDPOINT_IDLE_CHECK_DAYS", default=14)
FHIRLINK_ENDPOINT_IDLE_PER_TICK = env.int("FHIRLINK_ENDPOINT_IDLE_PER_TICK", default=10)
FHIRLINK_ENDPOINT_DOWN_AFTER = env.int("FHIRLINK_ENDPOINT_DOWN_AFTER", default=3)
if FHIRLINK_DIRECTORY_IMPORT_HOURS > 0:
    CELERY_BEAT_SCHEDULE["fhirlink-directory-import"] = {
        "task": "fhirlink.directory_import",
        "schedule": timedelta(hours=FHIRLINK_DIRECTORY_IMPORT_HOURS),
    }
CELERY_BEAT_SCHEDULE["fhirlink-endpoint-health"] = {
    "task": "fhirlink.endpoint_health_tick",
    "schedule": timedelta(minutes=env.int("FHIRLINK_ENDPOINT_TICK_MINUTES", default=10)),
}
# Revoking the ehr_sync consent stops running syncs at their next page.
CONSENT_REVOCATION_HANDLERS["ehr_sync"].append("fhirlink.sync.runs.sync_stop_for_patient")

# --- Engagement (engagement) ---------------------------------------------------------------------
ENGAGEMENT_APP_NAME: str = env.str("ENGAGEMENT_APP_NAME", default="Patient Portal")
# Outbox dispatch: rows claimed per batch, how long a claim lasts before another worker may take
# the row over, how many attempts (with exponential backoff and jitter) before a row fails, and
# how late a reminder may still go out (older ones expire instead of arriving at a silly hour).
ENGAGEMENT_DISPATCH_BATCH_SIZE = env.int("ENGAGEMENT_DISPATCH_BATCH_SIZE", default=200)
ENGAGEMENT_DISPATCH_MAX_SECONDS = env.int("ENGAGEMENT_DISPATCH_MAX_SECONDS", default=50)
ENGAGEMENT_DISPATCH_FANOUT = env.int("ENGAGEMENT_DISPATCH_FANOUT", default=2)
ENGAGEMENT_CLAIM_LEASE_SECONDS = env.int("ENGAGEMENT_CLAIM_LEASE_SECONDS", default=300)
ENGAGEMENT_MAX_ATTEMPTS = env.int("ENGAGEMENT_MAX_ATTEMPTS", default=5)
ENGAGEMENT_RETRY_BASE_SECONDS = env.int("ENGAGEMENT_RETRY_BASE_SECONDS", default=60)
ENGAGEMENT_MAX_LATENESS = timedelta(hours=env.int("ENGAGEMENT_MAX_LATENESS_HOURS", default=6))
# Cohort expansion: patients per batch (each batch is one short transaction).
ENGAGEMENT_EXPAND_BATCH_SIZE = env.int("ENGAGEMENT_EXPAND_BATCH_SIZE", default=2000)
# Push providers; a platform without credentials gets no push rows (inbox/e-mail still work).
ENGAGEMENT_FCM_SERVICE_ACCOUNT_FILE: str = env.str(
    "ENGAGEMENT_FCM_SERVICE_ACCOUNT_FILE", default=""
)
ENGAGEMENT_FCM_PROJECT_ID: str = env.str("ENGAGEMENT_FCM_PROJECT_ID", default="")
ENGAGEMENT_APNS_KEY_FILE: str = env.str("ENGAGEMENT_APNS_KEY_FILE", default="")  # .p8 (ES256)
ENGAGEMENT_APNS_KEY_ID: str = env.str("ENGAGEMENT_APNS_KEY_ID", default="")
ENGAGEMENT_APNS_TEAM_ID: str = env.str("ENGAGEMENT_APNS_TEAM_ID", default="")
ENGAGEMENT_APNS_TOPIC: str = env.str("ENGAGEMENT_APNS_TOPIC", default="")  # the app's bundle id
ENGAGEMENT_APNS_USE_SANDBOX = env.bool("ENGAGEMENT_APNS_USE_SANDBOX", default=False)
ENGAGEMENT_PUSH_TIMEOUT_SECONDS = env.float("ENGAGEMENT_PUSH_TIMEOUT_SECONDS", default=10.0)
# Revoking the engagement consent cancels pending deliveries; a connection that needs the
# patient to reconnect gets a "please reconnect" reminder through the outbox.
CONSENT_REVOCATION_HANDLERS.setdefault("engagement", []).append(
    "engagement.services.deliveries_cancel_for_patient"
)
FHIRLINK_NEEDS_REAUTH_HANDLERS.append("engagement.services.reconnect_reminder_send")
ACCOUNT_DELETION_REQUEST_HANDLERS.append("engagement.services.patient_reminders_stop")
CELERY_BEAT_SCHEDULE["engagement-tick"] = {
    "task": "engagement.tick",
    "schedule": timedelta(seconds=env.int("ENGAGEMENT_TICK_SECONDS", default=30)),
}

# Care teams (patientportal/careteams): row-level scoping of staff in the admin, break-glass.
ADMIN_PATIENT_SCOPE = "patientportal.careteams.selectors.admin_patient_scope"
CARETEAMS_BREAK_GLASS_MINUTES = env.int("CARETEAMS_BREAK_GLASS_MINUTES", default=60)
