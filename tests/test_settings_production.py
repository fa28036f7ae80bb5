"""Production settings: they refuse to start without their environment, pass `check --deploy`
with it, and have no sandbox, no demo, no fallback to SQLite or the embedded broker.

Each case runs a fresh process with DJANGO_SETTINGS_MODULE=patientportal.settings.production and
an environment built here from scratch (nothing leaks in from the developer's shell or CI).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Fake but well-formed secrets. They must never appear in any output.
SECRET_KEY = "pRoD-fake-secret-key-" + "k3y" * 15 + "-0123456789"
VAULT_KEY_1 = base64.b64encode(bytes(range(32))).decode()
VAULT_KEY_2 = base64.b64encode(bytes(range(100, 132))).decode()
DB_PASSWORD = "db-pw-9f8e7d6c5b4a"
REDIS_PASSWORD = "redis-pw-1a2b3c4d5e6f"
CHAIN_KEY = "chain-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
INDEX_KEY = base64.b64encode(bytes(range(150, 182))).decode()
SECRETS = [
    SECRET_KEY,
    VAULT_KEY_1,
    VAULT_KEY_2,
    DB_PASSWORD,
    REDIS_PASSWORD,
    CHAIN_KEY,
    INDEX_KEY,
]

REQUIRED = [
    "SECRET_KEY",
    "VAULT_KEYS",
    "VAULT_ACTIVE_KEY_ID",
    "ALLOWED_HOSTS",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "ACCESS_LOG_CHAIN_KEY",
    "FHIRLINK_INDEX_KEYS",
    "FHIRLINK_INDEX_ACTIVE_KEY_ID",
]

CHECK_DEPLOY = ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """A complete production environment (nothing secret is real); None removes a variable."""
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "patientportal.settings.production",
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "SECRET_KEY": SECRET_KEY,
        "VAULT_KEYS": f"k2025:{VAULT_KEY_2},k2026:{VAULT_KEY_1}",
        "VAULT_ACTIVE_KEY_ID": "k2026",
        "ALLOWED_HOSTS": "portal.example.org",
        "PUBLIC_BASE_URL": "https://portal.example.org",
        # Unreachable on purpose: nothing here may need the database or the broker.
        "DATABASE_URL": f"postgres://patientportal:{DB_PASSWORD}@db.invalid:5432/patientportal",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.invalid:6379/0",
        "ACCESS_LOG_CHAIN_KEY": CHAIN_KEY,
        "FHIRLINK_INDEX_KEYS": f"i2026:{INDEX_KEY}",
        "FHIRLINK_INDEX_ACTIVE_KEY_ID": "i2026",
        "EMAIL_HOST": "smtp.example.org",
        "DEFAULT_FROM_EMAIL": "Patient Portal <no-reply@portal.example.org>",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(
    args: list[str], env: dict[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in output


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "django.core.exceptions.ImproperlyConfigured" in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in message, message
    assert_no_secret(result)


# --- check --deploy ---------------------------------------------------------------------------


def test_check_deploy_reports_no_issues_with_the_required_environment(tmp_path):
    result = run(CHECK_DEPLOY, production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


# --- missing and malformed environment -------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_each_required_variable_missing_stops_the_process_naming_it(tmp_path, name):
    result = run(CHECK_DEPLOY, production_env(tmp_path, **{name: None}))
    assert_refused(result, "missing required environment variable(s): " + name + ".")


@pytest.mark.parametrize("name", ["SECRET_KEY", "VAULT_KEYS", "DATABASE_URL", "REDIS_URL"])
def test_a_blank_required_variable_counts_as_missing(tmp_path, name):
    result = run(CHECK_DEPLOY, production_env(tmp_path, **{name: "  "}))
    assert_refused(result, "missing required environment variable(s): " + name + ".")


def test_every_missing_variable_is_named_at_once(tmp_path):
    result = run(CHECK_DEPLOY, production_env(tmp_path, SECRET_KEY=None, REDIS_URL=None))
    assert_refused(result, "missing required environment variable(s): SECRET_KEY, REDIS_URL.")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"VAULT_ACTIVE_KEY_ID": "k2027"}, "VAULT_ACTIVE_KEY_ID 'k2027' is not one of the key ids"),
        (
            {"FHIRLINK_INDEX_ACTIVE_KEY_ID": "i2027"},
            "FHIRLINK_INDEX_ACTIVE_KEY_ID 'i2027' is not one of the key ids in FHIRLINK_INDEX_KEYS",
        ),
        (
            {"FHIRLINK_INDEX_KEYS": "i2026:" + base64.b64encode(b"sixteen-byte-key").decode()},
            "FHIRLINK_INDEX_KEYS key 'i2026' decodes to 16 bytes",
        ),
        (
            {"VAULT_KEYS": "k2026:" + base64.b64encode(b"sixteen-byte-key").decode()},
            "VAULT_KEYS key 'k2026' decodes to 16 bytes; each key must be 32 random bytes",
        ),
        ({"VAULT_KEYS": "k2026:not*base64!"}, "VAULT_KEYS key 'k2026' is not valid base64"),
        ({"VAULT_KEYS": VAULT_KEY_1}, "VAULT_KEYS entry 1 is not key_id:base64key"),
        (
            {"VAULT_KEYS": f"k2026:{VAULT_KEY_1},k2026:{VAULT_KEY_2}"},
            "VAULT_KEYS lists key id 'k2026' twice",
        ),
        ({"VAULT_KEYS": ",,"}, "VAULT_KEYS holds no key"),
        ({"SECRET_KEY": "short-" + "x" * 20}, "SECRET_KEY is too weak"),
        (
            {"SECRET_KEY": "dev-only-insecure-secret-key-do-not-use-in-production-at-all"},
            "SECRET_KEY is a development value or a placeholder",
        ),
        ({"SECRET_KEY_FALLBACKS": "old-and-short"}, "SECRET_KEY_FALLBACKS is too weak"),
        ({"DATABASE_URL": "sqlite:///var/db.sqlite3"}, "DATABASE_URL must point at PostgreSQL"),
        (
            {"DATABASE_URL": f"postgress://patientportal:{DB_PASSWORD}@db.invalid/pp"},
            "DATABASE_URL must point at PostgreSQL",
        ),
        ({"REDIS_URL": "memory://"}, "REDIS_URL must be a redis:// or rediss:// URL"),
        (
            {"CELERY_BROKER_URL": "sqla+sqlite:///var/celery-broker.sqlite3"},
            "CELERY_BROKER_URL must be a Redis",
        ),
        ({"ALLOWED_HOSTS": "*"}, "'*' is refused in production"),
        ({"PUBLIC_BASE_URL": "http://portal.example.org"}, "PUBLIC_BASE_URL must be this server"),
        ({"PUBLIC_BASE_URL": "https://portal.example.org/app"}, "(no path)"),
        (
            {"PUBLIC_BASE_URL": "https://other.example.org"},
            "PUBLIC_BASE_URL's host 'other.example.org' is not in ALLOWED_HOSTS",
        ),
        ({"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true"}, "EMAIL_USE_TLS or EMAIL_USE_SSL"),
        ({"ACCESS_LOG_CHAIN_KEY": "CHANGE_ME"}, "ACCESS_LOG_CHAIN_KEY is too weak"),
    ],
)
def test_malformed_values_are_refused_with_a_clear_message(tmp_path, overrides, fragment):
    result = run(CHECK_DEPLOY, production_env(tmp_path, **overrides))
    assert_refused(result, fragment, "See deploy/env.example and deploy/README.md.")


def test_the_example_env_file_is_refused_until_its_placeholders_are_replaced(tmp_path):
    example = {}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
    assert set(REQUIRED) <= set(example)
    env = production_env(tmp_path, **{name: None for name in REQUIRED})
    env.update(example)
    result = run(CHECK_DEPLOY, env)
    assert_refused(result, "SECRET_KEY is too weak")
    # And with a real SECRET_KEY, the vault placeholder is refused next.
    env["SECRET_KEY"] = SECRET_KEY
    assert_refused(run(CHECK_DEPLOY, env), "VAULT_KEYS key 'k20260101' is not valid base64")
    # And with real vault keys, the index-key placeholder.
    env["VAULT_KEYS"] = f"k20260101:{VAULT_KEY_1}"
    assert_refused(
        run(CHECK_DEPLOY, env), "FHIRLINK_INDEX_KEYS key 'i20260101' is not valid base64"
    )


# --- what the production settings are ----------------------------------------------------------

DUMP = r"""
import json, logging
import django
django.setup()
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
import patientportal.urls  # noqa: F401  (swaps in the OTP admin site)

