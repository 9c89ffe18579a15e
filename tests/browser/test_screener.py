"""The screener in the web page (js/screener.js) against a real gateway: one card per
unknown sender, Allow / Block / Later with one click, bulk decisions, Undo from the
toast, the waiting count in the navigation, and the keyboard-only path."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Web, WebUser
from tests.browser.messages_support import call_api, sign_in_live

SignIn = Callable[..., WebUser]
ANN = "+14155550101"
BOB = "+14155550102"
# How the gateway shows them to a user whose own number is American (national form).
ANN_SHOWN = "(415) 555-0101"
BOB_SHOWN = "(415) 555-0102"


def card(page: Page, shown: str) -> Locator:
    return page.get_by_role("group", name=shown, exact=True)


def badge(page: Page) -> Locator:
    return page.locator("#screener-count")


def open_screener(page: Page, web: Web, signed_in: SignIn) -> WebUser:
    """Sign in (with the live stream open) and show the screener."""
    user = sign_in_live(page, web, signed_in)
    page.get_by_role("link", name="Screener").click()
    expect(page.get_by_role("heading", level=1, name="Screener")).to_be_visible()
    return user


def texts(page: Page, folder: str) -> dict[str, str]:
    """message text -> sender, in one folder of the signed-in user."""
    answer = call_api(page, "GET", f"/messages?folder={folder}&limit=200")
    assert answer["status"] == 200, answer
    return {m["text"]: m["sender"] for m in answer["body"]["items"]}


def test_unknown_senders_appear_live_as_one_card_each_and_are_counted(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    user = open_screener(page, web, signed_in)
    expect(page.get_by_text("Nobody is waiting.")).to_be_visible()

    web.send_sms(ANN, user.sms_number, "Hi, it's Ann from the book club")
    web.send_sms(BOB, user.sms_number, "Your parcel is waiting")
    web.send_sms(ANN, user.sms_number, "Are you coming on Friday?")

    expect(page.locator(".screener-card")).to_have_count(2)
    ann = card(page, ANN_SHOWN)
    expect(ann).to_contain_text("2 messages")
    expect(ann).to_contain_text("Are you coming on Friday?")
    expect(card(page, BOB_SHOWN)).to_contain_text("1 message")
    expect(badge(page)).to_have_text("2")
    screenshot(page, "screener")


def test_allow_moves_the_messages_to_the_inbox_and_undo_brings_the_card_back(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    user = open_screener(page, web, signed_in)
    web.send_sms(ANN, user.sms_number, "Hi, it's Ann")
    web.send_sms(BOB, user.sms_number, "Your parcel is waiting")
    expect(badge(page)).to_have_text("2")

    page.get_by_role("button", name=f"Allow {ANN_SHOWN}").click()

    expect(card(page, ANN_SHOWN)).to_have_count(0)
    expect(badge(page)).to_have_text("1")
    toast = page.locator("#toast")
    expect(toast).to_contain_text(f"Allowed {ANN_SHOWN}: 1 message moved to your inbox.")
    assert texts(page, "inbox") == {"Hi, it's Ann": ANN}

    toast.get_by_role("button", name="Undo").click()

    expect(card(page, ANN_SHOWN)).to_be_visible()
    expect(badge(page)).to_have_text("2")
    expect(toast).to_contain_text("back in the screener")
    assert texts(page, "inbox") == {}
    assert "Hi, it's Ann" in texts(page, "quarantine")


def test_block_discards_the_messages_and_lists_the_sender_as_blocked(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    user = open_screener(page, web, signed_in)
    web.send_sms(BOB, user.sms_number, "WIN A PRIZE")
    expect(card(page, BOB_SHOWN)).to_be_visible()

    page.get_by_role("button", name=f"Block {BOB_SHOWN}").click()

    expect(card(page, BOB_SHOWN)).to_have_count(0)
    expect(page.get_by_text("Nobody is waiting.")).to_be_visible()
    expect(badge(page)).to_have_text("0")
    expect(page.locator("#toast")).to_contain_text(f"Blocked {BOB_SHOWN}: 1 message discarded.")
    assert texts(page, "quarantine") == {}
    assert texts(page, "inbox") == {}
    blocked = call_api(page, "GET", "/trusted-senders?verdict=blocked")["body"]["items"]
    assert [e["address"] for e in blocked] == [BOB]


def test_selected_senders_are_allowed_together(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    user = open_screener(page, web, signed_in)
    web.send_sms(ANN, user.sms_number, "From Ann")
    web.send_sms(BOB, user.sms_number, "From Bob")
    expect(page.locator(".screener-card")).to_have_count(2)
    allow_selected = page.get_by_role("button", name="Allow selected")
    expect(allow_selected).to_be_hidden()  # until something is selected

    page.get_by_label(f"Select {ANN_SHOWN}").check()
    page.get_by_label(f"Select {BOB_SHOWN}").check()
    expect(page.get_by_text("2 selected")).to_be_visible()
    allow_selected.click()

    expect(page.locator(".screener-card")).to_have_count(0)
    expect(badge(page)).to_have_text("0")
    expect(page.locator("#toast")).to_contain_text("Allowed 2 senders: 2 messages moved")
    assert texts(page, "inbox") == {"From Ann": ANN, "From Bob": BOB}


def test_later_hides_the_card_until_the_sender_writes_again(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    user = open_screener(page, web, signed_in)
    web.send_sms(ANN, user.sms_number, "First")
    page.get_by_role("button", name=f"Later {ANN_SHOWN}").click()

    expect(card(page, ANN_SHOWN)).to_have_count(0)
    expect(page.get_by_role("button", name="Show 1 sender put off for later")).to_be_visible()
    assert "First" in texts(page, "quarantine")  # Later decides nothing

    web.send_sms(ANN, user.sms_number, "Second")

    expect(card(page, ANN_SHOWN)).to_contain_text("2 messages")


def test_a_sender_is_allowed_and_another_blocked_with_the_keyboard_alone(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    user = open_screener(page, web, signed_in)
    web.send_sms(ANN, user.sms_number, "From Ann")
    web.send_sms(BOB, user.sms_number, "From Bob")
    bob, ann = card(page, BOB_SHOWN), card(page, ANN_SHOWN)  # newest first
    expect(page.locator(".screener-card")).to_have_count(2)

    for _ in range(10):  # from the heading, past the bulk controls, to the first card
        page.keyboard.press("Tab")
        if bob.evaluate("el => el === document.activeElement"):
            break
    expect(bob).to_be_focused()
    page.keyboard.press("Tab")  # its checkbox
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name=f"Allow {BOB_SHOWN}")).to_be_focused()
    page.keyboard.press("Enter")

    expect(bob).to_have_count(0)
    expect(ann).to_be_focused()  # the focus moved on to the next card
    page.keyboard.press("b")

    expect(ann).to_have_count(0)
    expect(page.get_by_role("heading", level=1, name="Screener")).to_be_focused()
    assert texts(page, "inbox") == {"From Bob": BOB}
    expect(badge(page)).to_have_text("0")
    page.keyboard.press("u")  # undo the block, without reaching for the toast

    expect(ann).to_be_focused()
    expect(badge(page)).to_have_text("1")


def test_the_screener_fits_a_phone_screen(
    phone_page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    console: list[str] = []
    phone_page.on("console", lambda message: console.append(message.text))
    user = sign_in_live(phone_page, web, signed_in)
    web.send_sms(ANN, user.sms_number, "Hi, it's Ann from the book club")
    web.send_sms(BOB, user.sms_number, "Your parcel is waiting at the post office")
    phone_page.goto("/#/screener")
    expect(phone_page.locator(".screener-card")).to_have_count(2)
    screenshot(phone_page, "screener")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways: {width}px wide"
    # The three decisions sit side by side, thumb-sized, within the screen.
    bob = phone_page.get_by_role("group", name=BOB_SHOWN, exact=True)
    boxes = [
        bob.get_by_role("button", name=f"{action} {BOB_SHOWN}").bounding_box()
        for action in ("Allow", "Block", "Later")
    ]
    assert all(b is not None for b in boxes)
    assert len({round(b["y"]) for b in boxes if b}) == 1
    assert all(b["height"] >= 40 and b["x"] + b["width"] <= 375 for b in boxes if b)
    assert not [m for m in console if "Content Security Policy" in m], console
