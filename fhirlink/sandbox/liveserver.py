"""Serve the sandbox URLconf from a thread on an ephemeral loopback port (tests, benchmark)."""

from __future__ import annotations

import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer
from django.http import HttpRequest, HttpResponseBase

SANDBOX_URLCONF = "fhirlink.sandbox.urls"
GENERIC_URLCONF = "fhirlink.sandbox.urls_generic"


class SandboxWSGIHandler(WSGIHandler):
    """Serves a sandbox URLconf (Cerner's, or the generic profile's) whatever the process's
    ROOT_URLCONF is."""

    def __init__(self, urlconf: str = SANDBOX_URLCONF) -> None:
        super().__init__()
        self.urlconf = urlconf

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        request.urlconf = self.urlconf  # type: ignore[attr-defined]
        return super().get_response(request)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class SandboxServer:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, urlconf: str = SANDBOX_URLCONF
    ) -> None:
        self.httpd = ThreadedWSGIServer((host, port), _QuietHandler, allow_reuse_address=False)
        self.httpd.set_app(SandboxWSGIHandler(urlconf))
        self.port: int = self.httpd.server_address[1]
        self.origin = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="cerner-sandbox", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
