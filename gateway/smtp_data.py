"""Reading an SMTP DATA section in bulk instead of one line at a time.

aiosmtpd (1.4.6) reads DATA with one ``readuntil(b"\\r\\n")`` per line and a debug
log call, list append and join per line: for an 8 KB message of ~150 lines that is
most of what the server spends on the message, and for a 200 KB attachment
(~3,900 base64 lines) nearly all of it (docs/benchmarks.md, "Email path").

:func:`read_data` asks the stream for everything up to the next ``.\\r\\n`` instead,
which the stream finds with C-level searches; only lines that end in a dot make it
stop early. The result is the one aiosmtpd would produce, which the protocol tests
and a property test against a line-by-line reader (tests/unit/test_smtp_data.py)
pin down:

- DATA ends only at a line that is exactly ``.`` (``CRLF . CRLF``, or ``. CRLF``
  straight after the 354): a bare CR or LF before or after the dot is content, so
  SMTP smuggling sequences cannot end the message early.
- Lines are what lies between CRLFs (a bare LF does not end a line), counted as
  sent: transparency dot included, CRLF excluded.
- Over ``max_bytes`` (the octets sent, dots and CRLFs included, the final
  ``.CRLF`` not) or a line over ``max_line``: the rest is read and discarded up to
  the end of DATA, so that the reply is in step with the client (RFC 5321 4.2.5),
  and the first of the two limits reached is reported.
- A leading dot is removed from every line (RFC 5321 4.5.2).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

_END = b".\r\n"
_CRLF = b"\r\n"


class DataError(enum.Enum):
    """Why a DATA section was read to its end but not kept."""

    TOO_MUCH = "too much mail data"
    LINE_TOO_LONG = "a line over the length limit"


@dataclass(frozen=True, slots=True)
class DataResult:
    """The message with dot-stuffing undone, or the limit it broke (content ``b""``)."""

    content: bytes
    error: DataError | None = None


async def read_data(reader: asyncio.StreamReader, *, max_bytes: int, max_line: int) -> DataResult:
    """Read one DATA section from ``reader``, up to and including its ending line.

    Raises ``asyncio.IncompleteReadError`` when the stream ends first (the client
    went away), like any read from the stream.
    """
    kept = bytearray()
    received = 0
    # The two octets before the unread data: DATA starts at the beginning of a line.
    before = _CRLF
    checked = 0  # kept[:checked] is whole lines, each within max_line
    error: DataError | None = None
    while True:
        try:
            chunk = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            # No ".CRLF" within the stream's limit: take what was searched and go on
            # (a separator straddling the cut stays in the buffer and is found next).
            chunk = await reader.readexactly(max(exc.consumed, 1))
            ended = False
        else:
            head = chunk[:-3]
            ended = (before + head[-2:])[-2:] == _CRLF
            if ended:
                chunk = head
        received += len(chunk)
        before = (before + chunk[-2:])[-2:]
        if error is None:
            if received > max_bytes:
                error = DataError.TOO_MUCH
            else:
                kept += chunk
                if not _lines_fit(kept, checked, max_line):
                    error = DataError.LINE_TOO_LONG
                else:
                    last = kept.rfind(_CRLF, checked)
                    if last >= 0:
                        checked = last + 2
            if error is not None:
                kept = bytearray()  # drop it now: only the end of DATA is still wanted
        if ended:
            break
    if error is not None:
        return DataResult(b"", error)
    content = bytes(kept)
    if content.startswith(b"."):
        content = content[1:]
    return DataResult(content.replace(b"\r\n.", _CRLF))


def _lines_fit(kept: bytearray, checked: int, max_line: int) -> bool:
    """Whether every line of ``kept`` from ``checked`` on is within ``max_line``,
    the unfinished last one included (it cannot fit once it is longer than
    ``max_line`` and a CR that may start its CRLF)."""
    if len(kept) - checked <= max_line:
        return True  # nothing after the last check is long enough to matter
    last = kept.rfind(_CRLF, checked)
    if len(kept) - (checked if last < 0 else last + 2) > max_line + 1:
        return False
    if last < 0:
        return True
    return all(len(line) <= max_line for line in bytes(kept[checked:last]).split(_CRLF))
