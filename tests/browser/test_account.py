"""The account view: profile, signed-in devices, the authentication log, the data
export and deleting the account, each through the page and checked against the API."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Web, WebUser
from tests.browser.test_signin import SIGNED_OUT, TOKEN_KEY, api_status

SignedIn = Callable[[Page, Web], WebUser]


def dismiss_toast(page: Page) -> None:
    """Empty the toast, so that a screenshot shows the view under it."""
    page.locator("#toast").evaluate("el => el.replaceChildren()")


def open_account(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", level=1, name="Account")).to_be_focused()


def test_the_profile_shows_the_account_and_saves_a_changed_name(
    page: Page, web: Web, signed_in: SignedIn, screenshot: Callable[[Page, str], None]
) -> None:
    user = signed_in(page, web)
    open_account(page)
    profile = page.get_by_role("region", name="Profile")
    expect(profile).to_contain_text(user.phone)
    expect(profile).to_contain_text(user.sms_number)
    expect(profile).to_contain_text(user.email_address)
    dismiss_toast(page)
    screenshot(page, "account")
    page.get_by_label("First name").fill("Augusta Ada")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#toast")).to_have_text("Profile saved.")
    expect(profile.get_by_role("definition").first).to_have_text("Augusta Ada Lovelace")
    (stored,) = [u for u in web.cli("users", "list")["items"] if u["id"] == user.id]
    assert stored["first_name"] == "Augusta Ada"


def test_a_new_mobile_number_is_proved_with_a_code_sent_to_it(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    open_account(page)
    page.get_by_label("New mobile number").fill("(415) 555-0188")
    page.get_by_role("button", name="Send code to the new number").click()
    page.get_by_label("Code sent to the new number").fill(web.last_code("+14155550188"))
    page.get_by_role("button", name="Change number").click()
    expect(page.locator("#toast")).to_have_text("Your mobile number is now +14155550188.")
    expect(page.get_by_role("region", name="Profile")).to_contain_text("+14155550188")
    (stored,) = [u for u in web.cli("users", "list")["items"] if u["id"] == user.id]
    assert stored["phone"] == "+14155550188"


def test_the_account_view_fits_a_phone_screen(
    phone_page: Page, web: Web, signed_in: SignedIn, screenshot: Callable[[Page, str], None]
) -> None:
    signed_in(phone_page, web)
    open_account(phone_page)
    expect(phone_page.get_by_role("region", name="Sign-in history")).to_be_visible()
    dismiss_toast(phone_page)
    screenshot(phone_page, "account")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0


def test_another_device_is_revoked_with_one_click_and_its_token_stops_working(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    other = web.cli("tokens", "create", user.id, "--name", "Phone app")
    open_account(page)
    devices = page.get_by_role("list", name="Devices")
    expect(devices.get_by_role("listitem")).to_have_count(2)
    expect(devices).to_contain_text("Phone app")
    expect(devices).to_contain_text("(this device)")
    devices.get_by_role("button", name="Revoke Phone app").click()
    expect(page.locator("#toast")).to_have_text("Phone app is signed out.")
    expect(devices.get_by_role("listitem")).to_have_count(1)
    assert api_status(web, "/account", other["token"]) == 401
    assert api_status(web, "/account", page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")) == 200


def test_revoking_this_device_asks_first_then_signs_out(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    signed_in(page, web)
    token = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    open_account(page)
    page.get_by_role("button", name=re.compile(r"^Revoke .*\(this device\)")).click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("signs you out of this browser"))
    page.get_by_role("button", name="Cancel").click()
    assert api_status(web, "/account", token) == 200
    page.get_by_role("button", name=re.compile(r"^Revoke .*\(this device\)")).click()
    page.get_by_role("button", name="Yes, sign out here").click()
    expect(page).to_have_url(SIGNED_OUT)
    assert api_status(web, "/account", token) == 401


# The event stream re-checks its token every events.keepalive_s: 1 s here.
@pytest.mark.parametrize(
    "web_settings", [{"OPTMSG_AUTH__TOKEN_CACHE_S": "0", "OPTMSG_EVENTS__KEEPALIVE_S": "1"}]
)
def test_an_open_page_notices_its_revocation_through_the_event_stream(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    token_id = web.cli("tokens", "list", user.id)["items"][0]["id"]
    web.cli("tokens", "revoke", token_id)
    # No click, no reload: the ended stream's reconnect gets a 401.
    expect(page).to_have_url(SIGNED_OUT)
    assert page.evaluate(f"localStorage.getItem({json.dumps(TOKEN_KEY)})") is None


# The gateway remembers a token's owner for auth.token_cache_s; off here, so that the
# operator's revocation applies to the very next request.
@pytest.mark.parametrize("web_settings", [{"OPTMSG_AUTH__TOKEN_CACHE_S": "0"}])
def test_a_token_revoked_elsewhere_sends_the_page_back_to_sign_in(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    token_id = web.cli("tokens", "list", user.id)["items"][0]["id"]
    # Leave the page while revoking: an open page may notice by itself first (its
    # event stream's periodic token check) and would then have shown the toast
    # already. The token stays in the browser's storage for the next visit.
    page.goto("about:blank")
    web.cli("tokens", "revoke", token_id)
    page.goto(web.base_url + "/#/inbox")
    expect(page).to_have_url(SIGNED_OUT)
    expect(page.locator("#toast")).to_contain_text("sign in again")


def test_the_authentication_log_shows_the_sign_in_and_a_wrong_code(page: Page, web: Web) -> None:
    user = web.create_user()
    page.goto("/")
    page.get_by_label("Phone number").fill(user.phone)
    page.get_by_role("button", name="Send code").click()
    right = web.last_code(user.phone)
    page.get_by_label("Code", exact=True).fill("000000" if right != "000000" else "111111")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("code is wrong")
    page.get_by_label("Code", exact=True).fill(right)
    page.get_by_role("button", name="Sign in").click()
    open_account(page)
    rows = page.get_by_role("region", name="Sign-in history").get_by_role("row")
    expect(rows).to_have_count(3)  # the header and two attempts, newest first
    expect(rows.nth(1)).to_contain_text("Signed in")
    expect(rows.nth(1)).to_contain_text("Web: Chrome on Linux")
    expect(rows.nth(1)).to_contain_text("127.0.0.1")
    expect(rows.nth(2)).to_contain_text("Wrong code")


def test_an_export_is_prepared_and_downloads_as_a_zip_with_the_account(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    open_account(page)
    page.get_by_role("button", name="Export my data").click()
    expect(page.get_by_text("Your export is ready to download.")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download export").click()
    download = info.value
    assert re.fullmatch(r"optmsg-export-\d{4}-\d{2}-\d{2}\.zip", download.suggested_filename)
    path = download.path()
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        account = json.loads(archive.read("account.json"))
    assert account["profile"]["id"] == user.id
    assert account["profile"]["phone"] == user.phone


def test_deleting_the_account_needs_the_typed_words_then_signs_out_for_good(
    page: Page, web: Web, signed_in: SignedIn
) -> None:
    user = signed_in(page, web)
    token = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    open_account(page)
    button = page.get_by_role("button", name="Delete my account")
    expect(button).to_be_disabled()
    page.get_by_label('Type "delete my account" to confirm').fill("delete my")
    expect(button).to_be_disabled()
    page.get_by_label('Type "delete my account" to confirm').fill("delete my account")
    button.click()
    expect(page).to_have_url(SIGNED_OUT)
    expect(page.locator("#toast")).to_have_text("Your account and all its data have been deleted.")
    assert api_status(web, "/account", token) == 401
    assert user.id not in [u["id"] for u in web.cli("users", "list")["items"]]
