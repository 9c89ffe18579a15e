"""An automated accessibility audit of every screen of the web page, and the whole way
from signing in to reading a message done with the keyboard alone.

The audit runs axe-core (bundled by ``axe-playwright-python``, read from disk: no
network) on each screen, with real content in it, at 1280 px and at 375 px, and fails
on any violation of the rules tagged WCAG 2.0 / 2.1 level A and AA (colour contrast
included) or axe's best practices (landmarks, heading order, one main heading). On
each screen Tab then goes once round every control, each of which must show a focus
ring, and the page must not be wider than the window.

axe is injected with ``page.evaluate``, which runs through the DevTools protocol and is
not subject to the page's Content-Security-Policy (``script-src 'self'``), so the page
is audited under its real policy; the policy itself is tested in test_page_security.py.
The email's own HTML, in its sandboxed frame, is the sender's and is not audited
(``iframes: false``); the page around it, the frame's title included, is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from axe_playwright_python.base import AXE_SCRIPT
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, Web, WebUser, open_page
from tests.browser.messages_support import call_api, png, sign_in_live, trust
from tests.browser.test_trusted import upload_address_book

SignIn = Callable[..., WebUser]
#: axe-core rule tags: WCAG 2.0 and 2.1 levels A and AA, and axe's best practices.
RULE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
SENDER = "+14155550123"
STRANGER = "+14155550145"
MAIL_FROM = "grace@sender.example"
RECIPIENT = "+14155550177"
#: How many Tab presses may separate two stops of the keyboard path.
MAX_TABS = 40
#: The most Tab stops one screen may have.
MAX_STOPS = 150


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def any_page(
    request: pytest.FixtureRequest, browser: Browser, web: Web, foreign_requests: list[str]
) -> Iterator[Page]:
    """A page at desktop width, then (second run of the test) at phone width."""
    yield from open_page(browser, web, request.param, foreign_requests)


def violations(page: Page) -> list[dict[str, Any]]:
    """axe's violations of :data:`RULE_TAGS` on the page as it is now."""
    page.evaluate(AXE_SCRIPT)
    options = {
        "runOnly": {"type": "tag", "values": RULE_TAGS},
        "resultTypes": ["violations"],
        "iframes": False,
    }
    found: list[dict[str, Any]] = page.evaluate(
        "options => axe.run(document, options).then(r => r.violations)", options
    )
    return found


def describe(found: list[dict[str, Any]]) -> str:
    lines = []
    for violation in found:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"]:
            target = " ".join(str(t) for t in node["target"])
            summary = " ".join(str(node.get("failureSummary", "")).split())
            lines.append(f"    {target}: {summary}")
    return "\n".join(lines)


def assert_accessible(page: Page) -> None:
    """No axe violation; every element Tab reaches shows a focus ring; nothing wider
    than the window (which would need scrolling sideways on a phone)."""
    found = violations(page)
    assert not found, f"axe found {len(found)} violation(s):\n{describe(found)}"
    assert_every_focus_visible(page)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, f"the page is {overflow} px wider than the window"


#: What is wrong with the focused element's focus indication, or ''.
FOCUS_RING = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return 'nothing is focused';
    const s = getComputedStyle(el);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
    const shadow = s.boxShadow !== 'none';
    const box = el.getBoundingClientRect();
    const what = el.outerHTML.slice(0, 120);
    if (!outline && !shadow) return `no focus ring on ${what}`;
    if (box.width === 0 || box.height === 0) return `focus on an invisible ${what}`;
    return '';
}"""


#: Which stop of the Tab round the focused element is: -1 for none (focus has left the
#: page's last control), a new number for a new element, its old number when Tab has
#: come round to it again.
STOP_NUMBER = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return -1;
    window.a11yTabStops = window.a11yTabStops || new WeakMap();
    if (!window.a11yTabStops.has(el)) {
        window.a11yTabStops.set(el, (window.a11yTabStopCount = (window.a11yTabStopCount || 0) + 1));
    }
    return window.a11yTabStops.get(el);
}"""


def assert_every_focus_visible(page: Page) -> None:
    """Tab once round the whole page (past its last control and on from the first)
    until an element comes round again, checking the ring at every stop. A date
    field takes several Tabs (day, month, year) while staying the focused element."""
    page.evaluate("() => { window.a11yTabStops = new WeakMap(); window.a11yTabStopCount = 0; }")
    stops = 0
    left_the_page = False
    for _ in range(MAX_STOPS):
        page.keyboard.press("Tab")
        number = page.evaluate(STOP_NUMBER)
        if number == -1:
            if left_the_page:
                break
            left_the_page = True
            continue
        if number < stops:
            break
        stops = number
        problem = page.evaluate(FOCUS_RING)
        assert problem == "", f"Tab stop {number}: {problem}"
    else:
        pytest.fail(f"Tab went through {MAX_STOPS} stops without coming round")
    assert stops > 0, "Tab reached no control on the page"


def heading(page: Page, name: str | re.Pattern[str]) -> Locator:
    return page.get_by_role("heading", level=1, name=name)


