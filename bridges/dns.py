"""DNS lookups for sender authentication, behind one small interface.

SPF, DKIM and DMARC only ever ask for a handful of record types. They ask a
:class:`Resolver`, so that production uses the system's name servers
(:class:`SystemResolver`) while tests, and operators who pin records on purpose,
answer from a fixed table (:class:`StaticResolver`) with the same semantics:

* a name or record that does not exist is an empty list, never an error;
* a lookup whose answer is unknown (timeout, SERVFAIL, no reachable server)
  raises :class:`~bridges.errors.DnsTempError`, so callers can say
  ``temperror`` instead of mistaking "unknown" for "absent".

Names are given without a trailing dot and compared case-insensitively.
Resolvers are blocking: call them (and :func:`bridges.email_auth.authenticate`)
from a worker thread, never on the event loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from bridges.errors import DnsTempError

#: Record types a :class:`StaticResolver` table may hold.
RECORD_TYPES = frozenset({"TXT", "A", "AAAA", "MX", "PTR", "CNAME"})
_MAX_CNAME_CHAIN = 8  # as a recursive resolver would: a loop must end somewhere


class Resolver(Protocol):
    """The lookups sender authentication needs. See the module docstring for the
    empty-list / :class:`DnsTempError` contract every implementation keeps."""

    def txt(self, name: str) -> list[str]:
        """Each TXT record's character-strings joined into one string."""
        ...

    def a(self, name: str) -> list[str]:
        """IPv4 addresses, dotted quad."""
        ...

    def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses, compressed form."""
        ...

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange host name) pairs."""
        ...

    def ptr(self, ip: str) -> list[str]:
        """Host names the reverse zone gives for an IP address."""
        ...


def _canonical_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _decode_txt(strings: Iterable[bytes]) -> str:
    # TXT data is bytes with no charset. The records we read (SPF, DKIM keys,
    # DMARC) are ASCII by definition, so undecodable bytes are replaced: the
    # record stays non-ASCII and the parsers reject it, as they must.
    return b"".join(strings).decode("utf-8", errors="replace")


def _shown(server: object) -> str:
    if isinstance(server, dns.nameserver.Do53Nameserver) and server.port != 53:
        return f"{server.address}@{server.port}"
    if isinstance(server, dns.nameserver.Do53Nameserver):
        return str(server.address)
    return str(server)


