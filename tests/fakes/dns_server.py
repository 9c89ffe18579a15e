"""A DNS server on 127.0.0.1 (UDP) that answers from a table, for tests and benchmarks
that run ``optmsg serve`` with ``smtp.dns_servers`` and must not depend on the
machine's resolver.

Names it has no record for get NXDOMAIN with an SOA in the authority section, as a
real zone answers, so that resolvers cache the negative answer for its TTL.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# name -> record type -> records in zone-file text ("v=spf1 -all" for TXT is quoted here).
Records = Mapping[str, Mapping[str, Sequence[str]]]

_SOA = "ns.fake.invalid. hostmaster.fake.invalid. 1 3600 600 86400 300"


class FakeDnsServer:
    """``with FakeDnsServer(records) as dns:`` serves on ``dns.address`` (IP, port)
    until the block ends. ``queries`` counts the questions received."""

    def __init__(self, records: Records, *, ttl: int = 300) -> None:
        self._records = {
            dns.name.from_text(name): {kind.upper(): list(values) for kind, values in kinds.items()}
            for name, kinds in records.items()
        }
        self._ttl = ttl
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address: tuple[str, int] = self._sock.getsockname()
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    @property
    def server(self) -> str:
        """The ``smtp.dns_servers`` entry for this server."""
        return f"{self.address[0]}:{self.address[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue  # garbage gets no answer
            self.queries += 1
            self._sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        question = query.question[0]
        kinds = self._records.get(question.name)
        if kinds is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(
                dns.rrset.from_text(question.name, self._ttl, "IN", "SOA", _SOA)
            )
            return response
        values = kinds.get(dns.rdatatype.to_text(question.rdtype), [])
        if values:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, self._ttl, dns.rdataclass.IN, question.rdtype, values
                )
            )
        else:  # the name exists, without records of this type: NOERROR, no answer
            response.authority.append(
                dns.rrset.from_text(question.name, self._ttl, "IN", "SOA", _SOA)
            )
        return response
