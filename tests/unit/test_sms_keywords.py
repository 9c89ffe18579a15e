"""SMS keywords and user commands: what a whole message body means."""

from __future__ import annotations

import pytest

from bridges.sms_keywords import (
    Command,
    CommandError,
    CommandName,
    Keyword,
    keyword_of,
    parse_command,
    twiml_message,
)


@pytest.mark.parametrize(
    "body", ["STOP", "stop", " Stop ", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "stop."]
)
def test_opt_out_words_are_stop_in_any_case(body: str) -> None:
    assert keyword_of(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_opt_in_words_are_start(body: str) -> None:
    assert keyword_of(body) is Keyword.START


@pytest.mark.parametrize("body", ["stop by later", "please stop", "STOP IT", "", "yes please"])
def test_a_keyword_must_be_the_whole_message(body: str) -> None:
    assert keyword_of(body) is None


def test_twilios_opt_out_type_wins_over_the_body() -> None:
    assert keyword_of("arrête", "STOP") is Keyword.STOP
    assert keyword_of("whatever", "help") is Keyword.HELP


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("TRUST (415) 555-0100", Command(CommandName.TRUST, "(415) 555-0100")),
        ("block  ada@example.com ", Command(CommandName.BLOCK, "ada@example.com")),
        ("list", Command(CommandName.LIST)),
        ("Help", Command(CommandName.HELP)),
    ],
)
def test_commands_are_parsed_in_any_case(body: str, command: Command) -> None:
    assert parse_command(body) == command


@pytest.mark.parametrize("body", ["hello", "List of groceries", "", "trusty friend"])
def test_ordinary_text_is_not_a_command(body: str) -> None:
    assert parse_command(body) is None


def test_trust_without_a_number_says_how_to_write_it() -> None:
    with pytest.raises(CommandError, match="TRUST needs a number"):
        parse_command("TRUST")


def test_twiml_reply_escapes_what_the_sender_typed() -> None:
    body = twiml_message("Could not read '<b>&'").decode()
    assert "<Message>Could not read '&lt;b&gt;&amp;'</Message>" in body