class SystemResolver:
    """The system's (or the given) recursive name servers, through dnspython.

    ``timeout`` bounds each lookup as a whole (dnspython's *lifetime*: all
    retries and servers included), so one SPF or DKIM evaluation cannot hang on
    a dead server. Answers are cached for their TTL in an LRU cache, because the
    same few sending domains arrive over and over.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        nameservers: Sequence[str | tuple[str, int]] | None = None,
        cache_size: int = 10_000,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        # configure=True reads /etc/resolv.conf; with explicit servers it is not read,
        # so a host without one (containers) can still be pointed at a resolver.
        self._resolver = dns.resolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            if not nameservers:
                raise ValueError("nameservers must not be empty")
            # (IP, port) for a server off port 53 (smtp.dns_servers "IP:PORT").
            self._resolver.nameservers = [
                server if isinstance(server, str) else dns.nameserver.Do53Nameserver(*server)
                for server in nameservers
            ]
        self._resolver.lifetime = timeout
        # Per-server wait shorter than the lifetime, so a silent first server
        # leaves time to ask the next one.
        self._resolver.timeout = min(timeout, 2.0)
        self._resolver.use_search_by_default = False
        if cache_size > 0:
            self._resolver.cache = dns.resolver.LRUCache(cache_size)
        self.timeout = timeout

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as "IP" (port 53) or "IP@PORT"."""
        return [_shown(server) for server in self._resolver.nameservers]

    def _query(
        self, name: str | dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> list[dns.rdata.Rdata]:
        try:
            qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        except dns.exception.DNSException:
            return []  # not a valid DNS name (empty label, too long, bad IDNA): nothing there
        try:
            answer = self._resolver.resolve(qname, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except dns.exception.DNSException as exc:
            # Timeout, SERVFAIL from every server, no configured server...: unknown.
            raise DnsTempError(f"DNS lookup of {qname} {rdtype.name} failed: {exc}") from exc
        return list(answer)

    def txt(self, name: str) -> list[str]:
        return [
            _decode_txt(rdata.strings)
            for rdata in self._query(name, dns.rdatatype.TXT)
            if isinstance(rdata, TXT)
        ]

    def a(self, name: str) -> list[str]:
        return [
            str(rdata.address)
            for rdata in self._query(name, dns.rdatatype.A)
            if isinstance(rdata, A)
        ]

    def aaaa(self, name: str) -> list[str]:
        return [
            str(rdata.address)
            for rdata in self._query(name, dns.rdatatype.AAAA)
            if isinstance(rdata, AAAA)
        ]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return [
            (int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True).lower())
            for rdata in self._query(name, dns.rdatatype.MX)
            if isinstance(rdata, MX)
        ]

    def ptr(self, ip: str) -> list[str]:
        try:
            reverse = dns.reversename.from_address(ip)
        except (dns.exception.DNSException, ValueError):
            return []
        return [
            rdata.target.to_text(omit_final_dot=True).lower()
            for rdata in self._query(reverse, dns.rdatatype.PTR)
            if isinstance(rdata, PTR)
        ]


class StaticResolver:
    """Answers from a fixed table, with the same contract as :class:`SystemResolver`.

    ``records`` maps a name to ``{TYPE: [values]}``: TXT values are strings (one
    per record, already joined), A/AAAA addresses, MX ``(preference, host)``
    pairs, PTR and CNAME host names. PTR records live under the reverse name, as
    in DNS (``"1.2.0.192.in-addr.arpa"``). CNAMEs are followed when the name has
    no record of the asked type. Names in ``failing`` answer every lookup with
    :class:`DnsTempError`, like a zone whose servers return SERVFAIL.

    The table is validated and copied at construction, so a bad value is
    reported once, with its name, and later changes to the caller's dict have
    no effect.
    """

    def __init__(
        self,
        records: Mapping[str, Mapping[str, Sequence[object]]],
        *,
        failing: Iterable[str] = (),
    ) -> None:
        table: dict[tuple[str, str], tuple[object, ...]] = {}
        for raw_name, by_type in records.items():
            name = _canonical_name(raw_name)
            for raw_type, values in by_type.items():
                rtype = raw_type.upper()
                if rtype not in RECORD_TYPES:
                    raise ValueError(f"{raw_name}: unsupported record type {raw_type!r}")
                if isinstance(values, str | bytes):
                    raise ValueError(f"{raw_name} {rtype}: expected a list of values")
                table[(name, rtype)] = tuple(
                    _checked_value(raw_name, rtype, value) for value in values
                )
        self._table = table
        self._failing = frozenset(_canonical_name(name) for name in failing)

    def _lookup(self, name: str, rtype: str) -> tuple[object, ...]:
        current = _canonical_name(name)
        for _ in range(_MAX_CNAME_CHAIN + 1):
            if current in self._failing:
                raise DnsTempError(f"DNS lookup of {current} {rtype} failed: SERVFAIL")
            values = self._table.get((current, rtype))
            if values:
                return values
            alias = self._table.get((current, "CNAME"))
            if not alias:
                return ()
            current = str(alias[0])
        return ()  # a CNAME loop resolves to nothing, as NXDOMAIN would

    def txt(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "TXT")]

    def a(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "A")]

    def aaaa(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "AAAA")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        pairs: list[tuple[int, str]] = []
        for value in self._lookup(name, "MX"):
            assert isinstance(value, tuple)  # guaranteed by _checked_value
            pairs.append((int(value[0]), str(value[1])))
        return pairs

    def ptr(self, ip: str) -> list[str]:
        try:
            reverse = ipaddress.ip_address(ip).reverse_pointer
        except ValueError:
            return []
        return [str(value) for value in self._lookup(reverse, "PTR")]


def _checked_value(name: str, rtype: str, value: object) -> object:
    """One table value in its canonical form, or ValueError naming the record."""
    where = f"{name} {rtype}"
    if rtype == "TXT":
        if not isinstance(value, str):
            raise ValueError(f"{where}: a TXT value is a string")
        return value
    if rtype in {"A", "AAAA"}:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an IP address") from None
        if (address.version == 4) != (rtype == "A"):
            raise ValueError(f"{where}: {value!r} is not an IPv{4 if rtype == 'A' else 6} address")
        return str(address)
    if rtype == "MX":
        if (
            not isinstance(value, tuple | list)
            or len(value) != 2
            or not isinstance(value[0], int)
            or not isinstance(value[1], str)
        ):
            raise ValueError(f"{where}: an MX value is a (preference, host) pair")
        return (value[0], _canonical_name(value[1]))
    # PTR, CNAME: a host name
    if not isinstance(value, str) or not _canonical_name(value):
        raise ValueError(f"{where}: expected a host name")
    return _canonical_name(value)
