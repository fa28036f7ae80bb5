"""Container health check for the web process: GET /healthz on the local gunicorn.

Used by the image's HEALTHCHECK (no curl in the slim image). Sends the Host header of
PUBLIC_BASE_URL, which the production settings require to be in ALLOWED_HOSTS, so the request
passes host validation; /healthz is exempt from the HTTPS redirect. Exit status 0 means healthy.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from urllib.parse import urlsplit


def target() -> tuple[str, int, str]:
    bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",")[0].strip()
    host, _, port = bind.rpartition(":")
    if host in {"", "0.0.0.0", "[::]", "::"}:  # noqa: S104 - a bind address, not a bind
        host = "127.0.0.1"
    public = urlsplit(os.environ.get("PUBLIC_BASE_URL", ""))
    return host.strip("[]"), int(port or 8000), public.netloc or "localhost"


def main() -> int:
    host, port, host_header = target()
    connection = http.client.HTTPConnection(host, port, timeout=4)
    try:
        connection.request("GET", "/healthz", headers={"Host": host_header})
        response = connection.getresponse()
        body = response.read(4096)
    except OSError as exc:
        print(f"unhealthy: {type(exc).__name__}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        connection.close()
    try:
        ok = response.status == 200 and json.loads(body).get("status") == "ok"
    except ValueError:
        ok = False
    if not ok:
        print(f"unhealthy: HTTP {response.status}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
