"""Fetch remote MMS media (Twilio ``MediaUrlN``) without becoming an SSRF proxy.

A media URL arrives in a webhook, so its host, its redirects and what its name
resolves to are all chosen by someone else. Every hop is checked before a byte
is sent to it:

* the scheme is https (plain http only when the policy allows it, for tests);
* the host is one of the policy's ``allowed_hosts`` - an exact name, no implied
  subdomains - and so is the host of every redirect (Twilio answers ``api.twilio.com``
  with a 307 to ``mms.twiliocdn.com`` or ``s3-external-1.amazonaws.com``);
* the addresses the name resolves to are public. The check lives in the
  connector's resolver (:class:`GuardedResolver`), and aiohttp connects to exactly
  the addresses it returns, so there is no second lookup for a rebinding DNS
  server to answer differently. A name with one bad address among good ones is
  refused whole: a mixed answer is what a rebinding attack looks like. IP-literal
  hosts never reach a resolver in aiohttp, so they are checked before the request;
* HTTP Basic credentials go only to the origin of the URL the job was given,
  never to a redirect target elsewhere (S3 would even refuse them);
* the declared type and length are checked before the body is read, the body is
  streamed and dropped as soon as it passes the cap, and the whole fetch,
  redirects included, is bounded in time.

Whatever is refused raises a :class:`MediaRefused` whose ``reason`` can be shown
to the user as is: it names a host or a type at most, never a URL (signed CDN
URLs are short-lived bearer credentials) and never a credential.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # Twilio's own cap on all media of one message
# What handsets send by MMS. image/* is not used on purpose: it admits
# image/svg+xml, which is a script-bearing document, not a picture.
DEFAULT_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/heic",
    "image/heif",
    "video/*",
    "audio/*",
    "text/vcard",
    "text/x-vcard",
    "text/calendar",
    "application/pdf",
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 408 and 429 say "not now"; 5xx is the server's trouble, not the request's.
_RETRYABLE_4XX = frozenset({408, 429})
_CHUNK_BYTES = 64 * 1024
_MAX_RETRY_AFTER_S = 3600.0
# Cloud instance-metadata and platform endpoints. Refused even when the operator
# allows private addresses: nothing legitimate serves MMS media from them, and they
# hand out credentials. 168.63.129.16 (Azure) is in public space, so only this
# list catches it.
METADATA_ADDRESSES: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean...
        "169.254.169.253",  # AWS VPC DNS
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
# RFC 6052 NAT64 prefixes: the last 32 bits are an IPv4 address the translator
# will connect to on our behalf.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- errors


class MediaRefused(Exception):
    """Root of the media-fetch errors: the media was not fetched, and ``reason``
    says why in a sentence a user can read (no URL, no credential). The job marks
    the attachment failed with it, unless ``retryable`` says a later try may work."""

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than ``args``; rebuild from
        # the attributes so a refusal survives pickling (process pools, brokers).
        return (_rebuild, (type(self), self.reason, dict(self.__dict__)))


def _rebuild(cls: type[MediaRefused], reason: str, state: dict[str, Any]) -> MediaRefused:
    err = cls.__new__(cls)
    Exception.__init__(err, reason)
    err.__dict__.update(state)
    return err


class BadUrl(MediaRefused):
    """Raised when the media URL or a redirect's ``Location`` is not an absolute URL
    with a host, carries a user name or password, or has an allowed host that looks
    like an IP address but is not a canonical one (``127.1``)."""


class SchemeNotAllowed(MediaRefused):
    """Raised when the URL, or a redirect, is not https (or http when the policy's
    ``allow_http`` is set)."""

    def __init__(self, scheme: str) -> None:
        super().__init__("The attachment link does not use a secure (https) connection.")
        self.scheme = scheme


class HostNotAllowed(MediaRefused):
    """Raised when the URL's host, or a redirect's, is not exactly one of the
    policy's ``allowed_hosts``."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"The attachment is hosted on {_shown(host)}, which is not a trusted host."
        )
        self.host = host


