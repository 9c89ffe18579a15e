"""What sign-up and sign-in need while the gateway runs: the rate limiter, the code
sender, the code hasher, and small in-process throttles (abuse flags, token last use).
Built once per app by :func:`build_auth_runtime`, closed with the app."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bridges.codes import CodeSender, ConsoleCodeSender, TwilioCodeSender
from bridges.twilio_rest import TwilioSender
from config import Settings
from config.settings import PLACEHOLDER_SECRETS
from gateway.client_ip import Network, parse_networks
from gateway.ratelimit import KeyHasher, MemoryLimiter, RateLimiter, RedisLimiter
from inbox import store
from inbox.db import Database
from inbox.verification import CodeHasher

log = logging.getLogger(__name__)

#: A token's recorded last use may lag by this much: a use is noted only when the
#: stored time is older, and noted uses are written every TOKEN_USE_FLUSH_S.
TOKEN_USE_INTERVAL_S = 60.0
TOKEN_USE_FLUSH_S = 15.0
#: An IP's abuse flag (per reason) is raised at most this often per process.
ABUSE_FLAG_INTERVAL_S = 60.0
CODE_SEND_TIMEOUT_S = 10.0
_LIMIT_KEY_LABEL = b"optmsg rate-limit keys v1"


class Throttle:
    """At most one "due" per key per interval, in this process (bounded memory: the
    least recently seen keys are forgotten first, which only makes one more write)."""

    def __init__(
        self,
        interval_s: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()

    def due(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        return True


class TokenUse:
    """Uses of tokens noted by this process since the last flush (the latest per
    token), written by :func:`flush_token_use` in one transaction."""

    def __init__(self) -> None:
        self._pending: dict[str, datetime] = {}

    def note(self, token_id: str, when: datetime) -> None:
        self._pending[token_id] = when

    def take(self) -> dict[str, datetime]:
        pending, self._pending = self._pending, {}
        return pending


def flush_token_use(noted: TokenUse, db: Database) -> int:
    """Write the noted token uses; returns how many tokens. Uses that could not be
    written are noted again for the next flush."""
    uses = noted.take()
    try:
        store.touch_tokens(db, uses)
    except Exception:
        for token_id, when in uses.items():
            noted.note(token_id, when)
        raise
    return len(uses)


class TokenCache:
    """Owners of tokens this process looked up lately, each kept ``ttl_s`` seconds
    (``auth.token_cache_s``), keyed by the token's hash. Only live tokens are kept: an
    unknown token is looked up every time, so guessing fills nothing. Bounded: the
    least recently stored go first."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, store.TokenOwner]] = OrderedDict()
        # Bumped by every forget: a lookup that started before a revocation must not
        # put the revoked owner back (see put's ``since``).
        self.generation = 0

    def get(self, digest: str) -> store.TokenOwner | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, digest: str, owner: store.TokenOwner, since: int | None = None) -> None:
        """Remember ``owner``; ``since``: the generation read before the lookup began
        (nothing is kept when a token or user was forgotten meanwhile)."""
        if self._ttl <= 0 or (since is not None and since != self.generation):
            return
        self._entries[digest] = (self._clock() + self._ttl, owner)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def refresh(self, digest: str, owner: store.TokenOwner) -> None:
        """Replace a cached owner (a newer last use), keeping when it expires."""
        entry = self._entries.get(digest)
        if entry is not None:
            self._entries[digest] = (entry[0], owner)

    def forget_token(self, token_id: str) -> None:
        self.generation += 1
        for digest in [d for d, (_, o) in self._entries.items() if o.token_id == token_id]:
            del self._entries[digest]

    def forget_user(self, user_id: str) -> None:
        self.generation += 1
        for digest in [d for d, (_, o) in self._entries.items() if o.user_id == user_id]:
            del self._entries[digest]


