"""Helpers shared by the inbox and compose browser tests (test_inbox.py,
test_compose.py): signing in with the live stream known to be open, calling the
client API as the signed-in page does, and a small PNG."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from playwright.sync_api import Page, Response

if TYPE_CHECKING:
    from tests.browser.conftest import Web, WebUser


def _events_stream(response: Response) -> bool:
    return response.url.endswith("/api/v1/events") and response.status == 200


def sign_in_live(page: Page, web: Web, signed_in: Callable[..., WebUser]) -> WebUser:
    """Sign in and return once the page's event stream has answered: the gateway
    sends the stream's headers only after it has subscribed, so every change
    committed from then on reaches the page."""
    with page.expect_response(_events_stream):
        return signed_in(page, web)


def call_api(page: Page, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """Call ``/api/v1`` + ``path`` from the page with its own token; returns
    ``{"status": int, "body": parsed JSON or None}``."""
    result: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
            const headers = { Authorization: `Bearer ${localStorage.getItem('optmsg.token')}` };
            if (body !== null) headers['Content-Type'] = 'application/json';
            const response = await fetch(`/api/v1${path}`, {
                method, headers, body: body === null ? undefined : JSON.stringify(body),
            });
            const text = await response.text();
            return { status: response.status, body: text ? JSON.parse(text) : null };
        }""",
        [method, path, body],
    )
    return result


def trust(page: Page, address: str) -> None:
    """Put ``address`` on the signed-in user's trusted senders."""
    answer = call_api(page, "POST", "/trusted-senders", {"address": address})
    assert answer["status"] in (200, 201), answer


def without_toast(page: Page) -> None:
    """Empty the toast (e.g. "Signed in as ...") so that a screenshot shows the view."""
    page.evaluate("document.getElementById('toast').replaceChildren()")


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\xd0\x20\x20" * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
