"""Test suite settings. DATABASE_URL / REDIS_URL (set by .ci/run) switch to PostgreSQL and Redis."""

from __future__ import annotations

from .dev import *  # noqa: F403
from .dev import DATABASES, REST_FRAMEWORK, VAR_DIR, env

DEBUG = False
# The SQLite test database is a file, not memory, so a real Celery worker process and the
# sandbox live server can share it with the test process.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

# Tests never share the demo's broker file.
if not env.str("CELERY_BROKER_URL", default=None) and not env.str("REDIS_URL", default=None):
    CELERY_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'test-celery-broker.sqlite3'}"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# TEST_EMAIL_BACKEND: a child process (the sign-up test's worker) sends like the demo does.
EMAIL_BACKEND = env.str(
    "TEST_EMAIL_BACKEND", default="django.core.mail.backends.locmem.EmailBackend"
)
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "user": env.str("API_THROTTLE_USER", default="100000/min"),
        "anon": env.str("API_THROTTLE_ANON", default="100000/min"),
    },
}
if not env.str("REDIS_URL", default=None):
    # A file cache, not locmem, so a worker process and the test share it.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "test-cache"),
        }
    }
LOG_LEVEL = "WARNING"
# The directory search index sees every change at once (tests change it between requests).
FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS = 0.0
