"""The SSRF-safe MMS media fetcher against fake media hosts on 127.0.0.1.

Two fakes play Twilio's API (``api.test``, demands Basic auth) and its CDN
(``cdn.test``, refuses any Authorization header as S3 does); a third plays a host
that is not on the allow-list. Names reach them only through the fetcher's
injectable resolver, so every hop goes through the same checks as in production.
Most tests allow private addresses (the fakes are on loopback); the address tests
do not, and prove with the fakes' connection counters that nothing reached them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import pickle
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from bridges.media import (
    DEFAULT_TYPES,
    AddressNotAllowed,
    BadUrl,
    ByteBudget,
    Fetched,
    FetchFailed,
    HostNotAllowed,
    MediaFetcher,
    MediaPolicy,
    MediaRefused,
    SchemeNotAllowed,
    StaticHostResolver,
    TooLarge,
    TooManyRedirects,
    TypeNotAllowed,
    fetch,
    fetch_all,
)
from tests.fakes.media_server import JPEG, MediaServer, media_bytes

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "media-auth-token-" + "0123456789abcdef"
CREDENTIALS = (ACCOUNT_SID, AUTH_TOKEN)
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
ALLOWED = frozenset({"api.test", "cdn.test", "internal.test", "metadata.test", "gone.test"})
TEST_CAP = 256 * 1024


@pytest.fixture
async def api() -> AsyncIterator[MediaServer]:
    async with MediaServer("api.test", credentials=CREDENTIALS) as server:
        yield server


@pytest.fixture
async def cdn() -> AsyncIterator[MediaServer]:
    async with MediaServer("cdn.test", refuse_authorization=True) as server:
        yield server


@pytest.fixture
async def evil() -> AsyncIterator[MediaServer]:
    async with MediaServer("evil.test") as server:
        yield server


@pytest.fixture
def resolver() -> StaticHostResolver:
    return StaticHostResolver(
        {
            "api.test": ["127.0.0.1"],
            "cdn.test": ["127.0.0.1"],
            "evil.test": ["127.0.0.1"],
            "internal.test": ["127.0.0.1"],
            "metadata.test": ["169.254.169.254"],
            "mapped.test": ["::ffff:127.0.0.1"],
            "mixed.test": ["93.184.216.34", "127.0.0.1"],
        }
    )


def make_policy(**changes: Any) -> MediaPolicy:
    """The fakes' policy: plain http and loopback allowed, a small cap, fast timeout."""
    settings: dict[str, Any] = {
        "allowed_hosts": ALLOWED,
        "allow_http": True,
        "allow_private": True,
        "max_bytes": TEST_CAP,
        "allowed_types": DEFAULT_TYPES,
        "timeout_s": 2.0,
    }
    settings.update(changes)
    return MediaPolicy(**settings)


@pytest.fixture
async def fetcher(resolver: StaticHostResolver) -> AsyncIterator[MediaFetcher]:
    async with MediaFetcher(make_policy(), resolver=resolver) as media:
        yield media


async def refused(
    fetcher: MediaFetcher, url: str, *, auth: tuple[str, str] | None = CREDENTIALS, **kw: Any
) -> MediaRefused:
    """The refusal a fetch ends in; its reason must be fit to show a user."""
    with pytest.raises(MediaRefused) as caught:
        await fetcher.fetch(url, auth=auth, **kw)
    reason = caught.value.reason
    assert reason and reason[0].isupper() and reason.endswith(".")
    assert AUTH_TOKEN not in reason and ACCOUNT_SID not in reason
    assert "://" not in reason and "?" not in reason
    assert str(caught.value) == reason
    return caught.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- success


