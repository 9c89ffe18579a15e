"""Trusted senders and the address book in the web page (js/trusted.js) against a
real gateway: the number as the server reads it shown before saving, precise errors,
remove, block, and an address book uploaded, picked from and deleted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from inbox.errors import AddressError
from optin import trust
from tests.browser.conftest import Web, WebUser
from tests.browser.messages_support import call_api

SignIn = Callable[..., WebUser]
ADDRESS_LABEL = "Phone number or email address"
VCARD = (
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Grace Hopper\r\n"
    b"TEL;TYPE=CELL:(415) 555-0131\r\nEND:VCARD\r\n"
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alan Turing\r\nTEL:+44 20 7946 0132\r\n"
    b"EMAIL:alan@example.org\r\nEND:VCARD\r\n"
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada Byron\r\nTEL:415.555.0133\r\nEND:VCARD\r\n"
)


def open_trusted(page: Page, web: Web, signed_in: SignIn) -> WebUser:
    user = signed_in(page, web)
    page.get_by_role("link", name="Trusted senders").click()
    expect(page.get_by_role("heading", level=1, name="Trusted senders")).to_be_visible()
    return user


def entries(page: Page, verdict: str | None = None) -> list[str]:
    path = "/trusted-senders" if verdict is None else f"/trusted-senders?verdict={verdict}"
    answer = call_api(page, "GET", path)
    assert answer["status"] == 200, answer
    return [e["address"] for e in answer["body"]["items"]]


def section(page: Page, title: str) -> Locator:
    return page.get_by_role("region", name=title, exact=True)


def upload_address_book(page: Page) -> None:
    page.get_by_label("Address book file").set_input_files(
        {"name": "contacts.vcf", "mimeType": "text/vcard", "buffer": VCARD}
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text("Imported 3 contacts from contacts.vcf.")).to_be_visible()


def test_a_number_typed_any_way_shows_as_the_server_reads_it_before_saving(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    open_trusted(page, web, signed_in)

    page.get_by_label(ADDRESS_LABEL).fill("(415) 555-0100")

    reading = page.locator("#trust-address-reading")
    expect(reading).to_have_text("Will be saved as +1 415-555-0100 (+14155550100)")
    assert entries(page) == []  # shown, not saved
    page.get_by_role("button", name="Trust", exact=True).click()

    expect(section(page, "Trusted").get_by_text("+14155550100")).to_be_visible()
    expect(page.get_by_label(ADDRESS_LABEL)).to_have_value("")
    assert entries(page, "trusted") == ["+14155550100"]


@pytest.mark.parametrize("typed", ["555-01", "hello"])
def test_text_that_is_no_address_shows_the_reason_and_saves_nothing(
    page: Page, web: Web, signed_in: SignIn, typed: str
) -> None:
    with pytest.raises(AddressError) as expected:
        trust.parse_entry(typed, "US")
    reason = expected.value.reason
    open_trusted(page, web, signed_in)
    field = page.get_by_label(ADDRESS_LABEL)

    field.fill(typed)
    expect(page.locator("#trust-address-reading")).to_have_text(f"Not an address: {reason}")
    expect(field).to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Trust", exact=True).click()

    expect(page.get_by_role("alert").filter(has_text="Not saved")).to_have_text(
        f"Not saved: {reason}"
    )
    expect(section(page, "Trusted").get_by_text("Nobody yet.")).to_be_visible()
    assert entries(page) == []


def test_a_sender_is_blocked_unblocked_and_removed(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    open_trusted(page, web, signed_in)
    call_api(page, "POST", "/trusted-senders", {"address": "+14155550111"})
    page.get_by_label(ADDRESS_LABEL).fill("415 555 0122")
    expect(page.locator("#trust-address-reading")).to_contain_text("+1 415-555-0122")

    page.get_by_role("button", name="Block", exact=True).click()

    blocked = section(page, "Blocked")
    expect(blocked.get_by_text("+14155550122")).to_be_visible()
    assert entries(page, "blocked") == ["+14155550122"]
    expect(section(page, "Trusted").get_by_text("+14155550111")).to_be_visible()
    screenshot(page, "trusted")

    blocked.get_by_role("button", name="Trust +14155550122").click()
    expect(section(page, "Trusted").get_by_text("+14155550122")).to_be_visible()
    assert entries(page, "blocked") == []

    page.get_by_role("button", name="Remove +14155550111").click()
    expect(page.locator("#toast")).to_contain_text("Removed +14155550111")
    expect(section(page, "Trusted").get_by_text("+14155550111")).to_have_count(0)
    assert entries(page) == ["+14155550122"]


def test_contacts_picked_from_an_uploaded_address_book_are_trusted(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    open_trusted(page, web, signed_in)
    upload_address_book(page)
    table = page.locator("table.contacts-table tbody tr")
    expect(table).to_have_count(3)
    expect(table.nth(1)).to_contain_text("alan@example.org")

    page.get_by_label("Select Grace Hopper").check()
    page.get_by_label("Select Alan Turing").check()
    page.get_by_role("button", name="Trust selected").click()

    trusted = section(page, "Trusted")
    for address in ("+14155550131", "+442079460132", "alan@example.org"):
        expect(trusted.get_by_text(address)).to_be_visible()
    assert sorted(entries(page, "trusted")) == ["+14155550131", "+442079460132", "alan@example.org"]
    sources = {e["source"] for e in call_api(page, "GET", "/trusted-senders")["body"]["items"]}
    assert sources == {"contacts"}


def test_entries_an_upload_could_not_use_are_listed_with_their_line_and_reason(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    with pytest.raises(AddressError) as expected:
        trust.parse_entry("555-01", "US")
    open_trusted(page, web, signed_in)
    page.get_by_label("Address book file").set_input_files(
        {
            "name": "export.csv",
            "mimeType": "text/csv",
            "buffer": b"Name,Phone\r\nGrace Hopper,(415) 555-0131\r\nTypo,555-01\r\n",
        }
    )
    page.get_by_role("button", name="Upload").click()

    expect(page.get_by_text("Imported 1 contact from export.csv.")).to_be_visible()
    expect(page.locator(".contacts-rejected li")).to_have_text(
        [f"Line 3: Typo, 555-01: {expected.value.reason}"]
    )
    expect(page.locator("table.contacts-table tbody tr")).to_have_count(1)


def test_deleting_the_address_book_asks_first_then_removes_every_contact(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    open_trusted(page, web, signed_in)
    upload_address_book(page)
    page.get_by_role("button", name="Delete address book").click()
    confirm = page.get_by_role("group", name="Delete all 3 contacts of your address book?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(page.locator("table.contacts-table tbody tr")).to_have_count(3)

    page.get_by_role("button", name="Delete address book").click()
    confirm.get_by_role("button", name="Delete", exact=True).click()

    expect(page.get_by_text("No address book uploaded.")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("Deleted 3 contacts.")
    contacts: dict[str, Any] = call_api(page, "GET", "/contacts")
    assert contacts["body"]["items"] == []


def test_the_trusted_senders_page_fits_a_phone_screen(
    phone_page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    console: list[str] = []
    phone_page.on("console", lambda message: console.append(message.text))
    open_trusted(phone_page, web, signed_in)
    field = phone_page.get_by_label(ADDRESS_LABEL)
    field.fill("415 555 0111")
    phone_page.get_by_role("button", name="Trust", exact=True).click()
    expect(section(phone_page, "Trusted").get_by_text("+14155550111")).to_be_visible()
    upload_address_book(phone_page)
    field.fill("+44 20 7946 0018")
    expect(phone_page.locator("#trust-address-reading")).to_contain_text("+44 20 7946 0018")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways: {width}px wide"
    screenshot(phone_page, "trusted")
    assert not [m for m in console if "Content Security Policy" in m], console
