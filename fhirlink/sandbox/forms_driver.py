"""Drive the sandbox's login and approval pages over HTTP, without a browser.

Used by the ``sandbox`` test fixtures and by ``smart_client_check``. Only for the sandbox's own
pages: it parses the forms it knows (login, the generic profile's patient picker, approval with
its Observation categories).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape
from urllib.parse import urljoin

import requests

_FORM = re.compile(
    r'<form method="post" action="([^"]+)" id="(login|pick|approve)-form">(.*?)</form>', re.S
)
_HIDDEN = re.compile(r'<input type="hidden" name="request_id" value="([^"]*)">')
_SCOPE = re.compile(r'<input type="checkbox" name="scope" value="([^"]*)"')
_CATEGORY = re.compile(r'<input type="checkbox" name="(category:[^"]*)" value="([^"]*)"')
_PATIENT = re.compile(r'<input type="radio" name="patient" value="([^"]*)"')
_ERROR = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)


class AuthorizeFailed(Exception):
    """The sandbox showed an error page instead of redirecting to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _form(response: requests.Response, *kinds: str) -> tuple[str, str, str]:
    match = _FORM.search(response.text)
    if match is None or match.group(2) not in kinds:
        error = _ERROR.search(response.text)
        raise AuthorizeFailed(
            response.status_code, unescape(error.group(1)) if error else response.text[:200]
        )
    hidden = _HIDDEN.search(match.group(3))
    return (
        urljoin(response.url, unescape(match.group(1))),
        unescape(hidden.group(1) if hidden else ""),
        match.group(2) + ":" + match.group(3),
    )


def drive_authorize(
    authorize_url: str,
    username: str,
    password: str,
    *,
    untick: Iterable[str] = (),
    deny: bool = False,
    pick: str | None = None,
    untick_categories: Iterable[str] = (),
    session: requests.Session | None = None,
    timeout: float = 10,
) -> str:
    """Log in, pick whose record (``pick``: a test patient's key; default the first offered,
    the login's own), approve (minus the ``untick`` scopes and the Observation categories
    ``untick_categories``, e.g. ``("vital-signs",)``) or deny; return the redirect Location
    unfollowed."""
    http = session or requests.Session()
    response = http.get(authorize_url, allow_redirects=False, timeout=timeout)
    if response.is_redirect:
        return response.headers["Location"]
    login_url, request_id, _ = _form(response, "login")
    response = http.post(
        login_url,
        data={"request_id": request_id, "username": username, "password": password},
        allow_redirects=False,
        timeout=timeout,
    )
    url, request_id, body = _form(response, "pick", "approve")
    if body.startswith("pick:"):
        options = [unescape(v) for v in _PATIENT.findall(body)]
        if pick is not None and pick not in options:
            raise AuthorizeFailed(200, f"the picker offers {options}, not {pick!r}")
        response = http.post(
            url,
            data={"request_id": request_id, "patient": pick or options[0]},
            allow_redirects=False,
            timeout=timeout,
        )
        url, request_id, body = _form(response, "approve")
    elif pick is not None:
        raise AuthorizeFailed(200, "no patient picker was shown")
    unticked = set(untick)
    scopes = [unescape(s) for s in _SCOPE.findall(body) if unescape(s) not in unticked]
    data: dict[str, list[str] | str] = {
        "request_id": request_id,
        "scope": scopes,
        "action": "deny" if deny else "approve",
    }
    skip = set(untick_categories)
    for name, value in _CATEGORY.findall(body):
        name, value = unescape(name), unescape(value)
        if value not in skip:
            existing = data.setdefault(name, [])
            assert isinstance(existing, list)
            existing.append(value)
        else:
            data.setdefault(name, [])
    response = http.post(url, data=data, allow_redirects=False, timeout=timeout)
    if not response.is_redirect:
        error = _ERROR.search(response.text)
        raise AuthorizeFailed(
            response.status_code, unescape(error.group(1)) if error else response.text[:200]
        )
    return response.headers["Location"]
