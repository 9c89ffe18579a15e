"""Which address a request came from, as the sign-in limits and abuse flags see it.

Without trusted proxies (``http.trusted_proxies`` empty) the client is the TCP peer and
``X-Forwarded-For`` is ignored: anyone can write that header. When the peer is a
trusted proxy, the header is read from the right: each trusted proxy appends the
address it received the request from, so the right-most entry that is not itself a
trusted proxy is the client. Entries further left were written by the client (or its
own proxies) and prove nothing, so prepending addresses cannot move a client into
another's bucket. A malformed entry stops the walk at the last trusted hop: the
request is then counted against that proxy rather than against an address we cannot
vouch for.

IPv6 clients are limited per /64: one host commonly holds a whole /64 and can pick a
new address from it for every request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Hops of X-Forwarded-For looked at, at most (a hostile header costs bounded work).
MAX_HOPS = 32
IPV6_BUCKET_PREFIX = 64
UNKNOWN = "unknown"


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``http.trusted_proxies`` (already validated by the settings)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def parse_address(text: str) -> Address | None:
    """An address as a peer or an X-Forwarded-For entry gives it, else None. Accepts
    the forms proxies write: a bare address, ``1.2.3.4:port`` and ``[v6]:port``.
    An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) is the
    IPv4 address."""
    text = text.strip()
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = inside
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def _forwarded_hops(headers: Sequence[str]) -> list[str]:
    # Several X-Forwarded-For headers read as one list, in the order received.
    hops = [hop for header in headers for hop in header.split(",")]
    return hops[-MAX_HOPS:]


def resolve(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, in which case the
    right-most X-Forwarded-For hop that is not a trusted proxy (see the module
    docstring). Never raises; an unreadable peer is returned as given (or "unknown")."""
    peer_address = parse_address(peer) if peer else None
    if peer_address is None:
        return peer or UNKNOWN
    if not proxies or not _trusted(peer_address, proxies):
        return str(peer_address)
    last_trusted = peer_address
    for hop in reversed(_forwarded_hops(forwarded_for)):
        address = parse_address(hop)
        if address is None:
            return str(last_trusted)
        if not _trusted(address, proxies):
            return str(address)
        last_trusted = address
    return str(last_trusted)


def bucket(address: str) -> str:
    """The key an address is limited and flagged under: an IPv4 address itself, an
    IPv6 address its /64 (``2001:db8:1:2::/64``). Anything unreadable stays as is."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed)
    return str(ipaddress.IPv6Network((parsed, IPV6_BUCKET_PREFIX), strict=False))
