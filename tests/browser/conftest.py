"""Browser tests of the web page: Playwright (sync API) driving Debian's Chromium
against a real ``optmsg serve``.

Chromium is ``/usr/bin/chromium`` (``make test`` installs Debian's package when it is
missing and it runs as root); Playwright's own browser download is never used.
Without Chromium the tests are skipped with a reason, or fail when
``OPTMSG_REQUIRE_SERVICES=1``.

Fixtures
--------
``browser`` (package: closed before the asyncio tests of other folders run)
    Chromium, headless, launched from ``/usr/bin/chromium``.
``web`` (function)
    A running gateway (:class:`Web`): ``optmsg serve`` on a fresh SQLite file with
    the in-process worker, its SMTP listener on a free port, and Twilio's REST API
    replaced by a fake on 127.0.0.1 (``auth.code_sender = "twilio"`` from
    :data:`SERVICE_NUMBER`), so sign-in codes and sent SMS land in the fake.
    Email from a trusted sender is admitted without SPF/DKIM/DMARC
    (``optin.require_email_auth = false``: the tests have no DNS). Attributes and
    methods: ``base_url``; ``cli(*args)`` (``optmsg ARGS --json``, parsed);
    ``create_user(phone=None, first_name=..., last_name=...) -> WebUser`` (with
    an OptMsg SMS number and email address); ``send_sms(from_, to, body) -> sid``
    (a Twilio-signed inbound webhook); ``send_email(from_, to, subject, text,
    html=None, attachments=())`` (SMTP); ``last_code(phone) -> str`` (the code in
    the last SMS the fake got for that number); ``sent_messages()`` (every SMS
    the fake accepted); ``status_callback(sid, status)`` (a signed delivery
    status); ``twilio`` (the :class:`~tests.fakes.twilio_api.FakeTwilio`).
``web_settings`` (function)
    Extra ``OPTMSG_*`` settings for the ``web`` gateway: ``{}``; override the
    fixture in a test module, or ``@pytest.mark.parametrize("web_settings",
    [{...}])``, to change them.
``page`` / ``phone_page`` (function)
    A new browser context and page, 1280x800 / 375x740, with ``base_url`` set
    to the gateway (``page.goto("/")``). Requests to any other host are aborted
    and recorded in ``foreign_requests`` (function), which a test may ask for.
    ``open_page(browser, web, viewport, foreign_requests)`` is the generator behind
    both, for a fixture of its own (test_accessibility.py runs each audit at both).
``signed_in`` (function)
    A callable ``signed_in(page, web, phone=None) -> WebUser``: creates a user,
    signs in through the page (phone number, the code from the fake Twilio) and
    returns once the signed-in navigation shows.
``screenshot`` (function)
    A callable ``screenshot(page, name)`` writing ``docs/screenshots/NAME.png``
    (``NAME-phone.png`` for a page narrower than 600 px) only when
    ``OPTMSG_SCREENSHOTS=1``, so that ordinary runs never rewrite committed files.

``running_web(root, deployment_template, fakes_loop, settings)``
    The context manager behind ``web``, for a module-scoped gateway shared by tests
    that keep no state (see test_page_security.py).

The toast is ``page.locator("#toast")``: views have ``role="status"`` regions of
their own, so ``get_by_role("status")`` can match more than one element.
Every test here is marked ``slow`` (it starts processes). Waits are Playwright's
auto-waiting and ``expect()``, never sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import smtplib
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright
from twilio.request_validator import RequestValidator

from inbox import store
from inbox.addresses import E164, parse_email, parse_phone
from inbox.db import Database, open_database
from tests.conftest import missing_service, twilio_form
from tests.e2e.harness import (
    Deadline,
    Deployment,
    GatewayServer,
    create_deployment,
    free_port,
)
from tests.fakes.twilio_api import CreatedMessage, FakeTwilio

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Where sign-in codes come from (bridges.twilio.service_number).
SERVICE_NUMBER = "+14155550000"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
#: Playwright's default wait for expect() and actions, in ms: generous for a shared
#: 2-core machine, far below a hang.
TIMEOUT_MS = 10_000
START_BUDGET_S = 40.0
CODE_WAIT_S = 5.0
HTTP_TIMEOUT_S = 10.0

T = TypeVar("T")


# --- the fake Twilio, on an event loop of its own ------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread, for fakes the sync tests drive."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fakes")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(scope="session")
def fakes_loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


# --- the gateway -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebUser:
    """An account made for a test: its id, own mobile number (E.164) and the OptMsg
    number and address that route to it."""

    id: str
    phone: str
    sms_number: str
    email_address: str
    first_name: str
    last_name: str


class Web:
    """A running gateway for browser tests; see the module docstring."""

    def __init__(
        self, deployment: Deployment, server: GatewayServer, twilio: FakeTwilio, db: Database
    ) -> None:
        self.deployment = deployment
        self.server = server
        self.twilio = twilio
        self.base_url = deployment.public_url
        settings = deployment.load_settings()
        self.auth_token = settings.bridges.twilio.auth_token.get_secret_value()
        self.account_sid = settings.bridges.twilio.account_sid
        self.region = settings.optin.default_region
        self._db = db
        self._numbers = itertools.count(1)

    def cli(self, *args: str) -> Any:
        """``optmsg ARGS --json`` against this deployment; its JSON document."""
        return self.deployment.cli(*args, deadline=Deadline(60))

    def create_user(
        self, phone: str | None = None, *, first_name: str = "Ada", last_name: str = "Lovelace"
    ) -> WebUser:
        """A new account (as ``optmsg users create`` makes one, without the process
        start) with its own OptMsg SMS number and email address."""
        n = next(self._numbers)
        own = parse_phone(phone or f"+1415555{1000 + n:04d}", self.region)
        sms_number = parse_phone(f"+1415555{2000 + n:04d}", self.region)
        local = re.sub(r"[^a-z0-9]+", ".", first_name.lower()).strip(".") or "user"
        email = parse_email(f"{local}.{n}@optmsg.example")
        user = store.create_user(
            self._db,
            first_name=first_name,
            last_name=last_name,
            date_of_birth=date(1990, 12, 10),
            phone=E164(own),
            sms_number=E164(sms_number),
            email_address=email,
        )
        return WebUser(user.id, own, sms_number, email, first_name, last_name)

    def _post_signed(self, path: str, form: dict[str, str]) -> str:
        url = self.base_url + path
        signature = RequestValidator(self.auth_token).compute_signature(url, form)
        request = urllib.request.Request(
            url,
            data=urlencode(form).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            assert response.status == 200, f"{path} answered {response.status}"
            return str(response.read().decode())

    def send_sms(self, from_: str, to: str, body: str) -> str:
        """Post a Twilio-signed inbound SMS to the gateway; returns its MessageSid
        (which the fake Twilio then knows, for a provider delete)."""
        form = twilio_form(sender=from_, to=to, body=body) | {"AccountSid": self.account_sid}
        self._post_signed("/bridges/twilio/sms", form)
        self.twilio.add_message(form["MessageSid"])
        return form["MessageSid"]

    def status_callback(self, sid: str, status: str, error_code: str | None = None) -> None:
        """Post a signed delivery status for an outbound message, as Twilio does."""
        form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": self.account_sid}
        if error_code:
            form["ErrorCode"] = error_code
        self._post_signed("/bridges/twilio/status", form)

    def send_email(
        self,
        from_: str,
        to: str,
        subject: str,
        text: str,
        *,
        html: str | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
    ) -> str:
        """Send an email to the gateway's SMTP listener; ``attachments`` are
        (filename, content type, bytes). Returns its Message-ID."""
        message = EmailMessage()
        message["From"] = from_
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = f"<{time.time_ns()}.{next(self._numbers)}@sender.example>"
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        for filename, content_type, data in attachments:
            maintype, _, subtype = content_type.partition("/")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        host, port = self.deployment.smtp_address
        with smtplib.SMTP(host, port, timeout=HTTP_TIMEOUT_S) as smtp:
            smtp.send_message(message)
        return str(message["Message-ID"])

    def sent_messages(self) -> list[CreatedMessage]:
        """Every SMS the fake Twilio accepted (sign-in codes included), oldest first."""
        return list(self.twilio.created)

    def last_code(self, phone: str) -> str:
        """The code in the last SMS sent to ``phone`` (any spelling)."""
        number = parse_phone(phone, self.region)
        give_up = time.monotonic() + CODE_WAIT_S
        while True:
            for sent in reversed(self.twilio.created):
                found = re.search(r"\b(\d{6})\b", sent.body)
                if sent.to == number and found:
                    return found.group(1)
            if time.monotonic() > give_up:
                pytest.fail(f"no code was sent to {number}", pytrace=False)
            time.sleep(0.05)


def _fresh_deployment(template: Deployment, root: Path) -> Deployment:
    """The template's config file, with this test's own database, blobs and ports."""
    listen = f"127.0.0.1:{free_port()}"
    env = template.settings_env | {
        "OPTMSG_HTTP__LISTEN": listen,
        "OPTMSG_HTTP__PUBLIC_URL": f"http://{listen}",
        "OPTMSG_DATABASE__URL": f"sqlite:///{root / 'optmsg.db'}",
        "OPTMSG_STORAGE__BLOB_DIR": str(root / "blobs"),
        "OPTMSG_SMTP__LISTEN": f"127.0.0.1:{free_port()}",
    }
    return Deployment(
        root, template.config_path, root / "optmsg.db", listen, f"http://{listen}", env
    )


@pytest.fixture(scope="session")
def deployment_template(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """One ``optmsg dev init`` config for the session (its secrets are random); each
    test gets its own database, blobs and ports on top of it."""
    return create_deployment(tmp_path_factory.mktemp("web-config"), Deadline(60))


@pytest.fixture
def web_settings() -> dict[str, str]:
    return {}


@contextmanager
def running_web(
    root: Path, template: Deployment, loop: LoopThread, settings: dict[str, str]
) -> Iterator[Web]:
    """A gateway and its fake Twilio for as long as the block runs (see ``web``)."""
    config = template.load_settings()
    twilio = FakeTwilio(
        config.bridges.twilio.account_sid, config.bridges.twilio.auth_token.get_secret_value()
    )
    loop.run(twilio.start())
    try:
        deployment = _fresh_deployment(template, root).with_settings(
            OPTMSG_BRIDGES__TWILIO__API_BASE_URL=twilio.base_url,
            OPTMSG_BRIDGES__TWILIO__SERVICE_NUMBER=SERVICE_NUMBER,
            OPTMSG_AUTH__CODE_SENDER="twilio",
            OPTMSG_OPTIN__REQUIRE_EMAIL_AUTH="false",
            OPTMSG_SMTP__DNS_TIMEOUT_S="0.5",
            **settings,
        )
        server = GatewayServer(deployment)
        server.start(Deadline(START_BUDGET_S))
        db = open_database(deployment.load_settings().database)
        try:
            yield Web(deployment, server, twilio, db)
        finally:
            db.dispose()
            server.stop()
    finally:
        loop.run(twilio.stop())


@pytest.fixture
def web(
    tmp_path: Path,
    deployment_template: Deployment,
    fakes_loop: LoopThread,
    web_settings: dict[str, str],
) -> Iterator[Web]:
    with running_web(tmp_path, deployment_template, fakes_loop, web_settings) as running:
        yield running


# --- the browser -----------------------------------------------------------------------------


# Package scope, not session: the sync API keeps an event loop running in this thread
# while it is open, and pytest-aiohttp's tests (which run after tests/browser) cannot
# start their own loop until it is closed.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        missing_service("Chromium", f"{CHROMIUM} is missing (make test installs it as root)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
    )
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def foreign_requests() -> list[str]:
    """URLs the page asked for on any host but the gateway (each was aborted)."""
    return []


def open_page(
    browser: Browser, web: Web, viewport: dict[str, int], foreign: list[str]
) -> Iterator[Page]:
    context = browser.new_context(
        base_url=web.base_url, viewport=viewport, accept_downloads=True, locale="en-US"
    )
    context.set_default_timeout(TIMEOUT_MS)

    def only_the_gateway(route: Route) -> None:
        url = route.request.url
        if url == web.base_url or url.startswith(web.base_url + "/"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    context.route("**/*", only_the_gateway)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, web: Web, foreign_requests: list[str]) -> Iterator[Page]:
    yield from open_page(browser, web, DESKTOP, foreign_requests)


@pytest.fixture
def phone_page(browser: Browser, web: Web, foreign_requests: list[str]) -> Iterator[Page]:
    yield from open_page(browser, web, PHONE, foreign_requests)


def sign_in(page: Page, web: Web, phone: str | None = None) -> WebUser:
    """Create a user and sign in as them through the page."""
    user = web.create_user(phone)
    page.goto("/")
    page.get_by_label("Phone number").fill(user.phone)
    page.get_by_role("button", name="Send code").click()
    code = page.get_by_label("Code", exact=True)
    expect(code).to_be_visible()
    code.fill(web.last_code(user.phone))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/inbox$"))
    return user


@pytest.fixture
def signed_in() -> Callable[..., WebUser]:
    return sign_in


def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("OPTMSG_SCREENSHOTS") != "1":
        return
    width = (page.viewport_size or DESKTOP)["width"]
    suffix = "-phone" if width < 600 else ""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}{suffix}.png"), full_page=True)


@pytest.fixture
def screenshot() -> Callable[[Page, str], None]:
    return _screenshot


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.slow)
