"""Signing in, signing up and signing out through the web page: the phone number in
any spelling, the code sent by SMS (read from the fake Twilio), wrong codes and
limits shown from the API's problem details. Signing in with the keyboard alone, with
a visible focus ring at every step, is part of the keyboard path in
test_accessibility.py."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Web, WebUser

SIGNED_IN = re.compile(r"#/inbox$")
SIGNED_OUT = re.compile(r"#/signin$")
TOKEN_KEY = "optmsg.token"


def request_code(page: Page, phone: str) -> None:
    page.goto("/")
    page.get_by_label("Phone number").fill(phone)
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_label("Code", exact=True)).to_be_visible()


def api_status(web: Web, path: str, token: str) -> int:
    """The status of a GET on the client API with ``token``."""
    request = urllib.request.Request(
        web.base_url + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_a_user_signs_in_with_the_code_sent_to_their_number_typed_any_way(
    page: Page, web: Web, screenshot: Callable[[Page, str], None]
) -> None:
    user = web.create_user("+14155550123")
    page.goto("/")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    screenshot(page, "signin")
    request_code(page, "(415) 555-0123")
    page.get_by_label("Code", exact=True).fill(web.last_code(user.phone))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(SIGNED_IN)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")


def test_the_code_sms_goes_to_the_users_own_number_from_the_service_number(
    page: Page, web: Web
) -> None:
    user = web.create_user()
    request_code(page, user.phone)
    (sent,) = web.sent_messages()
    assert (sent.to, sent.from_) == (user.phone, "+14155550000")


def test_a_wrong_code_says_how_many_attempts_are_left(page: Page, web: Web) -> None:
    user = web.create_user()
    request_code(page, user.phone)
    right = web.last_code(user.phone)
    wrong = "000000" if right != "000000" else "111111"
    page.get_by_label("Code", exact=True).fill(wrong)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"code is wrong; 4 attempt"))
    expect(page).not_to_have_url(SIGNED_IN)
    # The same form takes the right code next.
    page.get_by_label("Code", exact=True).fill(right)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(SIGNED_IN)


@pytest.mark.parametrize("web_settings", [{"OPTMSG_AUTH__CODES_PER_NUMBER": "1"}])
def test_too_many_code_requests_show_when_to_try_again(page: Page, web: Web) -> None:
    user = web.create_user()
    request_code(page, user.phone)
    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"too many code requests for this number; try again in \d+ seconds")
    )


def test_a_number_that_is_not_a_phone_number_is_refused_with_the_reason(
    page: Page, web: Web
) -> None:
    page.goto("/")
    page.get_by_label("Phone number").fill("12")
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"^phone: "))
    assert web.sent_messages() == []


def test_a_new_user_creates_an_account_and_is_signed_in(page: Page, web: Web) -> None:
    page.goto("/")
    page.get_by_role("button", name="Create an account").click()
    expect(page.get_by_role("heading", level=1, name="Create an account")).to_be_visible()
    page.get_by_label("First name").fill("Grace")
    page.get_by_label("Last name").fill("Hopper")
    page.get_by_label("Date of birth").fill("1986-12-09")
    page.get_by_label("Phone number").fill("+1 415 555 0177")
    page.get_by_role("button", name="Send code").click()
    page.get_by_label("Code", exact=True).fill(web.last_code("+14155550177"))
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(SIGNED_IN)
    expect(page.locator("#toast")).to_contain_text("Welcome, Grace")
    users = web.cli("users", "list")
    names = [(u["first_name"], u["phone"]) for u in users["items"]]
    assert names == [("Grace", "+14155550177")]


def test_signing_out_revokes_the_token_and_returns_to_sign_in(
    page: Page, web: Web, signed_in: Callable[[Page, Web], WebUser]
) -> None:
    signed_in(page, web)
    token = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    assert api_status(web, "/account", token) == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(SIGNED_OUT)
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    assert api_status(web, "/account", token) == 401


def test_a_signed_out_visitor_is_sent_to_sign_in_from_any_view(page: Page, web: Web) -> None:
    page.goto("/#/account")
    expect(page).to_have_url(SIGNED_OUT)
    expect(page.get_by_label("Phone number")).to_be_visible()


def test_the_sign_in_page_fits_a_phone_screen(
    phone_page: Page, web: Web, screenshot: Callable[[Page, str], None]
) -> None:
    phone_page.goto("/")
    expect(phone_page.get_by_label("Phone number")).to_be_visible()
    screenshot(phone_page, "signin")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    box = phone_page.get_by_role("button", name="Send code").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 375
