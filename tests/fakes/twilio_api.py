"""A fake of Twilio's REST API (the 2010-04-01 Messages resource) on 127.0.0.1.

It speaks the shapes the gateway uses: ``POST .../Messages.json`` (form-encoded,
HTTP Basic auth with the account SID and auth token) answered ``201`` with a
message resource, Twilio's error JSON (``code``, ``message``, ``more_info``,
``status``) for refusals, and ``DELETE .../Messages/{sid}/Media/{sid}.json``
answered ``204``, and ``DELETE .../Messages/{sid}.json`` answered ``204`` for a
message it knows (one it created, or one a test registered with
:meth:`FakeTwilio.add_message`, such as an inbound SMS) and ``404`` (code 20404)
for any other.

Tests script what the next Messages requests (create or delete) get: ``fail_next(500)``,
``fail_next(400, code=21211, message=...)``, ``hang_next()`` (no answer until the
fake stops), ``drop_next()`` (the connection is closed without an answer). An
unscripted request is accepted. A request with wrong credentials gets ``401``
without consuming the script, as Twilio authenticates before anything else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

API_VERSION = "2010-04-01"
HANG_SECONDS = 30.0  # far beyond any test's timeout; cut short by stop()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Twilio's own wording for the errors the fake produces by itself.
_MESSAGES = {
    401: "Authenticate",
    404: "The requested resource {path} was not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
}
_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def error_body(status: int, code: int | None, message: str) -> dict[str, Any]:
    """Twilio's error document."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }


@dataclass(frozen=True)
class Failure:
    """A scripted answer: an error document, a hang, or a dropped connection."""

    status: int = 500
    code: int | None = None
    message: str | None = None
    kind: str = "error"  # "error" | "hang" | "drop"
    json: bool = True  # False: a plain-text body, like a proxy in front of Twilio


@dataclass(frozen=True)
class CreatedMessage:
    """A message the fake accepted, with every form field as sent."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    form: dict[str, list[str]] = field(default_factory=dict)
    authorization: str | None = None
    user_agent: str | None = None


class FakeTwilio(FakeServer):
    """One fake Twilio API. ``account_sid``/``auth_token`` are the credentials it
    accepts (HTTP Basic, as Twilio's API demands)."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.created: list[CreatedMessage] = []
        self.deleted_media: list[tuple[str, str]] = []  # (message SID, media SID)
        self.deleted_messages: list[str] = []  # message SIDs, in the order deleted
        self.message_deletes = 0  # DELETE requests for messages, whatever their answer
        self._messages: set[str] = set()  # SIDs a DELETE finds
        self.requests = 0  # every HTTP request, whatever its answer
        self._script: deque[Failure] = deque()

    # -- the app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        base = f"/{API_VERSION}/Accounts/{{account}}"
        app.router.add_post(base + "/Messages.json", self._create_message)
        app.router.add_delete(base + "/Messages/{message}/Media/{media}.json", self._delete_media)
        app.router.add_delete(base + "/Messages/{message}.json", self._delete_message)
        return app

    # -- scripting and inspection

    @property
    def base_url(self) -> str:
        """What the sender is configured with in place of ``https://api.twilio.com``."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self, status: int, *, code: int | None = None, message: str | None = None, json: bool = True
    ) -> None:
        """The next Messages request is answered ``status`` with Twilio's error
        document (``code`` and ``message`` default to Twilio's for that status)."""
        self._script.append(Failure(status, code, message, "error", json))

    def add_message(self, sid: str) -> None:
        """Make a message Twilio holds without the fake having created it (an inbound
        SMS, posted to the gateway's webhook by the test) known to DELETE."""
        self._messages.add(sid)

    def hang_next(self) -> None:
        """The next Messages request gets no answer until the fake stops."""
        self._script.append(Failure(kind="hang"))

    def drop_next(self) -> None:
        """The next Messages request is read, then its connection closed unanswered."""
        self._script.append(Failure(kind="drop"))

    def basic_auth(self) -> str:
        """The ``Authorization`` header a correct client sends."""
        pair = f"{self.account_sid}:{self.auth_token}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    # -- handlers

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        return await handler(request)

    def _authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Twilio's answer to a request it will not look at, or None."""
        if not self._authenticated(request):
            return self._error(401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.match_info["account"] != self.account_sid:
            return self._error(404, message=_MESSAGES[404].format(path=request.path))
        return None

    def _error(
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        *,
        json: bool = True,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if code is None:
            code = _CODES.get(status)
        if message is None:
            message = _MESSAGES.get(code or 0) or _MESSAGES.get(status) or f"HTTP {status}"
        if not json:
            return web.Response(status=status, text=f"<html>{message}</html>", headers=headers)
        return web.json_response(error_body(status, code, message), status=status, headers=headers)

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for name, value in form.items():
            fields.setdefault(name, []).append(str(value))
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        one = {name: values[0] for name, values in fields.items()}
        if not one.get("To"):
            return self._error(400, 21604)
        if not one.get("From") and not one.get("MessagingServiceSid"):
            return self._error(400, 21603)
        if not one.get("Body") and not one.get("MediaUrl"):
            return self._error(400, 21602)
        sid = "SM" + secrets.token_hex(16)
        account = self.account_sid
        message = CreatedMessage(
            sid=sid,
            account_sid=account,
            to=one["To"],
            from_=one.get("From", ""),
            body=one.get("Body", ""),
            status_callback=one.get("StatusCallback"),
            form=fields,
            authorization=request.headers.get("Authorization"),
            user_agent=request.headers.get("User-Agent"),
        )
        self.created.append(message)
        self._messages.add(sid)
        now = format_datetime(datetime.now(UTC), usegmt=False)
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}"
        resource = {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": one.get("MessagingServiceSid"),
            "num_media": str(len(fields.get("MediaUrl", []))),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri + "/Media.json"},
            "to": message.to,
            "uri": uri + ".json",
        }
        return web.json_response(resource, status=201)

    async def _scripted(self, request: web.Request) -> web.Response | None:
        """The next scripted answer, played out, or None when nothing is scripted."""
        if not self._script:
            return None
        failure = self._script.popleft()
        if failure.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HANG_SECONDS)
            return self._error(503)
        if failure.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never written: the connection is gone
        return self._error(failure.status, failure.code, failure.message, json=failure.json)

    async def _delete_message(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        self.message_deletes += 1
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        sid = request.match_info["message"]
        if sid not in self._messages:
            return self._error(404, message=_MESSAGES[404].format(path=request.path))
        self._messages.discard(sid)
        self.deleted_messages.append(sid)
        return web.Response(status=204)

    async def _delete_media(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        self.deleted_media.append((request.match_info["message"], request.match_info["media"]))
        return web.Response(status=204)