def walk(patterns, prefix=""):
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, route)
        else:
            yield route, getattr(p.callback, "__module__", "")

sandbox_or_demo = sorted(
    route for route, module in walk(get_resolver().url_patterns)
    if module.startswith("fhirlink.sandbox") or route.lstrip("^").startswith("demo")
)

rf = RequestFactory()
from django.utils.module_loading import import_string
client_ip = import_string(settings.AXES_CLIENT_IP_CALLABLE)

class StaffWithoutVerifiedDevice:
    is_active = True
    is_staff = True
    def is_verified(self):
        return False

staff_request = rf.get("/admin/")
staff_request.user = StaffWithoutVerifiedDevice()
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SANDBOX_ENABLED": settings.SANDBOX_ENABLED,
    "DEMO_ENABLED": settings.DEMO_ENABLED,
    "sandbox_installed": apps.is_installed("fhirlink.sandbox"),
    "sandbox_or_demo_routes": sandbox_or_demo,
    "STAFF_OTP_REQUIRED": settings.STAFF_OTP_REQUIRED,
    # admin.site is a LazyObject: __class__ is the wrapped site's class.
    "admin_site": admin.site.__class__.__module__ + "." + admin.site.__class__.__name__,
    "admin_lets_unverified_staff_in": admin.site.has_permission(staff_request),
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "SECURE_PROXY_SSL_HEADER": list(settings.SECURE_PROXY_SSL_HEADER),
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
    "SECURE_HSTS_PRELOAD": settings.SECURE_HSTS_PRELOAD,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    "SESSION_COOKIE_NAME": settings.SESSION_COOKIE_NAME,
    "CSRF_COOKIE_NAME": settings.CSRF_COOKIE_NAME,
    "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
    "db_engine": settings.DATABASES["default"]["ENGINE"],
    "db_host": settings.DATABASES["default"]["HOST"],
    "broker_is_redis_url": settings.CELERY_BROKER_URL == settings.REDIS_URL,
    "broker_scheme": settings.CELERY_BROKER_URL.split(":", 1)[0],
    "transport_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "cache_backend": settings.CACHES["default"]["BACKEND"],
    "EMAIL_BACKEND": settings.EMAIL_BACKEND,
    "EMAIL_HOST": settings.EMAIL_HOST,
    "EMAIL_PORT": settings.EMAIL_PORT,
    "EMAIL_USE_TLS": settings.EMAIL_USE_TLS,
    "EMAIL_TIMEOUT": settings.EMAIL_TIMEOUT,
    "DEFAULT_FROM_EMAIL": settings.DEFAULT_FROM_EMAIL,
    "console_formatter": settings.LOGGING["handlers"]["console"]["formatter"],
    "VAULT_KEY_IDS": settings.VAULT_KEY_IDS,
    "NUM_PROXIES": settings.REST_FRAMEWORK["NUM_PROXIES"],
    "client_ip_forwarded": client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.7",
                                            REMOTE_ADDR="172.18.0.5")),
    "client_ip_spoof_attempt": client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7",
                                                REMOTE_ADDR="172.18.0.5")),
    "client_ip_direct": client_ip(rf.get("/", REMOTE_ADDR="172.18.0.5")),
    "STATIC_ROOT": str(settings.STATIC_ROOT),
}))
"""


def test_production_settings_values(tmp_path):
    # Hostile overrides: none of them may weaken production.
    env = production_env(
        tmp_path,
        DEBUG="true",
        STAFF_OTP_REQUIRED="false",
        LOG_FORMAT="text",
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="0",
    )
    result = run(["-c", DUMP], env)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result)
    values = json.loads(result.stdout)
    assert values == {
        "DEBUG": False,
        "SANDBOX_ENABLED": False,
        "DEMO_ENABLED": False,
        "sandbox_installed": False,
        "sandbox_or_demo_routes": [],
        "STAFF_OTP_REQUIRED": True,
        "admin_site": "django_otp.admin.OTPAdminSite",
        "admin_lets_unverified_staff_in": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_NAME": "__Host-sessionid",
        "CSRF_COOKIE_NAME": "__Host-csrftoken",
        "CSRF_TRUSTED_ORIGINS": ["https://portal.example.org"],
        "db_engine": "django.db.backends.postgresql",
        "db_host": "db.invalid",
        "broker_is_redis_url": True,
        "broker_scheme": "redis",
        "transport_options": {"visibility_timeout": 3600},
        "cache_backend": "django.core.cache.backends.redis.RedisCache",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "smtp.example.org",
        "EMAIL_PORT": 587,
        "EMAIL_USE_TLS": True,
        "EMAIL_TIMEOUT": 10,
        "DEFAULT_FROM_EMAIL": "Patient Portal <no-reply@portal.example.org>",
        "console_formatter": "json",
        "VAULT_KEY_IDS": ["k2025", "k2026"],
        "NUM_PROXIES": 1,
        "client_ip_forwarded": "203.0.113.7",
        "client_ip_spoof_attempt": "203.0.113.7",
        "client_ip_direct": "172.18.0.5",
        "STATIC_ROOT": str(tmp_path / "static"),
    }


def test_demo_seeding_is_refused_in_production(tmp_path):
    result = run(["manage.py", "demo_seed"], production_env(tmp_path))
    assert result.returncode == 1
    assert "Demo seeding is disabled in these settings (DEMO_ENABLED=False)." in result.stderr
    assert_no_secret(result)


def test_production_logs_are_json_lines_and_scrubbed(tmp_path):
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('patientportal.probe').warning("
        "'sync failed for connection %s: refresh_token=%s', 42, 'abcdefghijklmnop')"
    )
    result = run(["-c", script], production_env(tmp_path, LOG_FORMAT="text"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    record = json.loads(lines[0])
    assert record["level"] == "WARNING"
    assert record["logger"] == "patientportal.probe"
    assert record["message"] == "sync failed for connection 42: refresh_token=[REDACTED]"
    assert "abcdefghijklmnop" not in result.stderr


def test_healthz_answers_under_production_settings(tmp_path):
    script = (
        "import django; django.setup(); from django.test import Client; "
        "c = Client(); "
        "r = c.get('/healthz', HTTP_HOST='portal.example.org'); "
        "print(r.status_code, r.content.decode(), r.headers['Cache-Control']); "
        "r = c.get('/admin/', HTTP_HOST='portal.example.org'); "
        "print(r.status_code, r['Location']); "
        "r = c.get('/healthz', HTTP_HOST='evil.example'); "
        "print(r.status_code)"
    )
    result = run(["-c", script], production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        # Exempt from the HTTPS redirect: the container health check calls it over plain HTTP.
        '200 {"status": "ok"} max-age=0, no-cache, no-store, must-revalidate, private',
        # Everything else is sent to HTTPS.
        "301 https://portal.example.org/admin/",
        # A Host not in ALLOWED_HOSTS is refused.
        "400",
    ]


def test_every_variable_the_settings_read_is_documented_in_env_example():
    read = set()
    for module in ("base.py", "production.py"):
        source = (ROOT / "patientportal" / "settings" / module).read_text()
        read |= set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / "deploy" / "env.example").read_text(), re.M)
    )
    assert set(REQUIRED) <= read
    missing = sorted(read - documented)
    assert not missing, f"add these to deploy/env.example (with a comment): {missing}"
