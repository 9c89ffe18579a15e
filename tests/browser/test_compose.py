"""Composing in the web page (js/compose.js): drafts saved and listed, sending, the
sent message's delivery status following Twilio's callbacks live, and the API's
refusals shown next to the field they are about."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import Web, WebUser
from tests.browser.messages_support import call_api, png, sign_in_live, without_toast

SignIn = Callable[..., WebUser]
RECIPIENT = "+14155550177"
RECIPIENT_TYPED = "(415) 555-0177"


def write_sms(page: Page, to: str, text: str) -> None:
    page.goto("/#/compose")
    expect(page.get_by_role("heading", level=1)).to_have_text("New message")
    page.get_by_label("To", exact=True).fill(to)
    page.get_by_label("Message", exact=True).fill(text)


def test_a_saved_sms_draft_is_listed_with_its_normalised_number(
    page: Page, web: Web, signed_in: SignIn, screenshot: Callable[[Page, str], None]
) -> None:
    sign_in_live(page, web, signed_in)
    write_sms(page, RECIPIENT_TYPED, "See you at noon")
    expect(page.locator("#compose-to-reading")).to_have_text("Will be sent to +1 415-555-0177")

    page.get_by_role("button", name="Save draft").click()

    expect(page.get_by_text(f"Draft saved, to {RECIPIENT}.")).to_be_visible()
    expect(page.get_by_label("To", exact=True)).to_have_value(RECIPIENT)
    draft = page.locator("li.draft-item").filter(has_text="See you at noon")
    expect(draft).to_contain_text(RECIPIENT)
    expect(page).to_have_url(re.compile(r"#/compose/msg_"))
    drafts = call_api(page, "GET", "/drafts")["body"]["items"]
    assert [(d["to"], d["text"]) for d in drafts] == [([RECIPIENT], "See you at noon")]
    without_toast(page)
    screenshot(page, "compose")


def test_a_sent_sms_reaches_twilio_and_its_delivery_status_updates_live(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(page, web, signed_in)
    write_sms(page, RECIPIENT_TYPED, "On my way")
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("li.draft-item").filter(has_text="On my way")).to_be_visible()

    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"To {RECIPIENT}")
    status = page.locator(".status-box")
    # The fake Twilio answers "queued": the send job has handed the message over.
    expect(status).to_have_text("Status: Queued")
    sent = [m for m in web.sent_messages() if m.to == RECIPIENT]
    assert [m.body for m in sent] == ["On my way"]
    page.evaluate("window.notReloaded = true")
    web.status_callback(sent[0].sid, "sent")
    expect(status).to_have_text("Status: Sent")
    web.status_callback(sent[0].sid, "delivered")
    expect(status).to_have_text("Status: Delivered")
    assert page.evaluate("window.notReloaded") is True
    assert call_api(page, "GET", "/drafts")["body"]["items"] == []


def test_an_invalid_number_is_shown_next_to_the_to_field(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(page, web, signed_in)
    write_sms(page, "12", "Hello?")

    page.get_by_role("button", name="Save draft").click()

    to = page.get_by_label("To", exact=True)
    expect(to).to_have_attribute("aria-invalid", "true")
    error = page.locator("#compose-to-error")
    expect(error).to_contain_text("phone number")
    assert "compose-to-error" in (to.get_attribute("aria-describedby") or "")
    expect(page.get_by_text("No drafts.")).to_be_visible()


def test_a_recipient_who_texted_stop_is_refused_next_to_the_to_field(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    user = sign_in_live(page, web, signed_in)
    web.send_sms(RECIPIENT, user.sms_number, "STOP")
    write_sms(page, RECIPIENT, "Please answer")

    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.locator("#compose-to-error")).to_contain_text("texted STOP")
    # Still composing: the refused message stays a draft, listed below the form.
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit draft")
    assert all(m.body != "Please answer" for m in web.sent_messages())
    expect(page.locator("li.draft-item").filter(has_text="Please answer")).to_be_visible()


def test_an_email_draft_keeps_its_subject_and_recipients(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(page, web, signed_in)
    page.goto("/#/compose")
    page.get_by_label("Email").check()
    expect(page.get_by_label("Subject")).to_be_visible()
    page.get_by_label("To", exact=True).fill("ann@example.com, Bob@Example.COM")
    page.get_by_label("Subject").fill("Minutes")
    page.get_by_label("Message", exact=True).fill("Attached are the minutes.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_text("Draft saved, to ann@example.com, Bob@example.com.")).to_be_visible()

    page.reload()

    expect(page.get_by_role("heading", level=1)).to_have_text("Edit draft")
    expect(page.get_by_label("Subject")).to_have_value("Minutes")
    expect(page.get_by_label("To", exact=True)).to_have_value("ann@example.com, Bob@example.com")
    expect(page.get_by_label("Email")).to_be_checked()
    expect(page.get_by_label("Email")).to_be_disabled()


def test_a_picture_attached_to_an_sms_draft_goes_out_as_mms(
    page: Page, web: Web, signed_in: SignIn
) -> None:
    sign_in_live(page, web, signed_in)
    write_sms(page, RECIPIENT, "Look at this")
    files = page.get_by_label("Attach files")
    files.set_input_files(
        [
            {"name": "one.png", "mimeType": "image/png", "buffer": png(8, 8)},
            {"name": "two.png", "mimeType": "image/png", "buffer": png(9, 9)},
        ]
    )
    attached = page.get_by_role("list", name="Attached files")
    expect(attached.get_by_role("listitem")).to_have_count(2)
    page.get_by_role("button", name="Remove two.png").click()
    expect(attached.get_by_role("listitem")).to_have_text([re.compile(r"^one\.png")])

    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.locator(".status-box")).to_have_text("Status: Queued")
    (sent,) = [m for m in web.sent_messages() if m.to == RECIPIENT]
    assert sent.body == "Look at this"
    assert len(sent.form.get("MediaUrl", [])) == 1
