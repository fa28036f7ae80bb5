"""gunicorn settings, shared by the demo and the container image. Override with GUNICORN_*.

Sizing: each worker process runs GUNICORN_THREADS threads (gthread), so one container serves
workers x threads requests at once; every thread may hold one PostgreSQL connection
(CONN_MAX_AGE), which is what to budget against max_connections (or a pgbouncer).
"""

import json
import multiprocessing
import os
import uuid

import gunicorn.util

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 8)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# Longer than the front end's proxy_read_timeout is pointless; keep them equal (deploy/nginx).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then (bounded memory growth), staggered so they never restart at once.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = 200
# Heartbeat files on tmpfs: a container's /tmp may sit on a slow overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
accesslog = "-"
errorlog = "-"
# The access log records method, path and status only: no query strings (they may carry ids,
# OAuth codes or state). The client address is the proxy's; nginx logs the real one.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss rid=%({x-request-id}o)s'
# Only these peers may set X-Forwarded-Proto for gunicorn itself (Django trusts the header via
# SECURE_PROXY_SSL_HEADER; gunicorn is never published beyond the front end's network).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Request line (method, path and query) and header limits: past them gunicorn answers itself,
# before Django, with 414 (line) or 431 (a header too long, or too many), in the API's error
# shape (_write_json_error below). The TLS front end's limits are the same or lower.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
# No gunicornc control socket: it would live under $HOME (read-only in the image) and the demo's
# two gunicorns would share its path. Processes are managed with signals.
control_socket_disable = True
# Import the application once in the master, so workers fork with it loaded and a broken
# configuration (a missing secret) stops gunicorn at once instead of crash-looping workers.
_production = os.environ.get("DJANGO_SETTINGS_MODULE", "").endswith(".production")
preload_app = os.environ.get("GUNICORN_PRELOAD", str(_production)).lower() in {"1", "true", "yes"}

# JSON log lines in production (the production settings log JSON too), text in the demo.
if os.environ.get("LOG_FORMAT", "json" if _production else "text") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def post_worker_init(worker: object) -> None:
    """The application is loaded (here, or in the master with preload_app): its objects live as
    long as the worker. Keep the garbage collector from walking them on every collection
    (`gc.freeze`), as the Celery workers do (patientportal/celery.py)."""
    import gc

    gc.collect()
    gc.freeze()


# --- gunicorn's own error responses, in the API's error shape -------------------------------------
# gunicorn answers a request it cannot parse (a request line or headers over the limits above, a
# malformed request line) before the application sees it, with an HTML page that echoes the
# offending input. It has no setting for that body, so its one writer of it is replaced here
# (the config file runs in the master, before the workers fork): JSON like every other error,
# a stable code per status, nothing echoed, never cached.
_ERROR_CODES = {
    400: ("bad_request", "Bad request."),
    403: ("permission_denied", "Permission denied."),
    414: ("uri_too_long", "The request line (path and query string) is too long."),
    417: ("expectation_failed", "The expectation in the Expect header cannot be met."),
    431: ("headers_too_large", "The request headers are too large."),
    500: ("server_error", "An unexpected error occurred."),
    501: ("not_implemented", "The request uses a transfer coding this server does not support."),
}


def _write_json_error(sock: object, status_int: int, reason: str, mesg: str) -> None:
    code, message = _ERROR_CODES.get(status_int, ("bad_request", "Bad request."))
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {"code": code, "message": message, "status": status_int, "request_id": request_id},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    gunicorn.util.write_nonblock(sock, head + body)


gunicorn.util.write_error = _write_json_error
