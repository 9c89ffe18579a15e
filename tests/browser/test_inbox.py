"""The inbox, a conversation and one message in the web page (js/inbox.js,
js/message.js), against a real gateway: live arrival, read state, the sandboxed
email frame, inline images, deleting, replying."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import ConsoleMessage, Page, Route, expect

from tests.browser.conftest import Web, WebUser
from tests.browser.messages_support import call_api, png, sign_in_live, trust, without_toast

SignIn = Callable[..., WebUser]
SENDER = "+14155550123"
MAIL_FROM = "grace@sender.example"


def inbox_item(page: Page, text: str) -> Any:
    return page.locator("li.inbox-item").filter(has_text=text)


def show_received(page: Page) -> None:
    page.get_by_role("button", name="Received").click()
    expect(page.get_by_role("button", name="Received")).to_have_attribute("aria-pressed", "true")


def test_sms_from_a_trusted_sender_appears_live_marked_unread(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, SENDER)
    expect(page.get_by_text("No conversations yet.")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    web.send_sms(SENDER, user.sms_number, "Dinner at eight?")

    item = inbox_item(page, "Dinner at eight?")
    expect(item).to_contain_text(SENDER)
    expect(item).to_contain_text("1 unread")
    expect(item).to_have_class(re.compile(r"\bunread\b"))
    assert page.evaluate("window.notReloaded") is True
    without_toast(page)
    screenshot(page, "inbox")
    show_received(page)
    expect(inbox_item(page, "Dinner at eight?")).to_contain_text("Unread")


def test_opening_a_message_marks_it_read(page: Page, web: Web, signed_in: SignIn) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, SENDER)
    web.send_sms(SENDER, user.sms_number, "Are you there?")
    show_received(page)
    item = inbox_item(page, "Are you there?")
    expect(item).to_contain_text("Unread")

    item.get_by_role("link").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"From {SENDER}")
    expect(page.locator(".message-text")).to_have_text("Are you there?")
    message_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("button", name="Mark as unread")).to_be_visible()
    assert call_api(page, "GET", f"/messages/{message_id}")["body"]["read"] is True
    page.get_by_role("link", name="← Inbox").click()
    show_received(page)
    expect(inbox_item(page, "Are you there?")).not_to_contain_text("Unread")


def _open_latest_email(page: Page, subject: str) -> None:
    show_received(page)
    inbox_item(page, subject).get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)


def test_email_html_shows_in_a_sandboxed_frame_that_runs_and_loads_nothing(
    page: Page, web: Web, signed_in: SignIn, foreign_requests: list[str]
) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, MAIL_FROM)
    web.send_email(
        MAIL_FROM,
        user.email_address,
        "Newsletter",
        "Hello in plain text",
        html=(
            "<p>Hello <b>in HTML</b></p>"
            '<img src="http://example.invalid/x.png" alt="tracker">'
            "<script>document.title = 'script ran'</script>"
        ),
    )
    _open_latest_email(page, "Newsletter")

    frame = page.locator("iframe.email-frame")
    sandbox = frame.get_attribute("sandbox") or ""
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    expect(page.frame_locator("iframe.email-frame").get_by_text("in HTML")).to_be_visible()
    page.get_by_role("button", name="Show plain text").click()
    expect(page.locator(".message-text")).to_have_text("Hello in plain text")
    assert foreign_requests == []
    assert "script ran" not in page.title()


def test_the_email_frame_gets_its_stylesheet(page: Page, web: Web, signed_in: SignIn) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, MAIL_FROM)
    web.send_email(MAIL_FROM, user.email_address, "Styled", "plain", html="<p>styled</p>")
    _open_latest_email(page, "Styled")
    body = page.frame_locator("iframe.email-frame").locator("body")
    expect(body).to_contain_text("styled")
    # email-frame.css pads the body by 0.75rem; the browser's default is a margin.
    expect(body).to_have_css("padding-top", "12px")


def test_html_that_escaped_the_sanitiser_still_runs_nothing_and_loads_nothing(
    page: Page, web: Web, signed_in: SignIn, foreign_requests: list[str]
) -> None:
    """The frame's own defences, without the gateway's sanitiser: the message the
    page reads is rewritten to carry a script and remote loads."""
    hostile = (
        "<p>Unsanitised</p>"
        '<img src="http://example.invalid/x.png" alt="remote">'
        '<img src="/static/app.css?from-mail" alt="ours">'
        '<link rel="stylesheet" href="http://example.invalid/x.css">'
        "<script>fetch('/static/app.css?script-ran'); parent.document.title = 'pwned'</script>"
        '<img src="data:," onerror="fetch(\'/static/app.css?handler-ran\')">'
    )

    def rewrite(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        response = route.fetch()
        message = response.json()
        message["html"] = hostile
        route.fulfill(response=response, body=json.dumps(message))

    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    user = sign_in_live(page, web, signed_in)
    trust(page, MAIL_FROM)
    web.send_email(MAIL_FROM, user.email_address, "Hostile", "plain", html="<p>fine</p>")
    page.route(re.compile(r"/api/v1/messages/msg_[^/?]+$"), rewrite)
    # Chromium reports each load that a policy stopped; the page's own policy (the
    # srcdoc frame inherits it) refuses the remote image and stylesheet, the frame's
    # narrower one also refuses images from our own origin.
    with (
        page.expect_console_message(_refused("'http://example.invalid/x.png'", PAGE_IMG_SRC)),
        page.expect_console_message(_refused("'http://example.invalid/x.css'", "style-src 'self'")),
        page.expect_console_message(_refused("from-mail'", "img-src data:")),
        page.expect_console_message(_blocked_script),
    ):
        _open_latest_email(page, "Hostile")

    expect(page.frame_locator("iframe.email-frame").get_by_text("Unsanitised")).to_be_visible()
    assert foreign_requests == []  # nothing reached the network for another host
    assert not [url for url in requests if "script-ran" in url or "handler-ran" in url]
    assert page.title() != "pwned"


PAGE_IMG_SRC = "img-src 'self' blob: data:"


def _refused(resource: str, directive: str) -> Callable[[ConsoleMessage], bool]:
    def match(message: ConsoleMessage) -> bool:
        return resource in message.text and directive in message.text

    return match


def _blocked_script(message: ConsoleMessage) -> bool:
    # Chromium's report that the frame's sandbox stopped a script.
    return "Blocked script execution" in message.text


def test_an_image_attachment_shows_inline(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, MAIL_FROM)
    web.send_email(
        MAIL_FROM,
        user.email_address,
        "Holiday photo",
        "See attached",
        attachments=[("beach.png", "image/png", png(240, 160))],
    )
    _open_latest_email(page, "Holiday photo")

    image = page.get_by_role("img", name="beach.png")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    expect(image).to_have_js_property("naturalWidth", 240)
    expect(page.get_by_role("button", name=re.compile(r"^Download beach\.png"))).to_be_visible()
    without_toast(page)
    screenshot(page, "message")


def test_deleting_a_message_removes_it(page: Page, web: Web, signed_in: SignIn) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, SENDER)
    web.send_sms(SENDER, user.sms_number, "Delete me")
    show_received(page)
    inbox_item(page, "Delete me").get_by_role("link").click()
    message_id = page.url.rsplit("/", 1)[1]

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete for good").click()

    expect(page.get_by_role("status").filter(has_text="Message deleted")).to_be_visible()
    expect(page.get_by_text("No messages in this conversation.")).to_be_visible()
    assert call_api(page, "GET", f"/messages/{message_id}")["status"] == 404
    page.get_by_role("link", name="← Inbox").click()
    expect(page.get_by_text("No conversations yet.")).to_be_visible()


def test_a_reply_in_an_sms_conversation_is_sent(page: Page, web: Web, signed_in: SignIn) -> None:
    user = sign_in_live(page, web, signed_in)
    trust(page, SENDER)
    web.send_sms(SENDER, user.sms_number, "Call me")
    inbox_item(page, "Call me").get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(SENDER)

    page.get_by_label("Reply").fill("Calling now")
    page.get_by_role("button", name="Send").click()

    mine = page.locator("li.bubble.outbound").filter(has_text="Calling now")
    expect(mine).to_contain_text("You")
    expect(mine.locator(".delivery")).to_have_attribute("data-status", re.compile("queued|sent"))
    sent = [m for m in web.sent_messages() if m.to == SENDER]
    assert [m.body for m in sent] == ["Calling now"]
    expect(page.locator("li.bubble.inbound").filter(has_text="Call me")).not_to_contain_text(
        "Unread"
    )


def test_inbox_and_message_fit_a_phone_screen(
    phone_page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    page = phone_page
    user = sign_in_live(page, web, signed_in)
    trust(page, MAIL_FROM)
    trust(page, SENDER)
    web.send_sms(SENDER, user.sms_number, "Running ten minutes late, start without me please")
    web.send_email(
        MAIL_FROM,
        user.email_address,
        "A rather long subject line that has to wrap on a phone",
        "Text",
        html="<p>A wide table follows.</p><table width='900'><tr><td>cell</td></tr></table>",
    )
    expect(page.locator("li.inbox-item")).to_have_count(2)
    without_toast(page)
    screenshot(page, "inbox")
    assert _overflow(page) == 0
    _open_latest_email(page, "A rather long subject line that has to wrap on a phone")
    expect(page.frame_locator("iframe.email-frame").get_by_text("A wide table")).to_be_visible()
    assert _overflow(page) == 0


def _overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport."""
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )
