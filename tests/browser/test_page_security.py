"""What the page and its files are served with: the Content-Security-Policy and other
security headers, content types, refusals of unknown and traversing paths, and a page
that loads without console errors and talks to no host but the gateway."""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect

from tests.browser.conftest import LoopThread, Web, WebUser, running_web
from tests.e2e.harness import Deployment

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    deployment_template: Deployment,
    fakes_loop: LoopThread,
) -> Iterator[Web]:
    """One gateway for the tests that only read headers (no state of their own)."""
    root = tmp_path_factory.mktemp("served")
    with running_web(root, deployment_template, fakes_loop, {}) as running:
        yield running


def raw_get(web: Web, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of '..')."""
    host = urlsplit(web.base_url)
    conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/js/app.js", "text/javascript; charset=utf-8"),
    ],
)
def test_the_page_and_its_files_carry_the_security_headers(
    served: Web, path: str, content_type: str
) -> None:
    status, headers, _ = raw_get(served, path)
    assert status == 200
    assert headers["content-type"] == content_type
    assert headers["content-security-policy"] == CSP
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-cache"


def test_an_unknown_static_file_is_a_404_problem(served: Web) -> None:
    status, headers, body = raw_get(served, "/static/js/nothing-here.js")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert b"no such file" in body


@pytest.mark.parametrize(
    "path",
    [
        "/static/../web_page.py",
        "/static/%2e%2e/web_page.py",
        "/static/js/..%2f..%2fweb_page.py",
        "/static/..%5cweb_page.py",
        "/static/js/../../app.py",
        "/static/%2e%2e%2f%2e%2e%2fconfig%2fsettings.py",
        "/static//etc/passwd",
        "/static/.hidden.js",
        "/static/index.html%00.js",
    ],
)
def test_a_path_out_of_the_static_directory_is_refused(served: Web, path: str) -> None:
    status, _, body = raw_get(served, path)
    assert status in (400, 404)
    assert b"import" not in body and b"root:" not in body


def test_the_page_loads_without_console_errors_or_requests_to_other_hosts(
    page: Page, web: Web, foreign_requests: list[str], signed_in: Callable[[Page, Web], WebUser]
) -> None:
    errors: list[str] = []
    requested: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_request(request: Request) -> None:
        requested.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", on_request)
    signed_in(page, web)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", level=1, name="Account")).to_be_visible()
    expect(page.get_by_role("region", name="Sign-in history").get_by_role("row")).to_have_count(2)
    assert errors == []
    assert foreign_requests == []
    assert requested and all(
        url.startswith(web.base_url + "/") or url.startswith(("data:", "blob:"))
        for url in requested
    ), requested


def test_every_view_of_the_navigation_opens_without_console_errors(
    page: Page, web: Web, foreign_requests: list[str], signed_in: Callable[[Page, Web], WebUser]
) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    signed_in(page, web)
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Screener", "Compose", "Trusted senders", "Account", "Inbox"):
        nav.get_by_role("link", name=name).click()
        expect(nav.get_by_role("link", name=name)).to_have_attribute("aria-current", "page")
        heading = page.get_by_role("heading", level=1)
        expect(heading).to_be_focused()
        expect(page.locator("#view")).not_to_have_attribute("aria-busy", "true")
        expect(heading).not_to_have_text("Something went wrong")
    assert errors == []
    assert foreign_requests == []


def test_the_policy_stops_a_script_injected_into_the_page(page: Page, web: Web) -> None:
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if m.type == "error" else None)
    page.goto("/")
    expect(page.get_by_label("Phone number")).to_be_visible()
    ran = page.evaluate(
        """() => {
            const s = document.createElement('script');
            s.textContent = 'window.injectedRan = true';
            document.body.appendChild(s);
            return window.injectedRan === true;
        }"""
    )
    assert ran is False
    assert any(re.search(r"Content Security Policy", v) for v in violations), violations