# --- one test per screen, each at both widths ------------------------------------------------


def test_sign_in_phone_step_is_accessible(any_page: Page, web: Web) -> None:
    any_page.goto("/")
    expect(heading(any_page, "Sign in")).to_be_focused()
    assert_accessible(any_page)


def test_sign_in_code_step_is_accessible(any_page: Page, web: Web) -> None:
    user = web.create_user()
    any_page.goto("/")
    any_page.get_by_label("Phone number").fill(user.phone)
    any_page.get_by_role("button", name="Send code").click()
    expect(any_page.get_by_label("Code", exact=True)).to_be_visible()
    assert_accessible(any_page)


def test_sign_up_form_is_accessible(any_page: Page, web: Web) -> None:
    any_page.goto("/")
    any_page.get_by_role("button", name="Create an account").click()
    expect(heading(any_page, "Create an account")).to_be_visible()
    assert_accessible(any_page)


def _fill_inbox(page: Page, web: Web, signed_in: SignIn) -> WebUser:
    """Sign in; a trusted SMS conversation, a trusted email and one sent SMS."""
    user = sign_in_live(page, web, signed_in)
    trust(page, SENDER)
    trust(page, MAIL_FROM)
    web.send_sms(SENDER, user.sms_number, "Dinner at eight?")
    web.send_email(
        MAIL_FROM,
        user.email_address,
        "Minutes",
        "The minutes, in plain text.",
        html="<p>The <b>minutes</b>.</p>",
        attachments=[
            ("chart.png", "image/png", png(40, 20)),
            ("minutes.txt", "text/plain", b"The minutes.\n"),
        ],
    )
    draft = call_api(page, "POST", "/drafts", {"channel": "sms", "to": [RECIPIENT], "text": "Yes"})
    assert draft["status"] == 201, draft
    sent = call_api(page, "POST", f"/drafts/{draft['body']['id']}/send")
    assert sent["status"] in (200, 202), sent
    return user


