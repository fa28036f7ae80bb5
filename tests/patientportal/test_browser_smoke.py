"""A real browser reaches the API docs and the admin login (what `make demo` points people at)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_and_admin_login_render_in_chromium(live_server, page, screenshot_dir):
    page.goto(f"{live_server.url}/admin/login/")
    assert page.title().startswith("Log in")
    page.screenshot(path=str(screenshot_dir / "foundation-admin-login.png"))

    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui", timeout=15000)
    page.screenshot(path=str(screenshot_dir / "foundation-api-docs.png"))