async def test_one_media_is_fetched_with_basic_auth(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    got = await fetcher.fetch(api.url("/image.jpg"), auth=CREDENTIALS)
    assert got.data == JPEG
    assert got.content_type == "image/jpeg"
    assert got.sha256 == hashlib.sha256(JPEG).hexdigest()
    assert got.size == len(JPEG)
    assert got.final_url == api.url("/image.jpg")
    assert api.authorizations == [BASIC]


async def test_zero_media_fetch_nothing(resolver: StaticHostResolver, api: MediaServer) -> None:
    assert await fetch_all([], policy=make_policy(), auth=CREDENTIALS, resolver=resolver) == []
    assert api.connections == 0
    assert resolver.calls == []


async def test_ten_media_fetched_concurrently_within_the_message_budget(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    bodies = [media_bytes(n) for n in range(10)]
    budget = ByteBudget(sum(map(len, bodies)))  # exactly enough
    results = await asyncio.gather(
        *(fetcher.fetch(api.url(f"/media/{n}"), auth=CREDENTIALS, budget=budget) for n in range(10))
    )
    assert [r.data for r in results] == bodies
    assert budget.remaining == 0
    assert len(api.requests) == 10


async def test_fetch_all_returns_results_in_url_order(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    urls = [api.url(f"/media/{n}") for n in range(10)]
    results = await fetch_all(urls, policy=make_policy(), auth=CREDENTIALS, resolver=resolver)
    assert [r.data for r in results if isinstance(r, Fetched)] == [
        media_bytes(n) for n in range(10)
    ]


async def test_media_past_the_message_total_are_refused_and_the_rest_kept(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    size = len(media_bytes(0))  # every /media/{n} body has the same length
    urls = [api.url(f"/media/{n}") for n in range(10)]
    results = await fetch_all(
        urls,
        policy=make_policy(),
        auth=CREDENTIALS,
        max_total_bytes=4 * size + size // 2,
        resolver=resolver,
    )
    fetched = [r for r in results if isinstance(r, Fetched)]
    too_large = [r for r in results if isinstance(r, TooLarge)]
    assert len(fetched) == 4
    assert len(too_large) == 6
    assert "attachments of this message are larger than" in too_large[0].reason


async def test_one_shot_fetch_closes_its_session(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    got = await fetch(
        api.url("/image.jpg"), policy=make_policy(), auth=CREDENTIALS, resolver=resolver
    )
    assert got.data == JPEG  # an unclosed session would fail the test as a ResourceWarning


# --------------------------------------------------------------------------- redirects


async def test_redirect_to_the_cdn_is_followed(
    fetcher: MediaFetcher, api: MediaServer, cdn: MediaServer
) -> None:
    target = cdn.url("/image.jpg?X-Amz-Signature=secret-ish")
    got = await fetcher.fetch(api.url(f"/redirect?to={target}"), auth=CREDENTIALS)
    assert got.data == JPEG
    assert got.final_url == cdn.url("/image.jpg")  # the signed query is dropped


async def test_authorization_reaches_the_api_host_but_not_the_cdn(
    fetcher: MediaFetcher, api: MediaServer, cdn: MediaServer
) -> None:
    await fetcher.fetch(api.url(f"/redirect?to={cdn.url('/image.jpg')}"), auth=CREDENTIALS)
    assert api.authorizations == [BASIC]
    assert cdn.authorizations == [None]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_followed(
    fetcher: MediaFetcher, api: MediaServer, cdn: MediaServer, status: int
) -> None:
    url = api.url(f"/redirect?status={status}&to={cdn.url('/image.jpg')}")
    assert (await fetcher.fetch(url, auth=CREDENTIALS)).data == JPEG


async def test_redirect_to_a_host_not_allowed_is_refused_before_contacting_it(
    fetcher: MediaFetcher, api: MediaServer, evil: MediaServer
) -> None:
    err = await refused(fetcher, api.url(f"/redirect?to={evil.url('/image.jpg')}"))
    assert isinstance(err, HostNotAllowed)
    assert err.host == "evil.test"
    assert "evil.test" in err.reason
    assert evil.connections == 0


async def test_redirect_to_a_metadata_address_is_refused(
    fetcher: MediaFetcher, api: MediaServer, resolver: StaticHostResolver
) -> None:
    err = await refused(fetcher, api.url("/redirect?to=http://metadata.test/latest/meta-data/iam/"))
    assert isinstance(err, AddressNotAllowed)
    assert err.address == "169.254.169.254"
    assert resolver.calls[-1] == "metadata.test"


async def test_redirect_to_another_scheme_is_refused(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url("/redirect?to=ftp://cdn.test/image.jpg"))
    assert isinstance(err, SchemeNotAllowed)


async def test_redirect_loop_ends_with_too_many_redirects(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url("/loop"))
    assert isinstance(err, TooManyRedirects)
    # Same origin all along, so the credentials went with every hop.
    assert api.authorizations == [BASIC] * (fetcher.policy.max_redirects + 1)


async def test_redirect_without_location_fails_for_good(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url("/no-location"))
    assert isinstance(err, FetchFailed)
    assert (err.status, err.retryable) == (302, False)


# --------------------------------------------------------------------------- size


async def test_chunked_body_over_the_cap_is_refused(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url(f"/chunked?size={8 * 1024 * 1024}"))
    assert isinstance(err, TooLarge)
    assert err.limit == TEST_CAP
    assert err.reason == "The attachment is larger than the 256 KB limit."


async def test_declared_length_over_the_cap_is_refused_before_reading(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    # The fake never finishes that body: reading it would run into the timeout.
    started = time.monotonic()
    err = await refused(fetcher, api.url("/declared-huge"))
    assert isinstance(err, TooLarge)
    assert time.monotonic() - started < 1.0


async def test_caller_max_bytes_lowers_the_cap(fetcher: MediaFetcher, api: MediaServer) -> None:
    err = await refused(fetcher, api.url("/image.jpg"), max_bytes=100)
    assert isinstance(err, TooLarge)
    assert err.limit == 100


async def test_spent_message_budget_refuses_without_a_request(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url("/image.jpg"), max_bytes=0)
    assert isinstance(err, TooLarge)
    assert err.reason == "The attachments of this message are larger than the 256 KB limit."
    assert api.connections == 0


async def test_empty_body_is_refused(fetcher: MediaFetcher, api: MediaServer) -> None:
    err = await refused(fetcher, api.url("/empty"))
    assert isinstance(err, FetchFailed)
    assert not err.retryable
    assert err.reason == "The attachment is empty."


# --------------------------------------------------------------------------- type


@pytest.mark.parametrize(
    "content_type", ["text/html", "image/svg+xml", "application/octet-stream", "nonsense"]
)
async def test_disallowed_type_is_refused(
    fetcher: MediaFetcher, api: MediaServer, content_type: str
) -> None:
    err = await refused(fetcher, api.url(f"/typed?ct={quote(content_type, safe='/')}"))
    assert isinstance(err, TypeNotAllowed)
    if "/" in content_type:
        assert content_type in err.reason


async def test_type_is_matched_without_case_or_parameters(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    got = await fetcher.fetch(api.url("/typed?ct=Video/MP4;%20codecs=avc1"))
    assert got.content_type == "video/mp4"


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (403, False), (500, True), (503, True), (429, True)]
)
async def test_http_error_status_fails_with_its_retryable_flag(
    fetcher: MediaFetcher, api: MediaServer, status: int, retryable: bool
) -> None:
    err = await refused(fetcher, api.url(f"/status/{status}"))
    assert isinstance(err, FetchFailed)
    assert (err.status, err.retryable) == (status, retryable)
    assert str(status) in err.reason


async def test_too_many_requests_carries_retry_after(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    err = await refused(fetcher, api.url("/status/429"))
    assert isinstance(err, FetchFailed)
    assert err.retry_after == 7.0


async def test_wrong_credentials_fail_for_good(fetcher: MediaFetcher, api: MediaServer) -> None:
    err = await refused(fetcher, api.url("/image.jpg"), auth=(ACCOUNT_SID, "wrong"))
    assert isinstance(err, FetchFailed)
    assert (err.status, err.retryable) == (401, False)


async def test_connection_refused_is_retryable(fetcher: MediaFetcher) -> None:
    err = await refused(fetcher, f"http://api.test:{closed_port()}/image.jpg")
    assert isinstance(err, FetchFailed)
    assert err.retryable
    assert err.status is None


async def test_name_that_does_not_resolve_is_retryable(fetcher: MediaFetcher) -> None:
    err = await refused(fetcher, "http://gone.test/image.jpg")
    assert isinstance(err, FetchFailed)
    assert err.retryable
    assert "gone.test could not be found" in err.reason


async def test_slow_response_times_out_retryable(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    started = time.monotonic()
    async with MediaFetcher(make_policy(timeout_s=0.3), resolver=resolver) as quick:
        err = await refused(quick, api.url("/slow"))
    assert isinstance(err, FetchFailed)
    assert err.retryable
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- URL checks


async def test_http_is_refused_unless_allowed(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    async with MediaFetcher(make_policy(allow_http=False), resolver=resolver) as strict:
        err = await refused(strict, api.url("/image.jpg"))
    assert isinstance(err, SchemeNotAllowed)
    assert api.connections == 0


@pytest.mark.parametrize(
    "url", ["ftp://api.test/image.jpg", "file:///etc/passwd", "gopher://api.test/"]
)
async def test_other_schemes_are_refused(fetcher: MediaFetcher, url: str) -> None:
    assert isinstance(await refused(fetcher, url), SchemeNotAllowed)


async def test_host_not_on_the_list_is_refused_without_a_lookup(
    fetcher: MediaFetcher, evil: MediaServer, resolver: StaticHostResolver
) -> None:
    err = await refused(fetcher, evil.url("/image.jpg"))
    assert isinstance(err, HostNotAllowed)
    assert resolver.calls == []
    assert evil.connections == 0


async def test_subdomain_of_an_allowed_host_is_not_allowed(fetcher: MediaFetcher) -> None:
    err = await refused(fetcher, "http://x.api.test/image.jpg")
    assert isinstance(err, HostNotAllowed)


async def test_url_with_user_info_is_refused(fetcher: MediaFetcher, api: MediaServer) -> None:
    err = await refused(fetcher, f"http://user:pw@api.test:{api.port}/image.jpg")
    assert isinstance(err, BadUrl)
    assert api.connections == 0


async def test_host_name_is_matched_without_case_or_trailing_dot(
    fetcher: MediaFetcher, api: MediaServer
) -> None:
    got = await fetcher.fetch(f"http://API.Test.:{api.port}/image.jpg", auth=CREDENTIALS)
    assert got.data == JPEG


# --------------------------------------------------------------------------- addresses


async def test_host_resolving_to_loopback_is_refused_and_never_contacted(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    async with MediaFetcher(make_policy(allow_private=False), resolver=resolver) as strict:
        err = await refused(strict, f"http://internal.test:{api.port}/image.jpg")
    assert isinstance(err, AddressNotAllowed)
    assert (err.host, err.address) == ("internal.test", "127.0.0.1")
    assert "internal.test" in err.reason
    assert api.connections == 0
    assert api.requests == []


@pytest.mark.parametrize("allow_private", [False, True])
async def test_host_resolving_to_the_metadata_address_is_refused(
    resolver: StaticHostResolver, allow_private: bool
) -> None:
    # Nothing listens on 169.254.169.254 here: a connection attempt would end in a
    # connection error (or a timeout), not in this refusal.
    started = time.monotonic()
    async with MediaFetcher(make_policy(allow_private=allow_private), resolver=resolver) as m:
        err = await refused(m, "http://metadata.test/latest/meta-data/")
    assert isinstance(err, AddressNotAllowed)
    assert err.address == "169.254.169.254"
    assert resolver.calls == ["metadata.test"]
    assert time.monotonic() - started < 1.0


async def test_answer_mixing_public_and_private_addresses_is_refused(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    policy = make_policy(allowed_hosts=ALLOWED | {"mixed.test"}, allow_private=False)
    async with MediaFetcher(policy, resolver=resolver) as strict:
        err = await refused(strict, f"http://mixed.test:{api.port}/image.jpg")
    assert isinstance(err, AddressNotAllowed)
    assert api.connections == 0


async def test_ipv4_mapped_ipv6_loopback_is_refused(resolver: StaticHostResolver) -> None:
    policy = make_policy(allowed_hosts=ALLOWED | {"mapped.test"}, allow_private=False)
    async with MediaFetcher(policy, resolver=resolver) as strict:
        err = await refused(strict, "http://mapped.test/image.jpg")
    assert isinstance(err, AddressNotAllowed)


async def test_ip_literal_loopback_is_refused_without_connecting(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    policy = make_policy(allowed_hosts=ALLOWED | {"127.0.0.1"}, allow_private=False)
    async with MediaFetcher(policy, resolver=resolver) as strict:
        err = await refused(strict, f"http://127.0.0.1:{api.port}/image.jpg")
    assert isinstance(err, AddressNotAllowed)
    assert api.connections == 0
    assert resolver.calls == []  # aiohttp never resolves a literal: the check is ours


async def test_ip_literal_metadata_address_is_refused(resolver: StaticHostResolver) -> None:
    policy = make_policy(allowed_hosts=ALLOWED | {"169.254.169.254"})
    async with MediaFetcher(policy, resolver=resolver) as m:
        err = await refused(m, "http://169.254.169.254/latest/meta-data/")
    assert isinstance(err, AddressNotAllowed)


async def test_ip_literal_is_fetched_when_listed_and_private_allowed(
    resolver: StaticHostResolver, api: MediaServer
) -> None:
    policy = make_policy(allowed_hosts=ALLOWED | {"127.0.0.1"})
    async with MediaFetcher(policy, resolver=resolver) as m:
        got = await m.fetch(f"http://127.0.0.1:{api.port}/image.jpg", auth=CREDENTIALS)
    assert got.data == JPEG


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (CGNAT)
        "169.254.1.1",
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
    ],
)
def test_non_public_address_is_refused(address: str) -> None:
    with pytest.raises(AddressNotAllowed):
        make_policy(allow_private=False).check_address("h.test", address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "54.239.28.85"])
def test_public_address_is_accepted(address: str) -> None:
    make_policy(allow_private=False).check_address("h.test", address)


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "224.0.0.1"],  # noqa: S104
)
def test_allow_private_never_allows_metadata_unspecified_or_multicast(address: str) -> None:
    with pytest.raises(AddressNotAllowed):
        make_policy(allow_private=True).check_address("h.test", address)


# --------------------------------------------------------------------------- policy


def test_policy_normalises_hosts_and_types() -> None:
    policy = MediaPolicy(allowed_hosts=frozenset({"API.Twilio.com."}), allowed_types=("Image/*",))
    assert policy.allowed_hosts == frozenset({"api.twilio.com"})
    assert policy.type_allowed("image/png")
    assert not policy.type_allowed("video/mp4")


@pytest.mark.parametrize(
    "changes",
    [
        {"allowed_types": ("image",)},
        {"allowed_types": ("*/*",)},
        {"allowed_hosts": frozenset({""})},
        {"allowed_hosts": "api.twilio.com"},
        {"max_bytes": 0},
        {"max_redirects": -1},
        {"timeout_s": 0},
    ],
)
def test_policy_refuses_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        make_policy(**changes)


def test_default_types_exclude_svg() -> None:
    policy = MediaPolicy(allowed_hosts=frozenset({"api.twilio.com"}))
    assert policy.type_allowed("image/jpeg")
    assert not policy.type_allowed("image/svg+xml")


@pytest.mark.parametrize(
    "err",
    [
        HostNotAllowed("evil.test"),
        AddressNotAllowed("internal.test", "127.0.0.1"),
        TooLarge(100, whole_message=True),
        FetchFailed("The attachment is empty.", retryable=True, status=503, retry_after=7.0),
    ],
)
def test_refusals_survive_pickling(err: MediaRefused) -> None:
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, just made
    assert type(copy) is type(err)
    assert (copy.reason, copy.retryable, vars(copy)) == (err.reason, err.retryable, vars(err))