class AddressNotAllowed(MediaRefused):
    """Raised before any connection is made when an allowed host resolves to (or is)
    an address that is not public - private, loopback, link-local, shared (CGNAT),
    documentation - unless the policy's ``allow_private`` is set; or to one that no
    policy allows: multicast, reserved, unspecified, a cloud metadata address
    (:data:`METADATA_ADDRESSES`). An IPv6 address embedding an IPv4 one
    (IPv4-mapped, 6to4, Teredo, NAT64) is judged by both."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"The attachment host {_shown(host)} points to a private or reserved "
            "network address, so it was not contacted."
        )
        self.host = host
        self.address = address


class TooLarge(MediaRefused):
    """Raised when the declared ``Content-Length`` or the bytes actually received
    pass the per-fetch cap or what is left of the message's :class:`ByteBudget`.
    Raised as soon as that is known: a declared length before the body is read,
    a streamed body at the first chunk over the limit."""

    def __init__(self, limit: int, *, whole_message: bool = False) -> None:
        what = "The attachments of this message are" if whole_message else "The attachment is"
        super().__init__(f"{what} larger than the {_size(limit)} limit.")
        self.limit = limit


class TypeNotAllowed(MediaRefused):
    """Raised when the response's ``Content-Type`` (without parameters) is missing or
    matches none of the policy's ``allowed_types``; checked before the body is read."""

    def __init__(self, content_type: str) -> None:
        shown = content_type if _is_token_type(content_type) else ""
        if shown:
            reason = f"Attachments of type {shown} are not accepted."
        else:
            reason = "The attachment has no recognisable type, so it was not accepted."
        super().__init__(reason)
        self.content_type = content_type


class TooManyRedirects(MediaRefused):
    """Raised when the media URL redirects more than the policy's ``max_redirects``
    times (a loop ends here too)."""

    def __init__(self, limit: int) -> None:
        super().__init__("The attachment link redirected too many times.")
        self.limit = limit


class FetchFailed(MediaRefused):
    """Raised when the media could not be downloaded although nothing was refused:
    an HTTP error status, a redirect without a ``Location``, a connection that could
    not be made or broke, a name that did not resolve, the time limit, an empty body.

    ``retryable`` is True for what may pass (5xx, 408, 429, connection and DNS
    failures, timeouts) and False for an answer that will not change (other 4xx,
    empty body). ``status`` is the HTTP status when there was one; ``retry_after``
    the server's ``Retry-After`` in seconds when it sent a usable one.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class MediaPolicy:
    """What the fetcher may contact and accept. Values are normalised and checked
    at construction (host names lower-cased without a trailing dot, type patterns
    lower-cased), so a bad setting fails at start, not at the first MMS."""

    allowed_hosts: frozenset[str]
    allow_http: bool = False
    allow_private: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_types: tuple[str, ...] = DEFAULT_TYPES
    max_redirects: int = 5
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts must be a collection of host names, not one string")
        hosts = frozenset(_normal_host(h) for h in self.allowed_hosts)
        if "" in hosts:
            raise ValueError("allowed_hosts contains an empty host name")
        types = tuple(t.strip().lower() for t in self.allowed_types)
        for pattern in types:
            if not _is_type_pattern(pattern):
                raise ValueError(f"allowed_types: {pattern!r} is not 'type/subtype' or 'type/*'")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        # frozen: the normalised values replace the given ones once, here.
        object.__setattr__(self, "allowed_hosts", hosts)
        object.__setattr__(self, "allowed_types", types)

    def type_allowed(self, media_type: str) -> bool:
        """Whether a media type (no parameters) matches one of ``allowed_types``."""
        media_type = media_type.strip().lower()
        if not _is_token_type(media_type):
            return False
        major = media_type.split("/", 1)[0]
        return any(p == media_type or p == f"{major}/*" for p in self.allowed_types)

    def check_address(self, host: str, address: str) -> None:
        """Raise :class:`AddressNotAllowed` unless ``address`` may be connected to."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise AddressNotAllowed(host, address) from None
        for candidate in (ip, *_embedded_ipv4(ip)):
            if not _address_ok(candidate, self.allow_private):
                raise AddressNotAllowed(host, address)


def _address_ok(ip: IPAddress, allow_private: bool) -> bool:
    if ip in METADATA_ADDRESSES:
        return False
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return False
    if ip.is_global:
        return True
    # Not global: private, loopback, link-local, shared (100.64/10), documentation...
    return allow_private


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for, which is where a packet goes."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _is_token_type(media_type: str) -> bool:
    major, slash, minor = media_type.partition("/")
    return bool(slash) and _is_token(major) and _is_token(minor) and len(media_type) <= 127


