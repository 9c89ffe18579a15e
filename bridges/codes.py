"""Delivering sign-in codes by SMS.

A :class:`CodeSender` is called synchronously (from a worker thread) while the
client waits, so that a code is never written to a job queue or a broker: it exists
in the verification's hash, in this call, and in the SMS. Senders never log a code.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol, TextIO

from bridges.errors import BridgeError
from bridges.twilio_rest import SendFailed, TwilioSender


class CodeNotSent(BridgeError):
    """Raised by :meth:`CodeSender.send_code` when the code could not be handed to
    the provider (refused, unreachable, not configured). The message is safe to log
    and never contains the code."""

    status = 503


class CodeSender(Protocol):
    def send_code(self, phone: str, code: str, ttl_minutes: int) -> None:
        """Send ``code`` to ``phone`` (E.164); :class:`CodeNotSent` when it was not."""


def code_text(code: str, ttl_minutes: int) -> str:
    return (
        f"Your OptMsg code is {code}. It expires in {ttl_minutes} min. "
        "Never share it: OptMsg will never ask you for it."
    )


class ConsoleCodeSender:
    """Development only: prints each code to the gateway's standard error instead of
    sending it. Anyone who reads that output can sign in as anyone."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send_code(self, phone: str, code: str, ttl_minutes: int) -> None:
        stream = self._stream or sys.stderr
        with self._lock:  # one whole line per code, also from several threads
            print(f"OptMsg code for {phone}: {code}", file=stream, flush=True)


class TwilioCodeSender:
    """Sends codes as SMS from the gateway's service number through Twilio."""

    def __init__(self, sender: TwilioSender, from_number: str) -> None:
        self._sender = sender
        self._from = from_number

    def send_code(self, phone: str, code: str, ttl_minutes: int) -> None:
        try:
            self._sender.send(from_=self._from, to=phone, body=code_text(code, ttl_minutes))
        except SendFailed as exc:
            # Twilio's reason never contains the body (the code), only why it refused.
            raise CodeNotSent(f"the code could not be sent: {exc.reason}") from None

    def close(self) -> None:
        self._sender.close()
