"""Accounts over the client API: sign-up and sign-in by a code sent by SMS, the
signed-in devices (tokens), the profile, a change of mobile number and the
authentication log.

Nothing here tells whether a number has an account: a code request answers the same
for every number (status, body, and about the same time, see
:class:`gateway.accounts.SendTiming`), and only someone holding the code learns more.
The client IP is the TCP peer, or, when that peer is one of ``http.trusted_proxies``,
the address its ``X-Forwarded-For`` vouches for (:mod:`gateway.client_ip`). Limits and
abuse flags count an IPv6 client by its /64; the authentication log keeps the address.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from bridges.codes import CodeNotSent
from gateway import client_ip as addresses
from gateway.accounts import AuthRuntime
from gateway.api_support import (
    TOKEN_ID,
    USER_ID,
    ApiProblem,
    Handler,
    db_of,
    fetch_page,
    in_pool,
    json_object,
    page_response,
)
from gateway.keys import AUTH, SETTINGS
from gateway.problems import problem
from gateway.ratelimit import Decision, RateLimitUnavailable
from inbox import abuse, accounts, store, verification
from inbox.accounts import AuthOutcome, InvalidProfile
from inbox.addresses import E164, parse_phone
from inbox.errors import AddressError, NotFound
from inbox.ids import looks_like_id
from inbox.verification import Attempt, Purpose, SignupForm

log = logging.getLogger(__name__)
_MAX_PHONE_CHARS = 64
_MAX_ID_CHARS = 64


class _Answer(Exception):
    """Carries a finished response (one with headers, such as a 429) out of a helper."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _runtime(request: web.Request) -> AuthRuntime:
    return request.config_dict[AUTH]


def client_ip(request: web.Request) -> str:
    """The client's address, for the authentication log."""
    forwarded = request.headers.getall("X-Forwarded-For", [])
    ip = addresses.resolve(request.remote, forwarded, _runtime(request).proxies)
    return ip[: abuse.MAX_IP_CHARS]


def client_key(ip: str) -> str:
    """What limits and abuse flags count the client ``ip`` under."""
    return addresses.bucket(ip)[: abuse.MAX_IP_CHARS]


def _now() -> datetime:
    return datetime.now(UTC)


async def _hit(request: web.Request, kind: str, value: str, limit: int) -> Decision:
    runtime = _runtime(request)
    window = request.config_dict[SETTINGS].current.auth.window_s
    try:
        return await runtime.limiter.hit(runtime.keys.key(kind, value), limit, window)
    except RateLimitUnavailable as exc:
        log.error("%s", exc)
        # Without its limits, sign-in would be open to guessing: refuse instead.
        raise _Answer(problem(503, "sign-in is unavailable just now; try again shortly")) from None


def _too_many(decision: Decision, what: str) -> _Answer:
    return _Answer(
        problem(
            429,
            f"too many {what}; try again in {decision.retry_after_s} seconds",
            headers={"Retry-After": str(decision.retry_after_s)},
        )
    )


async def _flag(request: web.Request, ip: str, reason: abuse.AbuseReason) -> None:
    """Flag the IP for abuse, at most once a minute per reason and process."""
    if not _runtime(request).abuse_throttle.due(f"{reason.value}|{ip}"):
        return

    def write() -> None:
        with db_of(request).write.begin() as conn:
            abuse.flag(conn, ip, reason, _now())

    try:
        await in_pool(request, write)
    except Exception:  # a flag is best effort; the limit itself held
        log.exception("could not record an abuse flag")


def _phone(body: dict[str, Any], request: web.Request) -> E164:
    raw = body.get("phone")
    if not isinstance(raw, str) or not raw.strip() or len(raw) > _MAX_PHONE_CHARS:
        raise ApiProblem(400, "phone must be a mobile number, such as +14155550100")
    try:
        return parse_phone(raw, request.config_dict[SETTINGS].current.optin.default_region)
    except AddressError as exc:
        raise ApiProblem(400, f"phone: {exc.reason}") from None


def _profile_problem(exc: InvalidProfile) -> ApiProblem:
    return ApiProblem(400, str(exc))


