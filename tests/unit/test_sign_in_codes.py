"""Sign-in code pieces without a database: codes, their hashes, the throttles."""

from __future__ import annotations

import io
from datetime import date

import pytest

from bridges.codes import ConsoleCodeSender, code_text
from gateway.accounts import SendTiming, Throttle
from inbox.verification import (
    CodeHasher,
    CorruptVerification,
    SignupForm,
    looks_like_code,
    new_code,
)


def test_codes_are_six_digits() -> None:
    codes = {new_code() for _ in range(200)}
    assert all(looks_like_code(c) for c in codes)
    assert len(codes) > 190  # random, not a counter


@pytest.mark.parametrize("text", ["12345", "1234567", "12345a", "١٢٣٤٥٦", " 12345", 123456, None])
def test_anything_else_is_not_a_code(text: object) -> None:
    assert not looks_like_code(text)


def test_a_code_hash_matches_only_its_code() -> None:
    hasher = CodeHasher()
    code_hash = hasher.hash("123456")
    assert code_hash.startswith("$argon2id$") and "123456" not in code_hash
    assert hasher.matches(code_hash, "123456")
    assert not hasher.matches(code_hash, "123457")
    assert not hasher.matches("not a hash", "123456")


def test_a_signup_form_survives_its_storage() -> None:
    form = SignupForm("Ada", "Lovelace", date(1990, 12, 10), "FRIEND")
    assert SignupForm.from_json(form.to_json()) == form


@pytest.mark.parametrize("raw", [None, "", "[]", '{"first_name": "A"}', "{bad"])
def test_an_unreadable_signup_form_is_reported(raw: str | None) -> None:
    with pytest.raises(CorruptVerification):
        SignupForm.from_json(raw)


def test_the_console_sender_prints_one_line_per_code() -> None:
    out = io.StringIO()
    ConsoleCodeSender(out).send_code("+14155550100", "042042", 10)
    assert out.getvalue() == "OptMsg code for +14155550100: 042042\n"


def test_the_sms_text_names_the_code_and_its_lifetime() -> None:
    text = code_text("042042", 10)
    assert "042042" in text and "10 min" in text


def test_a_throttle_is_due_once_per_interval() -> None:
    now = [0.0]
    throttle = Throttle(60, clock=lambda: now[0])
    assert throttle.due("a") and not throttle.due("a") and throttle.due("b")
    now[0] = 61
    assert throttle.due("a")


def test_a_throttle_forgets_the_oldest_keys_first() -> None:
    throttle = Throttle(60, max_keys=2, clock=lambda: 0.0)
    for key in ("a", "b", "c"):
        throttle.due(key)
    assert throttle.due("a")  # forgotten, so due again
    assert not throttle.due("c")


def test_send_timing_follows_the_measured_sends() -> None:
    timing = SendTiming(0.3)
    for _ in range(50):
        timing.record(0.1)
    assert timing.estimate_s == pytest.approx(0.1, abs=0.01)
    assert 0.07 <= timing.padding() <= 0.13