def show(page: Page, tab: str) -> None:
    page.get_by_role("button", name=tab, exact=True).click()
    expect(page.get_by_role("button", name=tab, exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )


def test_inbox_tabs_are_accessible(any_page: Page, web: Web, signed_in: SignIn) -> None:
    _fill_inbox(any_page, web, signed_in)
    items = any_page.locator("li.inbox-item")
    expect(items.filter(has_text="Dinner at eight?")).to_be_visible()
    expect(items.filter(has_text="Minutes")).to_be_visible()
    assert_accessible(any_page)
    show(any_page, "Received")
    expect(items).to_have_count(2)
    assert_accessible(any_page)
    show(any_page, "Sent")
    expect(items.filter(has_text="Yes")).to_be_visible()
    assert_accessible(any_page)


def test_conversation_is_accessible(any_page: Page, web: Web, signed_in: SignIn) -> None:
    _fill_inbox(any_page, web, signed_in)
    any_page.locator("li.inbox-item").filter(has_text="Dinner at eight?").get_by_role(
        "link"
    ).click()
    expect(any_page.locator("li.bubble").filter(has_text="Dinner at eight?")).to_be_visible()
    assert_accessible(any_page)


def test_sms_message_is_accessible(any_page: Page, web: Web, signed_in: SignIn) -> None:
    _fill_inbox(any_page, web, signed_in)
    show(any_page, "Received")
    any_page.locator("li.inbox-item").filter(has_text="Dinner at eight?").get_by_role(
        "link"
    ).click()
    expect(any_page.locator(".message-text")).to_have_text("Dinner at eight?")
    assert_accessible(any_page)
    any_page.get_by_role("button", name="Delete", exact=True).click()
    expect(any_page.get_by_role("group", name="Confirm delete")).to_be_visible()
    assert_accessible(any_page)


def test_email_message_is_accessible(any_page: Page, web: Web, signed_in: SignIn) -> None:
    _fill_inbox(any_page, web, signed_in)
    show(any_page, "Received")
    any_page.locator("li.inbox-item").filter(has_text="Minutes").get_by_role("link").click()
    expect(heading(any_page, "Minutes")).to_be_visible()
    expect(any_page.frame_locator("iframe.email-frame").get_by_text("minutes")).to_be_visible()
    expect(any_page.locator(".attachment-image")).to_be_visible()
    expect(any_page.get_by_role("button", name=re.compile("^Download minutes.txt"))).to_be_visible()
    assert_accessible(any_page)


def test_screener_with_cards_is_accessible(any_page: Page, web: Web, signed_in: SignIn) -> None:
    user = sign_in_live(any_page, web, signed_in)
    web.send_sms(STRANGER, user.sms_number, "Hi, it's Ann from the book club")
    web.send_email("bob@unknown.example", user.email_address, "Parcel", "Your parcel waits")
    any_page.get_by_role("link", name="Screener").click()
    expect(heading(any_page, "Screener")).to_be_visible()
    expect(any_page.locator(".screener-card")).to_have_count(2)
    assert_accessible(any_page)


def test_compose_sms_with_a_field_error_is_accessible(
    any_page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(any_page, web, signed_in)
    any_page.goto("/#/compose")
    expect(heading(any_page, "New message")).to_be_visible()
    assert_accessible(any_page)
    any_page.get_by_label("To", exact=True).fill("12")
    any_page.get_by_label("Message", exact=True).fill("Hello?")
    any_page.get_by_role("button", name="Save draft").click()
    expect(any_page.locator("#compose-to-error")).to_contain_text("phone number")
    assert_accessible(any_page)


def test_compose_email_with_a_field_error_is_accessible(
    any_page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(any_page, web, signed_in)
    any_page.goto("/#/compose")
    any_page.get_by_label("Email").check()
    expect(any_page.get_by_label("Subject")).to_be_visible()
    any_page.get_by_label("To", exact=True).fill("not an address")
    any_page.get_by_label("Subject").fill("Minutes")
    any_page.get_by_label("Message", exact=True).fill("Attached are the minutes.")
    any_page.get_by_role("button", name="Save draft").click()
    expect(any_page.get_by_label("To", exact=True)).to_have_attribute("aria-invalid", "true")
    assert_accessible(any_page)


def test_trusted_senders_and_address_book_are_accessible(
    any_page: Page, web: Web, signed_in: SignIn
) -> None:
    signed_in(any_page, web)
    trust(any_page, SENDER)
    trust(any_page, MAIL_FROM)
    blocked = call_api(
        any_page, "POST", "/trusted-senders", {"address": STRANGER, "verdict": "blocked"}
    )
    assert blocked["status"] in (200, 201), blocked
    any_page.get_by_role("link", name="Trusted senders").click()
    expect(heading(any_page, "Trusted senders")).to_be_visible()
    expect(any_page.get_by_text(MAIL_FROM)).to_be_visible()
    upload_address_book(any_page)
    expect(any_page.get_by_role("cell", name="Alan Turing", exact=True)).to_be_visible()
    assert_accessible(any_page)


def test_account_with_devices_and_sign_in_history_is_accessible(
    any_page: Page, web: Web, signed_in: SignIn
) -> None:
    user = signed_in(any_page, web)
    web.cli("tokens", "create", user.id, "--name", "Phone app")
    any_page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
    devices = any_page.get_by_role("list", name="Devices")
    expect(devices.get_by_role("listitem")).to_have_count(2)
    expect(any_page.get_by_role("region", name="Sign-in history")).to_contain_text("Signed in")
    assert_accessible(any_page)
    any_page.get_by_label('Type "delete my account" to confirm').fill("delete my account")
    expect(any_page.get_by_role("button", name="Delete my account")).to_be_enabled()
    assert_accessible(any_page)


# --- the keyboard alone ----------------------------------------------------------------------


def tab_to(page: Page, target: Locator, key: str = "Tab") -> None:
    """Press Tab (or Shift+Tab) until ``target`` has focus, checking that every element
    focused on the way shows a focus ring."""
    for _ in range(MAX_TABS):
        page.keyboard.press(key)
        problem = page.evaluate(FOCUS_RING)
        assert problem == "", f"after {key}: {problem}"
        if target.evaluate("el => el === document.activeElement"):
            return
    pytest.fail(f"{MAX_TABS} presses of {key} never reached {target}")


def test_from_sign_in_to_reading_a_message_with_the_keyboard_alone(page: Page, web: Web) -> None:
    user = web.create_user()
    page.goto("/")
    expect(heading(page, "Sign in")).to_be_focused()
    # The heading has focus, so the first Tab reaches the first field.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Phone number")).to_be_focused()
    assert page.evaluate(FOCUS_RING) == ""
    page.keyboard.type(user.phone)
    page.keyboard.press("Enter")
    code = page.get_by_label("Code", exact=True)
    expect(code).to_be_focused()
    page.keyboard.type(web.last_code(user.phone))
    with page.expect_response(lambda r: r.url.endswith("/api/v1/events") and r.ok):
        page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/inbox$"))

    trust(page, SENDER)
    web.send_sms(SENDER, user.sms_number, "Dinner at eight?")
    item = page.locator("li.inbox-item").filter(has_text="Dinner at eight?")
    expect(item).to_be_visible()

    received = page.get_by_role("button", name="Received", exact=True)
    tab_to(page, received)
    page.keyboard.press("Space")
    expect(received).to_have_attribute("aria-pressed", "true")
    expect(received).to_be_focused()
    assert page.evaluate(FOCUS_RING) == ""
    link = page.locator("li.inbox-item").filter(has_text="Dinner at eight?").get_by_role("link")
    tab_to(page, link)
    page.keyboard.press("Enter")
    expect(heading(page, f"From {SENDER}")).to_be_focused()
    expect(page.locator(".message-text")).to_have_text("Dinner at eight?")

    # Back to the inbox the way the page came: Shift+Tab to the link before the heading.
    back = page.get_by_role("link", name="← Inbox")
    tab_to(page, back, "Shift+Tab")
    page.keyboard.press("Enter")
    expect(heading(page, "Inbox")).to_be_focused()
