"""An SMTP relay for tests: a real aiosmtpd server on 127.0.0.1 (a free port, on the
test's event loop) that records what it accepts.

Tests script its next answers to DATA with ``answer_next("451 4.3.0 try later")``;
an unscripted message is accepted (``250``). With ``users`` it requires AUTH
(PLAIN/LOGIN, allowed without TLS: the tests talk to it over loopback); with a
``tls_context`` it offers STARTTLS and requires it.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None

    def parsed(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class SmtpSink:
    users: dict[str, str] = field(default_factory=dict)
    tls_context: ssl.SSLContext | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    _script: deque[str] = field(default_factory=deque)
    _server: Any = None

    def answer_next(self, *replies: str) -> None:
        self._script.extend(replies)

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    # aiosmtpd handler hooks ---------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self._script:
            return self._script.popleft()
        auth = session.auth_data
        login = auth.decode() if isinstance(auth, bytes) else None
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                login=login,
            )
        )
        return "250 2.0.0 queued"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=data.login)
        return AuthResult(success=False, handled=False)

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)
        return self

    def _protocol(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; here it is loopback on purpose.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                self,
                hostname="relay.test",
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None,
                authenticator=self._authenticate if self.users else None,
                auth_required=bool(self.users),
                auth_require_tls=self.tls_context is not None,
            )

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
