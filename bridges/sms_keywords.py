"""SMS keywords: a counterpart's STOP/START/HELP, and a user's commands to their account.

Pure parsing; what a keyword or command does is decided by the gateway. Carriers and
Twilio treat a message whose *whole body* is an opt-out keyword, in any case, as that
keyword (CTIA guidelines), so matching is on the whole trimmed body, never a prefix:
"stop by later" is a message, not an opt-out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Keyword(enum.StrEnum):
    """A counterpart's keyword, as recorded on the inbound message."""

    STOP = "stop"
    START = "start"
    HELP = "help"


_STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
_START = frozenset({"START", "UNSTOP", "YES"})
_HELP = frozenset({"HELP", "INFO"})
# Twilio Advanced Opt-Out sends its own classification in OptOutType.
_OPT_OUT_TYPE = {"STOP": Keyword.STOP, "START": Keyword.START, "HELP": Keyword.HELP}


def _normalised(body: str) -> str:
    return " ".join(body.split()).upper().strip(".!")


def keyword_of(body: str, opt_out_type: str | None = None) -> Keyword | None:
    """The opt-out keyword a counterpart's message is, if any."""
    if opt_out_type:
        found = _OPT_OUT_TYPE.get(opt_out_type.strip().upper())
        if found is not None:
            return found
    word = _normalised(body)
    if word in _STOP:
        return Keyword.STOP
    if word in _START:
        return Keyword.START
    if word in _HELP:
        return Keyword.HELP
    return None


class CommandName(enum.StrEnum):
    TRUST = "trust"
    BLOCK = "block"
    LIST = "list"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class Command:
    """A user's command: ``argument`` is the sender as typed (TRUST/BLOCK), else ''."""

    name: CommandName
    argument: str = ""


class CommandError(ValueError):
    """Raised when a message starts with a command word but is not a usable command
    (TRUST without a number); the message says how to write it."""


_COMMANDS = {command.value: command for command in CommandName}
USAGE = "Commands: TRUST <number or email>, BLOCK <number or email>, LIST, HELP"
MAX_ARGUMENT = 254


def parse_command(body: str) -> Command | None:
    """The command a user's message is, None when it is not one. Raises
    CommandError for a command word used wrongly."""
    words = body.strip().split(None, 1)
    if not words:
        return None
    # A dict lookup: nearly every message is not a command, and the enum's
    # ValueError cost more than the rest of this function on the webhook path.
    name = _COMMANDS.get(words[0].lower())
    if name is None:
        return None
    argument = words[1].strip() if len(words) > 1 else ""
    if name in (CommandName.TRUST, CommandName.BLOCK):
        if not argument:
            raise CommandError(f"{name.upper()} needs a number or email address. {USAGE}")
        if len(argument) > MAX_ARGUMENT:
            raise CommandError(f"that is too long to be a number or email address. {USAGE}")
        return Command(name, argument)
    if argument:
        # "List of groceries" is a message to oneself, not LIST.
        return None
    return Command(name)


def twiml_message(text: str) -> bytes:
    """A TwiML reply carrying ``text`` (escaped: it may quote what the sender typed)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escaped}</Message></Response>'
    ).encode()
