"""Conversation keys: the email thread root rule and its bounded canonical form."""

from __future__ import annotations

import hashlib

from inbox.conversations import (
    EMAIL_PREFIX,
    MAX_KEY,
    canonical_message_id,
    email_key,
    email_thread_key,
    kind_of,
)


def key_of(value: str) -> str:
    return EMAIL_PREFIX + hashlib.sha256(value.encode()).hexdigest()


def test_the_first_reference_is_the_thread_root() -> None:
    found = email_thread_key("c@x", "b@x", ("a@x", "b@x"), fallback="raw")
    assert found == key_of("a@x")


def test_in_reply_to_is_the_root_without_references() -> None:
    assert email_thread_key("c@x", "b@x", (), fallback="raw") == key_of("b@x")


def test_a_message_without_either_starts_its_own_thread() -> None:
    assert email_thread_key("c@x", None, (), fallback="raw") == key_of("c@x")


def test_a_message_without_any_id_is_keyed_by_its_fallback() -> None:
    assert email_thread_key(None, None, (), fallback="sha256:abc") == key_of("sha256:abc")


def test_blank_ids_are_skipped() -> None:
    assert email_thread_key("c@x", " <> ", ("  ",), fallback="raw") == key_of("c@x")


def test_angle_brackets_whitespace_and_case_do_not_split_a_thread() -> None:
    assert email_key("<Root@Example.COM>") == email_key(" root@example.com\t")
    assert canonical_message_id("<A B@x>") == "ab@x"


def test_a_hostile_reference_gives_a_key_of_fixed_size() -> None:
    huge = "<" + "x" * 100_000 + "\r\n\x00@evil>"
    key = email_thread_key(None, None, (huge,), fallback="raw")
    assert len(key) == len(EMAIL_PREFIX) + 64 <= MAX_KEY
    assert key.isascii() and "\n" not in key


def test_undecodable_text_in_an_id_still_gives_a_key() -> None:
    assert email_key("\udcff@x").startswith(EMAIL_PREFIX)


def test_kind_follows_the_key() -> None:
    assert kind_of(email_key("a@x")) == "email"
    assert kind_of("+14155550100") == "sms"
    assert kind_of("alpha:MYBANK") == "sms"