def _is_type_pattern(pattern: str) -> bool:
    major, slash, minor = pattern.partition("/")
    return bool(slash) and _is_token(major) and (minor == "*" or _is_token(minor))


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$&-^_.+")


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def _shown(host: str) -> str:
    # A host name comes from a webhook or a redirect: keep what a reader sees short
    # and printable.
    host = "".join(c for c in host if c.isprintable())
    return host if len(host) <= 80 else host[:77] + "..."


def _size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n // 1024} KB"
    return f"{n} bytes"


# --------------------------------------------------------------------------- resolution


class HostResolver(Protocol):
    """Name -> addresses, the only DNS question the fetcher asks. Answers IP address
    strings; a name without addresses is an empty list or an ``OSError``."""

    async def addresses(self, host: str) -> Sequence[str]: ...


class SystemHostResolver:
    """The system's resolver (``getaddrinfo`` on the event loop's executor)."""

    async def addresses(self, host: str) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        found: list[str] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                address = str(sockaddr[0])
                if address not in found:
                    found.append(address)
        return found


class StaticHostResolver:
    """Answers from a fixed table (tests, or names an operator pins on purpose).
    Unknown names have no addresses. ``calls`` lists every name asked, in order."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self._table: dict[str, tuple[str, ...]] = {}
        for name, addresses in table.items():
            if isinstance(addresses, str):
                raise ValueError(f"{name}: expected a list of addresses")
            self._table[_normal_host(name)] = tuple(str(ipaddress.ip_address(a)) for a in addresses)
        self.calls: list[str] = []

    async def addresses(self, host: str) -> Sequence[str]:
        self.calls.append(host)
        return self._table.get(_normal_host(host), ())


class GuardedResolver(AbstractResolver):
    """The aiohttp resolver of a fetcher's connector: asks a :class:`HostResolver`
    and refuses the host (:class:`AddressNotAllowed`) unless every address passes
    the policy. aiohttp connects to the returned numeric addresses directly, so
    the address checked is the address connected to."""

    def __init__(self, names: HostResolver, policy: MediaPolicy) -> None:
        self._names = names
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = list(await self._names.addresses(host))
        if not addresses:
            # OSError is what aiohttp turns into ClientConnectorDNSError.
            raise OSError(f"no address for {host}")
        for address in addresses:
            self._policy.check_address(host, address)
        results: list[ResolveResult] = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            ip_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, ip_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(ip),
                    port=port,
                    family=ip_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no address of the requested family for {host}")
        return results

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- budget


class ByteBudget:
    """The bytes one message's media may still take, shared by its concurrent
    fetches (event-loop confined, so no lock). A fetch that fails gives back what
    it took: only stored media count against the message."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a byte budget must be positive")
        self.total = total
        self._used = 0

    @property
    def remaining(self) -> int:
        return self.total - self._used

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (and nothing reserved) when they do not fit."""
        if n > self.remaining:
            return False
        self._used += n
        return True

    def give_back(self, n: int) -> None:
        self._used = max(0, self._used - n)


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class Fetched:
    """One fetched media file. ``content_type`` is the response's media type without
    parameters, lower-cased; ``sha256`` the hex digest of ``data`` (the blob store's
    key). ``final_url`` is where the bytes came from after redirects, without its
    query: a CDN's signed query is a bearer credential for hours and must not end
    up in rows or logs."""

    content_type: str
    data: bytes = field(repr=False)
    final_url: str
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


class MediaFetcher:
    """Fetches media under one :class:`MediaPolicy` through its own guarded
    connection pool. Use as an async context manager (or call :meth:`close`); the
    session is opened on first use, so the fetcher may be built outside a loop.

    ``resolver`` replaces the system's name resolution (tests map names to the
    addresses of local fakes); its answers are checked all the same.
    """

    def __init__(self, policy: MediaPolicy, *, resolver: HostResolver | None = None) -> None:
        self.policy = policy
        self._names: HostResolver = resolver if resolver is not None else SystemHostResolver()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._names, self.policy))
            self._session = aiohttp.ClientSession(
                connector=connector,
                # No proxy or .netrc from the environment: a proxy would resolve
                # names itself, past the guarded resolver.
                trust_env=False,
                # Cookies set by one host must not follow a redirect to another.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.policy.timeout_s),
                headers={"User-Agent": "OptMsg-gateway media fetcher"},
            )
        return self._session

    async def fetch(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        max_bytes: int | None = None,
        budget: ByteBudget | None = None,
    ) -> Fetched:
        """Fetch one media URL, following redirects under the policy.

        ``auth`` (user, password) is sent as HTTP Basic to the URL's own origin
        only. The body may be at most ``max_bytes`` (default and ceiling: the
        policy's ``max_bytes``) and at most what ``budget`` has left. Raises a
        :class:`MediaRefused` subclass for everything that is not a success.
        """
        limit = (
            self.policy.max_bytes if max_bytes is None else min(max_bytes, self.policy.max_bytes)
        )
        if limit < 1:
            # The caller's per-message budget is spent: nothing more fits in this message.
            raise TooLarge(self.policy.max_bytes, whole_message=True)
        authorization = _basic_auth(*auth) if auth is not None else None
        taken = _Taken(budget)
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url, authorization, limit, taken)
        except MediaRefused:
            taken.refund()
            raise
        except TimeoutError:
            taken.refund()
            raise FetchFailed(
                "The attachment could not be downloaded in time.", retryable=True
            ) from None
        except BaseException:
            taken.refund()
            raise

    async def _follow(
        self, url: str, authorization: str | None, limit: int, taken: _Taken
    ) -> Fetched:
        current = self._checked_url(url, base=None)
        origin = current.origin()
        session = self._client()
        for _hop in range(self.policy.max_redirects + 1):
            headers = {"Accept-Encoding": "identity"}
            if authorization is not None and current.origin() == origin:
                headers["Authorization"] = authorization
            try:
                async with session.get(current, headers=headers, allow_redirects=False) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        current = self._redirect_target(resp, current)
                        resp.close()  # the redirect's body is not worth reading
                        continue
                    return await self._accept(resp, current, limit, taken)
            except MediaRefused:
                raise
            except aiohttp.ClientConnectorDNSError:
                raise FetchFailed(
                    f"The attachment host {_shown(current.raw_host or '')} could not be found.",
                    retryable=True,
                ) from None
            except (aiohttp.InvalidURL, ValueError):
                raise BadUrl("The attachment link is not a valid web address.") from None
            except aiohttp.ClientResponseError:
                # A response aiohttp could not parse (oversized header, bad framing).
                raise FetchFailed(
                    "The attachment server sent an invalid answer.", retryable=False
                ) from None
            except aiohttp.ClientError:
                raise FetchFailed(
                    f"The attachment host {_shown(current.raw_host or '')} could not be reached.",
                    retryable=True,
                ) from None
        raise TooManyRedirects(self.policy.max_redirects)

    def _checked_url(self, raw: str | URL, *, base: URL | None) -> URL:
        try:
            url = raw if isinstance(raw, URL) else URL(raw)
            if base is not None and not url.is_absolute():
                url = base.join(url)
        except (ValueError, TypeError):
            raise BadUrl("The attachment link is not a valid web address.") from None
        scheme = url.scheme.lower()
        if scheme not in ("http", "https") or (scheme == "http" and not self.policy.allow_http):
            raise SchemeNotAllowed(scheme)
        if not url.raw_host:
            raise BadUrl("The attachment link is not a valid web address.")
        if url.raw_user is not None or url.raw_password is not None:
            raise BadUrl("The attachment link contains a user name or password.")
        host = _normal_host(url.raw_host)
        if host not in self.policy.allowed_hosts:
            raise HostNotAllowed(host)
        # aiohttp treats any host with a colon, or made of digits and dots, as an
        # IP literal and connects without asking the resolver, so check those here.
        if ":" in host or host.replace(".", "").isdigit():
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise BadUrl("The attachment link has a malformed address.") from None
            self.policy.check_address(host, host)
        return url.with_fragment(None)

    def _redirect_target(self, resp: aiohttp.ClientResponse, current: URL) -> URL:
        location = resp.headers.get("Location", "").strip()
        if not location:
            raise FetchFailed(
                f"The attachment server answered {resp.status} without saying where to go.",
                retryable=False,
                status=resp.status,
            )
        return self._checked_url(location, base=current)

    async def _accept(
        self, resp: aiohttp.ClientResponse, url: URL, limit: int, taken: _Taken
    ) -> Fetched:
        if not 200 <= resp.status < 300:
            resp.close()
            raise _status_failure(resp)
        media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if not self.policy.type_allowed(media_type):
            resp.close()
            raise TypeNotAllowed(media_type)
        declared = resp.content_length
        if declared is not None:
            if declared > limit:
                resp.close()
                raise TooLarge(limit)
            if taken.budget is not None and declared > taken.budget.remaining:
                resp.close()
                raise TooLarge(taken.budget.total, whole_message=True)
        chunks: list[bytes] = []
        received = 0
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            received += len(chunk)
            if received > limit:
                resp.close()
                raise TooLarge(limit)
            if not taken.take(len(chunk)):
                resp.close()
                assert taken.budget is not None
                raise TooLarge(taken.budget.total, whole_message=True)
            chunks.append(chunk)
        if received == 0:
            raise FetchFailed("The attachment is empty.", retryable=False, status=resp.status)
        data = b"".join(chunks)
        return Fetched(
            content_type=media_type,
            data=data,
            final_url=str(url.with_query(None)),
            sha256=hashlib.sha256(data).hexdigest(),
        )


class _Taken:
    """What one fetch has reserved from a shared budget, to give it back on failure."""

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.n = 0

    def take(self, n: int) -> bool:
        if self.budget is None:
            return True
        if not self.budget.take(n):
            return False
        self.n += n
        return True

    def refund(self) -> None:
        if self.budget is not None and self.n:
            self.budget.give_back(self.n)
            self.n = 0


def _basic_auth(user: str, password: str) -> str:
    # Built by hand: aiohttp's BasicAuth is deprecated and its replacement is
    # too new to rely on.
    if ":" in user:
        raise ValueError("a Basic auth user name cannot contain ':'")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _status_failure(resp: aiohttp.ClientResponse) -> FetchFailed:
    status = resp.status
    retryable = status >= 500 or status in _RETRYABLE_4XX
    phrase = "".join(c for c in (resp.reason or "") if c.isprintable())[:60]
    answered = f"{status} ({phrase})" if phrase else str(status)
    return FetchFailed(
        f"The attachment could not be downloaded: the server answered {answered}.",
        retryable=retryable,
        status=status,
        retry_after=_retry_after(resp.headers.get("Retry-After")) if retryable else None,
    )


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form: an HTTP-date needs a trustworthy clock on both ends.
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), _MAX_RETRY_AFTER_S)


async def fetch(
    url: str,
    *,
    policy: MediaPolicy,
    auth: tuple[str, str] | None = None,
    max_bytes: int | None = None,
    resolver: HostResolver | None = None,
) -> Fetched:
    """Fetch one media URL with a fetcher of its own (see :meth:`MediaFetcher.fetch`)."""
    async with MediaFetcher(policy, resolver=resolver) as fetcher:
        return await fetcher.fetch(url, auth=auth, max_bytes=max_bytes)


async def fetch_all(
    urls: Sequence[str],
    *,
    policy: MediaPolicy,
    auth: tuple[str, str] | None = None,
    max_total_bytes: int | None = None,
    resolver: HostResolver | None = None,
) -> list[Fetched | MediaRefused]:
    """Fetch one message's media concurrently; the result for ``urls[i]`` is at
    index ``i``, a :class:`Fetched` or the :class:`MediaRefused` that stopped it.
    All of them together may take ``max_total_bytes`` (default: the policy's
    ``max_bytes``, which is Twilio's per-message cap)."""
    if not urls:
        return []
    budget = ByteBudget(policy.max_bytes if max_total_bytes is None else max_total_bytes)

    async def one(fetcher: MediaFetcher, url: str) -> Fetched | MediaRefused:
        try:
            return await fetcher.fetch(url, auth=auth, budget=budget)
        except MediaRefused as refused:
            return refused

    # A TaskGroup, not gather: a bug (anything but MediaRefused) in one fetch
    # cancels the others instead of leaving them running unobserved.
    async with MediaFetcher(policy, resolver=resolver) as fetcher, asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(fetcher, url)) for url in urls]
    return [task.result() for task in tasks]