@dataclass
class SendTiming:
    """How long sending a code takes (a moving average). A code request for which no
    code is sent (a login for a number without an account) waits about as long, so
    that response times do not tell which numbers have accounts."""

    estimate_s: float
    samples: int = 0
    _rng: random.Random = field(default_factory=random.SystemRandom)

    def record(self, seconds: float) -> None:
        self.samples += 1
        weight = 1.0 / min(self.samples, 20)
        self.estimate_s += (seconds - self.estimate_s) * weight

    def padding(self) -> float:
        return self.estimate_s * self._rng.uniform(0.8, 1.2)


@dataclass
class AuthRuntime:
    limiter: RateLimiter
    keys: KeyHasher
    sender: CodeSender
    hasher: CodeHasher
    timing: SendTiming
    abuse_throttle: Throttle = field(default_factory=lambda: Throttle(ABUSE_FLAG_INTERVAL_S))
    token_use: TokenUse = field(default_factory=TokenUse)
    tokens: TokenCache = field(default_factory=lambda: TokenCache(0.0))
    #: http.trusted_proxies, parsed once (see gateway.client_ip).
    proxies: tuple[Network, ...] = ()

    async def close(self) -> None:
        await self.limiter.close()
        if isinstance(self.sender, TwilioCodeSender):
            self.sender.close()


def code_sender(settings: Settings) -> CodeSender:
    """The sender ``auth.code_sender`` names; ``auto`` is Twilio when that bridge is
    enabled and has a service number, else the console."""
    choice = settings.auth.code_sender
    tw = settings.bridges.twilio
    if choice == "auto":
        choice = "twilio" if tw.enabled and tw.service_number else "console"
    if choice == "twilio":
        if not tw.service_number:
            # config check cannot see this combination; refuse to start rather than
            # answer every sign-up with 503.
            raise ValueError(
                "auth.code_sender is twilio but bridges.twilio.service_number is empty"
            )
        sender = TwilioSender(
            tw.account_sid,
            tw.auth_token.get_secret_value(),
            tw.api_base_url,
            timeout_s=CODE_SEND_TIMEOUT_S,
        )
        return TwilioCodeSender(sender, tw.service_number)
    log.warning(
        "sign-in codes are printed to this process's standard error "
        "(auth.code_sender = console): for development only"
    )
    return ConsoleCodeSender()


def limit_key(settings: Settings) -> bytes:
    """The key of the HMAC in rate-limit keys. Every gateway sharing a Redis must use
    the same one, or each counts a number apart and the limits multiply. So:
    ``auth.limit_key`` when set; else one derived from the Twilio auth token, which
    every gateway of a deployment holds (a fixed label keeps it unrelated to other
    keys derived from that token); else a random key for this process only."""
    configured = settings.auth.limit_key.get_secret_value()
    if configured:
        return configured.encode("utf-8")
    token = settings.bridges.twilio.auth_token.get_secret_value()
    # A placeholder token (allowed while the bridge is off) would give a key anyone
    # could recompute, and with it reverse the hashed numbers in Redis.
    if len(token) >= 16 and token.strip().lower() not in PLACEHOLDER_SECRETS:
        return hmac.digest(token.encode("utf-8"), _LIMIT_KEY_LABEL, hashlib.sha256)
    if settings.redis.url:
        log.warning(
            "auth.limit_key is empty and there is no Twilio auth token to derive it from: "
            "this process counts sign-in limits apart from other gateways on the same "
            "Redis; set auth.limit_key to the same value on every gateway"
        )
    return secrets.token_bytes(32)


def build_auth_runtime(settings: Settings) -> AuthRuntime:
    sender = code_sender(settings)
    limiter: RateLimiter = (
        RedisLimiter.from_url(settings.redis.url) if settings.redis.url else MemoryLimiter()
    )
    return AuthRuntime(
        limiter=limiter,
        keys=KeyHasher(limit_key(settings)),
        sender=sender,
        hasher=CodeHasher(),
        # Until real sends are measured: a typical provider round trip.
        timing=SendTiming(0.3 if isinstance(sender, TwilioCodeSender) else 0.0),
        tokens=TokenCache(settings.auth.token_cache_s),
        proxies=parse_networks(settings.http.trusted_proxies),
    )