async def _request_code(
    request: web.Request,
    purpose: Purpose,
    phone: E164,
    *,
    user_id: str | None,
    form: SignupForm | None = None,
    send: bool = True,
) -> web.Response:
    """Limits, then a verification, then the SMS (or, when none is sent, a pause as
    long as a send). 202 with the verification's id either way."""
    settings = request.config_dict[SETTINGS].current
    ip = client_key(client_ip(request))
    decision = await _hit(request, "codes:ip", ip, settings.auth.codes_per_ip)
    if not decision.allowed:
        await _flag(request, ip, abuse.AbuseReason.CODE_REQUEST_FLOOD)
        raise _too_many(decision, "code requests from this address")
    decision = await _hit(request, "codes:number", phone, settings.auth.codes_per_number)
    if not decision.allowed:
        raise _too_many(decision, "code requests for this number")
    runtime = _runtime(request)
    code = verification.new_code()
    loop = asyncio.get_running_loop()
    code_hash = await in_pool(request, runtime.hasher.hash, code)
    started = await in_pool(
        request,
        verification.start,
        db_of(request),
        purpose,
        phone,
        code_hash,
        ttl_s=settings.auth.code_ttl_s,
        now=_now(),
        user_id=user_id,
        form=form,
    )
    if send:
        began = time.monotonic()
        ttl_minutes = max(1, settings.auth.code_ttl_s // 60)
        try:
            # The default executor, not the database pool: a slow provider must not
            # hold up reads.
            await loop.run_in_executor(None, runtime.sender.send_code, phone, code, ttl_minutes)
        except CodeNotSent as exc:
            log.warning("sign-in code to a number not sent: %s", exc)
            await in_pool(request, verification.void, db_of(request), started.id)
            return problem(503, "the code could not be sent just now; try again shortly")
        runtime.timing.record(time.monotonic() - began)
    else:
        await asyncio.sleep(runtime.timing.padding())
    return web.json_response(
        {"verification_id": started.id, "expires_at": started.expires_at.isoformat()},
        status=202,
    )


async def signup(request: web.Request) -> web.StreamResponse:
    body = await json_object(
        request, ("first_name", "last_name", "date_of_birth", "phone", "referral_code")
    )
    try:
        form = SignupForm(
            first_name=accounts.check_name("first_name", body.get("first_name")),
            last_name=accounts.check_name("last_name", body.get("last_name")),
            date_of_birth=accounts.check_birth_date(body.get("date_of_birth"), date.today()),
            referral_code=accounts.check_referral(body.get("referral_code")),
        )
    except InvalidProfile as exc:
        raise _profile_problem(exc) from None
    phone = _phone(body, request)
    existing = await in_pool(request, verification.user_by_phone, db_of(request), phone)
    # A number that has an account gets a code too (its owner can prove it); the
    # code then signs in to that account and the form is discarded.
    user_id = existing[0] if existing else None
    return await _request_code(request, Purpose.SIGNUP, phone, user_id=user_id, form=form)


async def login(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("phone",))
    phone = _phone(body, request)
    existing = await in_pool(request, verification.user_by_phone, db_of(request), phone)
    if existing is None:
        return await _request_code(request, Purpose.LOGIN, phone, user_id=None, send=False)
    return await _request_code(request, Purpose.LOGIN, phone, user_id=existing[0])


def _verification_fields(body: dict[str, Any]) -> tuple[str, str]:
    verification_id, code = body.get("verification_id"), body.get("code")
    if not isinstance(verification_id, str) or len(verification_id) > _MAX_ID_CHARS:
        raise ApiProblem(400, "verification_id must be the id a code request answered")
    if not verification.looks_like_code(code):
        raise ApiProblem(400, f"code must be the {verification.CODE_DIGITS} digits sent by SMS")
    assert isinstance(code, str)
    return verification_id, code


_GONE = {
    AuthOutcome.EXPIRED: "the code has expired; request a new one",
    AuthOutcome.TOO_MANY_ATTEMPTS: "too many wrong codes; request a new one",
    AuthOutcome.ALREADY_USED: "the code has already been used; request a new one",
}


async def _check_code(
    request: web.Request,
    body: dict[str, Any],
    purposes: tuple[Purpose, ...],
    *,
    device: str | None,
    for_user: str | None = None,
) -> verification.Verified:
    """The limits on guesses, then the guess; a failure is raised as its problem."""
    settings = request.config_dict[SETTINGS].current
    verification_id, code = _verification_fields(body)
    ip = client_ip(request)
    key = client_key(ip)
    decision = await _hit(request, "attempts:ip", key, settings.auth.attempts_per_ip)
    if not decision.allowed:
        await _flag(request, key, abuse.AbuseReason.CODE_ATTEMPT_FLOOD)
        raise _too_many(decision, "code attempts from this address")
    if not looks_like_id("vrf", verification_id):
        raise ApiProblem(404, "no such verification")
    result = await in_pool(
        request,
        verification.verify,
        db_of(request),
        _runtime(request).hasher,
        verification_id,
        code,
        Attempt(device=device, ip=ip, now=_now()),
        purposes=purposes,
        max_attempts=settings.auth.code_attempts,
        for_user=for_user,
    )
    if result.outcome is None:
        raise ApiProblem(404, "no such verification")
    if result.outcome is AuthOutcome.WRONG_CODE:
        failed = await _hit(request, "failed:ip", key, settings.privacy.abuse_failed_codes)
        if failed.count >= settings.privacy.abuse_failed_codes:
            await _flag(request, key, abuse.AbuseReason.FAILED_CODES)
        if result.attempts_left:
            raise ApiProblem(400, f"the code is wrong; {result.attempts_left} attempt(s) left")
        raise ApiProblem(400, "the code is wrong and no attempts are left; request a new one")
    if result.outcome in _GONE:
        raise ApiProblem(410, _GONE[result.outcome])
    if result.outcome is AuthOutcome.SUSPENDED:
        raise ApiProblem(403, "the account is suspended; contact the operator of this service")
    if result.outcome is AuthOutcome.NUMBER_TAKEN:
        raise ApiProblem(409, "this number cannot be moved to this account")
    return result


async def verify(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("verification_id", "code", "device"))
    try:
        device = accounts.check_device(body.get("device"))
    except InvalidProfile as exc:
        raise _profile_problem(exc) from None
    result = await _check_code(request, body, (Purpose.SIGNUP, Purpose.LOGIN), device=device)
    assert result.user_id is not None and result.token is not None
    user = await in_pool(request, store.get_user, db_of(request), result.user_id)
    return web.json_response(
        {
            "token": result.token,
            "token_id": result.token_id,
            "created": result.outcome is AuthOutcome.ACCOUNT_CREATED,
            "user": user.as_json(),
        },
        status=201,
    )


# --- tokens (signed-in devices) -------------------------------------------------------


async def list_tokens(request: web.Request) -> web.StreamResponse:
    page = await fetch_page(request, store.list_tokens, current=request[TOKEN_ID])
    return page_response(page)


async def revoke_token(request: web.Request) -> web.StreamResponse:
    token_id = request.match_info["token_id"]
    if token_id == "current":  # noqa: S105 - the path word, not a secret
        token_id = request[TOKEN_ID]
    elif not looks_like_id("tok", token_id):
        raise ApiProblem(404, "no such token")
    try:
        await in_pool(request, store.revoke_token, db_of(request), request[USER_ID], token_id)
    except NotFound:
        raise ApiProblem(404, "no such token") from None
    _runtime(request).tokens.forget_token(token_id)
    return web.Response(status=204)


# --- the account ------------------------------------------------------------------------


async def _account_json(request: web.Request) -> dict[str, Any]:
    try:
        user = await in_pool(request, store.get_user, db_of(request), request[USER_ID])
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None  # deleted meanwhile
    return user.as_json()


async def get_account(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _account_json(request))


async def patch_account(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("first_name", "last_name", "date_of_birth"))
    if not body:
        raise ApiProblem(400, "send at least one of: first_name, last_name, date_of_birth")
    try:
        change = accounts.ProfileChange(
            first_name=accounts.check_name("first_name", body["first_name"])
            if "first_name" in body
            else None,
            last_name=accounts.check_name("last_name", body["last_name"])
            if "last_name" in body
            else None,
            date_of_birth=accounts.check_birth_date(body["date_of_birth"], date.today())
            if "date_of_birth" in body
            else None,
        )
    except InvalidProfile as exc:
        raise _profile_problem(exc) from None
    try:
        await in_pool(request, accounts.update_profile, db_of(request), request[USER_ID], change)
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None
    return web.json_response(await _account_json(request))


async def request_phone_change(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("phone",))
    phone = _phone(body, request)
    current = await _account_json(request)
    if current["phone"] == phone:
        raise ApiProblem(400, "that is already the account's number")
    # Whether another account has the number is not told here (the code goes to the
    # number either way); the change is refused at confirmation.
    return await _request_code(request, Purpose.PHONE_CHANGE, phone, user_id=request[USER_ID])


async def confirm_phone_change(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("verification_id", "code"))
    await _check_code(
        request, body, (Purpose.PHONE_CHANGE,), device=None, for_user=request[USER_ID]
    )
    return web.json_response(await _account_json(request))


async def auth_log(request: web.Request) -> web.StreamResponse:
    return page_response(await fetch_page(request, accounts.auth_log_page))


def _answers(handler: Handler) -> Handler:
    """The handler, answering the response a helper raised as :class:`_Answer`."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Answer as answer:
            return answer.response

    return wrapped


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/auth/signup", _answers(signup))
    router.add_post("/auth/login", _answers(login))
    router.add_post("/auth/verify", _answers(verify))
    router.add_get("/tokens", list_tokens)
    router.add_delete("/tokens/{token_id}", revoke_token)
    router.add_get("/account", get_account)
    router.add_patch("/account", patch_account)
    router.add_post("/account/phone", _answers(request_phone_change))
    router.add_post("/account/phone/verify", _answers(confirm_phone_change))
    router.add_get("/account/auth-log", auth_log)
