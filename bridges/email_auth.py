"""Sender authentication for inbound email: SPF, DKIM and DMARC, and our own
Authentication-Results header.

* SPF (RFC 7208) is evaluated by pyspf for the connecting IP and the MAIL FROM
  domain, or the HELO name when MAIL FROM is empty (a bounce).
* DKIM (RFC 6376) signatures are verified by dkimpy, each one on its own.
* DMARC (RFC 7489) decides whether a passing SPF or DKIM identity *aligns* with
  the From domain, the one the reader sees; only an aligned pass authenticates
  the From address.

Every DNS question goes through an injected :class:`bridges.dns.Resolver`, so
tests run offline and the libraries' own resolvers are never used.

Nothing here raises on what a sender controls (message bytes, signatures, DNS
records): every problem becomes an RFC 8601 result word, with the reason in
:attr:`AuthOutcome.details`. Lookups block; run :func:`authenticate` in a worker
thread.

Organizational domains (for relaxed alignment and for finding a DMARC policy
above a subdomain) are computed by :func:`organizational_domain`, an
*approximation* of the Public Suffix List; read its docstring for what it gets
wrong.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
import spf
from dkim.canonicalization import CanonicalizationPolicy

from bridges.dns import Resolver
from bridges.errors import DnsTempError
from inbox.message import AuthResult, SenderAuth

#: RFC 7208 4.6.4: an SPF evaluation may be abandoned (temperror) after 20 s.
SPF_TIME_LIMIT_SECONDS = 20.0
#: Signatures verified per message; more are ignored (each costs a DNS lookup and
#: an RSA operation, and a sender gains nothing from piling them up).
MAX_DKIM_SIGNATURES = 8
#: RFC 8301 3.2: verifiers must not accept RSA keys shorter than 1024 bits.
MIN_DKIM_KEY_BITS = 1024

_DETAIL_MAX = 200  # sender-controlled text kept in details, per item

# dkimpy logs every bad signature at ERROR level; those are the sender's problems,
# reported in AuthOutcome.details, not our errors to page anyone about.
_DKIM_LOG = logging.getLogger(__name__ + ".dkimpy")
_DKIM_LOG.addHandler(logging.NullHandler())
_DKIM_LOG.propagate = False


@dataclass(frozen=True, slots=True)
class DkimSignature:
    """The verdict on one DKIM-Signature header field, in message order.

    ``domain`` (``d=``) and ``selector`` (``s=``) are None when the signature was
    too broken to name them."""

    domain: str | None
    selector: str | None
    result: AuthResult
    reason: str


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """Everything sender authentication found about one message.

    ``auth`` is what the opt-in decision reads. ``spf_domain`` is the domain SPF
    evaluated (MAIL FROM's, or HELO's for a bounce). ``dkim_domains`` are the
    ``d=`` of the signatures that passed. ``dmarc_policy`` is the policy that
    applies to the From domain (``sp=`` for a subdomain when given), None when no
    DMARC record was found. ``details`` explains each result for logs and support.
    """

    auth: SenderAuth
    spf_domain: str | None
    dkim_domains: tuple[str, ...]
    dmarc_policy: str | None
    details: str
    dkim_signatures: tuple[DkimSignature, ...] = ()


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

# Second-level labels that, under a two-letter country TLD, are almost always a
# registry's public suffix (example.co.uk, example.com.au, example.ne.jp).
_CCTLD_PUBLIC_SECOND_LEVEL = frozenset(
    {"ac", "co", "com", "edu", "go", "gov", "ltd", "ne", "net", "or", "org", "plc"}
)


def organizational_domain(domain: str) -> str:
    """The registered domain a name belongs to, by a simple rule instead of the
    Public Suffix List (no PSL package is installed).

    Rule: the last two labels (``mail.bank.example`` -> ``bank.example``), or the
    last three when the TLD has two letters and the label before it is one of
    ``ac co com edu go gov ltd ne net or org plc`` (``a.b.co.uk`` -> ``b.co.uk``).

    Known to be wrong for suffixes the rule does not know: registry suffixes such
    as ``ny.us`` or ``kawasaki.jp``, and the PSL's private section (``github.io``,
    ``duckdns.org``, cloud hosting). There, two unrelated customers of the same
    provider look like one organization, so relaxed alignment could accept one as
    the other; strict alignment (``adkim=s``/``aspf=s``) is exact and unaffected.
    Replace with a real PSL (the ``publicsuffixlist`` package) or the RFC 9989
    DNS tree walk before relying on relaxed alignment for such senders.
    """
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _CCTLD_PUBLIC_SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _ascii_domain(text: str | None) -> str | None:
    """A lower-case, ASCII (IDNA) multi-label host name, or None if ``text`` is not one."""
    if not text:
        return None
    candidate = text.strip().rstrip(".")
    if not candidate or len(candidate) > 253:
        return None
    try:
        ascii_name = candidate.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # an IP address, not a domain
    return ascii_name


def _aligned(identity: str, from_domain: str, mode: str) -> bool:
    if mode == "s":
        return identity == from_domain
    return organizational_domain(identity) == organizational_domain(from_domain)


def _clip(text: str) -> str:
    """Sender-controlled text made safe and short for a log line."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return printable[:_DETAIL_MAX]


class _SpfQuery(spf.query):  # type: ignore[misc]  # pyspf is untyped
    """pyspf's evaluation with its DNS answered by our resolver.

    pyspf funnels every lookup through ``query.dns(name, qtype)``, which caches
    answers, counts void lookups (RFC 7208 4.6.4) and calls the module-level
    dnspython driver. This override keeps the cache and the void-lookup limit and
    asks the resolver instead, returning exactly what pyspf's callers expect:
    TXT -> list of lists of bytes (one list per record), A/AAAA -> address
    strings, MX -> (preference, host) pairs, PTR -> host names.
    """

    def __init__(self, resolver: Resolver, *, client_ip: str, sender: str, helo: str) -> None:
        self._resolver = resolver
        self._deadline = time.monotonic() + SPF_TIME_LIMIT_SECONDS
        super().__init__(i=client_ip, s=sender, h=helo, strict=True)

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[Any]:
        if not name:
            raise spf.PermError("empty domain name in SPF evaluation")
        qname = str(name).rstrip(".").lower()
        if not all(0 < len(label) < 64 for label in qname.split(".")):
            return []  # cannot exist; as pyspf, not counted as a void lookup
        key = (qname, qtype)
        cached: list[Any] | None = self.cache.get(key)
        if cached:
            return cached
        result = self._lookup(qname, qtype)
        if result:
            self.cache[key] = result
        elif not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def _lookup(self, name: str, qtype: str) -> list[Any]:
        if time.monotonic() > self._deadline:
            raise spf.TempError(f"SPF evaluation took over {SPF_TIME_LIMIT_SECONDS:.0f} s")
        try:
            if qtype == "TXT":
                return [[record.encode("utf-8")] for record in self._resolver.txt(name)]
            if qtype == "A":
                return list(self._resolver.a(name))
            if qtype == "AAAA":
                return list(self._resolver.aaaa(name))
            if qtype == "MX":
                return list(self._resolver.mx(name))
            if qtype == "PTR":
                ip = _ip_from_reverse_name(name)
                return list(self._resolver.ptr(ip)) if ip else []
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        except Exception as exc:  # a resolver fault (re-raised): an unknown answer
            raise spf.TempError(f"DNS lookup of {name} {qtype} failed: {exc!r}") from exc
        return []  # type 99 (SPF) records are obsolete (RFC 7208 3.1)


def _ip_from_reverse_name(name: str) -> str | None:
    labels = name.split(".")
    try:
        if name.endswith(".in-addr.arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if name.endswith(".ip6.arpa") and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            groups = ":".join(nibbles[i : i + 4] for i in range(0, 32, 4))
            return str(ipaddress.IPv6Address(groups))
    except ValueError:
        return None
    return None


def _check_spf(
    resolver: Resolver, *, client_ip: str, helo: str, mail_from: str
) -> tuple[AuthResult, str | None, str]:
    """(result, the domain evaluated, explanation)."""
    mail_from = mail_from.strip()
    if mail_from == "<>":
        mail_from = ""
    identity = "mailfrom" if mail_from else "helo"
    local, _, domain_part = mail_from.rpartition("@")
    domain = _ascii_domain(domain_part if mail_from else helo)
    if domain is None:
        # RFC 7208 4.3: a malformed or single-label domain gives "none".
        return AuthResult.NONE, None, f"spf=none (no valid {identity} domain)"
    if mail_from:
        sender, helo_name = f"{local or 'postmaster'}@{domain}", _ascii_domain(helo) or ""
    else:
        sender, helo_name = "", domain  # pyspf then checks postmaster@<helo>
    try:
        query = _SpfQuery(resolver, client_ip=client_ip, sender=sender, helo=helo_name)
        word, _code, explanation = query.check()
    except spf.PermError as exc:
        return AuthResult.PERMERROR, domain, f"spf=permerror ({_clip(str(exc))})"
    except Exception as exc:  # noqa: BLE001 - pyspf must not turn a hostile record into a crash
        return AuthResult.PERMERROR, domain, f"spf=permerror (evaluation failed: {exc!r:.80})"
    try:
        result = AuthResult(word)
    except ValueError:
        result = AuthResult.PERMERROR
    detail = f"spf={result} {identity}={domain}"
    if explanation:
        detail += f" ({_clip(explanation)})"
    return result, domain, detail


_DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)
# Most significant first: what an aggregate "dkim=" says when signatures disagree.
_DKIM_RANK = (
    AuthResult.PASS,
    AuthResult.TEMPERROR,
    AuthResult.FAIL,
    AuthResult.PERMERROR,
)


class _KeyLookupTempError(Exception):
    """Carries a DnsTempError out through dkimpy, which would read it as "no key"."""


class _DkimKeyLookup:
    """dkimpy's ``dnsfunc``: ``(name: bytes, timeout=...) -> bytes | None``, answered by
    our resolver. Remembers why a key was unusable, so that a missing or broken
    key (the signer's DNS is wrong: permerror) is told apart from a signature
    that does not verify (fail)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self.problem: str | None = None

    def __call__(self, name: bytes, timeout: float = 5.0) -> bytes | None:
        try:
            qname = name.decode("ascii").rstrip(".")
        except UnicodeDecodeError:
            self.problem = "selector or domain is not ASCII"
            return None
        try:
            records = [record for record in self._resolver.txt(qname) if record.strip()]
        except DnsTempError as exc:
            raise _KeyLookupTempError(str(exc)) from exc
        except Exception as exc:  # a resolver fault (re-raised): an unknown answer
            raise _KeyLookupTempError(f"DNS lookup of {qname} failed: {exc!r}") from exc
        if not records:
            self.problem = f"no key published at {qname}"
            return None
        # RFC 6376 3.6.2.2: with several records the outcome is undefined; use the first.
        key = records[0].encode("utf-8")
        try:
            dkim.evaluate_pk(name, key)
        except Exception as exc:  # noqa: BLE001 - any unparsable key record is the signer's fault
            self.problem = f"unusable key at {qname} ({_clip(str(exc))})"
        return key


def _tag_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip().rstrip(".").lower()
    except UnicodeDecodeError:
        return None
    return text or None


def _verify_signature(
    verifier: Any, index: int, field_value: bytes, resolver: Resolver
) -> DkimSignature:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(field_value)
    except Exception:  # noqa: BLE001 - a malformed tag list is the signer's fault
        return DkimSignature(None, None, AuthResult.PERMERROR, "signature tags do not parse")
    domain, selector = _tag_text(tags.get(b"d")), _tag_text(tags.get(b"s"))

    def verdict(result: AuthResult, reason: str) -> DkimSignature:
        return DkimSignature(domain, selector, result, _clip(reason))

    if domain is None or selector is None:
        return verdict(AuthResult.PERMERROR, "missing or non-ASCII d= or s=")
    if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":
        return verdict(AuthResult.FAIL, "rsa-sha1 signatures are not accepted (RFC 8301)")
    signed = [name.strip().lower() for name in tags.get(b"h", b"").split(b":")]
    if b"from" not in signed:
        # RFC 6376 6.1.1: a signature that does not cover From says nothing about it.
        return verdict(AuthResult.PERMERROR, "From is not signed")
    try:
        verifier.verify_headerprep(index)  # syntax, algorithm, expiry: the signature's own form
    except Exception as exc:  # noqa: BLE001 - dkimpy raises several types for one meaning
        return verdict(AuthResult.PERMERROR, f"malformed signature: {exc}")
    lookup = _DkimKeyLookup(resolver)
    try:
        valid = bool(verifier.verify(index, dnsfunc=lookup))
    except _KeyLookupTempError as exc:
        return verdict(AuthResult.TEMPERROR, str(exc))
    except dkim.ValidationError as exc:
        return verdict(AuthResult.FAIL, str(exc))  # after headerprep: the body hash mismatched
    except Exception as exc:  # noqa: BLE001 - key too small, bad c=, library faults
        return verdict(AuthResult.PERMERROR, str(exc))
    if not valid:
        if lookup.problem:
            return verdict(AuthResult.PERMERROR, lookup.problem)
        return verdict(AuthResult.FAIL, "signature does not verify")
    if b"l" in tags:
        # l= signs only a prefix of the body: anyone could append text under this
        # signature, so it only counts when the prefix is the whole body.
        try:
            policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
            body_length = len(policy.canonicalize_body(verifier.body))
            partial = int(tags[b"l"]) < body_length
        except Exception:  # noqa: BLE001 - verify() already parsed these; be safe anyway
            return verdict(AuthResult.PERMERROR, "cannot check the l= body length")
        if partial:
            return verdict(AuthResult.FAIL, "l= leaves part of the body unsigned")
    return verdict(AuthResult.PASS, "signature verified")


def _check_dkim(raw: bytes, resolver: Resolver) -> tuple[DkimSignature, ...]:
    head, _ = _split_head(raw)
    if not _DKIM_FIELD.search(head):
        return ()
    try:
        verifier = dkim.DKIM(raw, logger=_DKIM_LOG, minkey=MIN_DKIM_KEY_BITS)
    except Exception:  # noqa: BLE001 - dkimpy raises IndexError as well as its own errors
        return (DkimSignature(None, None, AuthResult.PERMERROR, "message header does not parse"),)
    fields = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    return tuple(
        _verify_signature(verifier, index, value, resolver)
        for index, value in enumerate(fields[:MAX_DKIM_SIGNATURES])
    )


def _dkim_summary(signatures: Iterable[DkimSignature]) -> AuthResult:
    results = {signature.result for signature in signatures}
    if not results:
        return AuthResult.NONE
    for result in _DKIM_RANK:
        if result in results:
            return result
    return AuthResult.PERMERROR


_POLICIES = frozenset({"none", "quarantine", "reject"})


@dataclass(frozen=True, slots=True)
class _DmarcRecord:
    policy: str
    subdomain_policy: str | None
    adkim: str
    aspf: str


def _parse_dmarc(text: str) -> _DmarcRecord | None:
    """A DMARC record (RFC 7489 6.3), or None if ``text`` is not a usable one."""
    parts = text.split(";")
    version = parts[0].split("=", 1)
    if len(version) != 2 or version[0].strip().lower() != "v" or version[1].strip() != "DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        # RFC 7489 6.6.3: without a valid p=, a record that asks for reports acts
        # as p=none; otherwise DMARC does not apply.
        if not tags.get("rua"):
            return None
        policy = "none"
    subdomain_policy = tags.get("sp", "").lower()

    def mode(tag: str) -> str:
        return "s" if tags.get(tag, "r").lower() == "s" else "r"

    return _DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain_policy if subdomain_policy in _POLICIES else None,
        adkim=mode("adkim"),
        aspf=mode("aspf"),
    )


_DMARC_VERSION = re.compile(r"^[ \t]*[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")


def _fetch_dmarc(resolver: Resolver, domain: str) -> tuple[bool, _DmarcRecord | None]:
    """(found, record) for one ``_dmarc`` name. ``found`` is True when DMARC records
    exist there, even unusable ones: discovery stops at the first name that has any."""
    texts = [text for text in resolver.txt(f"_dmarc.{domain}") if _DMARC_VERSION.match(text)]
    if not texts:
        return False, None
    if len(texts) > 1:
        return True, None  # RFC 7489 6.6.3: several records means none applies
    return True, _parse_dmarc(texts[0])


def _discover_dmarc(
    resolver: Resolver, from_domain: str
) -> tuple[_DmarcRecord | None, str | None, bool]:
    """(record, the policy that applies, temperror) per RFC 7489 6.6.3: the From
    domain's record, else the organizational domain's (``sp=`` then applies)."""
    try:
        found, record = _fetch_dmarc(resolver, from_domain)
        if found:
            return record, record.policy if record else None, False
        org = organizational_domain(from_domain)
        if org == from_domain:
            return None, None, False
        found, record = _fetch_dmarc(resolver, org)
    except DnsTempError:
        return None, None, True
    except Exception:  # noqa: BLE001 - a resolver fault is an unknown answer
        return None, None, True
    if record is None:
        return None, None, False
    return record, record.subdomain_policy or record.policy, False


def authenticate(
    raw: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    from_domain: str | None,
    resolver: Resolver,
) -> AuthOutcome:
    """Evaluate SPF, DKIM and DMARC for one received message. Never raises.

    ``client_ip`` is the connecting SMTP client's address, ``helo`` its HELO/EHLO
    name, ``mail_from`` the envelope sender without angle brackets (empty for a
    bounce), ``from_domain`` the domain of the message's single From address
    (None when there is not exactly one parsable From: DMARC is then ``none`` and
    nothing is aligned).

    ``auth.aligned`` is True when a passing SPF or DKIM identity aligns with the
    From domain, in the modes the domain's DMARC record asks for: relaxed when it
    publishes none, strict when its record could not be looked up.
    ``auth.dmarc`` is ``pass`` or ``fail`` only when a DMARC record exists;
    ``none`` when none does; ``temperror`` when the record could not be looked up,
    or when nothing aligned and an SPF or DKIM check itself ended in temperror
    (a retry might pass).
    """
    spf_result, spf_domain, spf_detail = _check_spf(
        resolver, client_ip=client_ip, helo=helo, mail_from=mail_from
    )
    try:
        signatures = _check_dkim(raw, resolver)
    except Exception:  # noqa: BLE001 - last line of defence: hostile bytes never crash ingest
        signatures = (DkimSignature(None, None, AuthResult.PERMERROR, "verification failed"),)
    dkim_result = _dkim_summary(signatures)
    dkim_domains = tuple(
        dict.fromkeys(s.domain for s in signatures if s.result is AuthResult.PASS and s.domain)
    )

    author_domain = _ascii_domain(from_domain)
    record: _DmarcRecord | None = None
    policy: str | None = None
    lookup_failed = False
    if author_domain is not None:
        record, policy, lookup_failed = _discover_dmarc(resolver, author_domain)
    # Without a record the DMARC default (relaxed) applies; when the record could not
    # be read, exact matching is the safe guess (the domain may have asked for it).
    default_mode = "s" if lookup_failed else "r"
    adkim = record.adkim if record else default_mode
    aspf = record.aspf if record else default_mode

    aligned_by: list[str] = []
    if author_domain is not None:
        if (
            spf_result is AuthResult.PASS
            and spf_domain
            and _aligned(spf_domain, author_domain, aspf)
        ):
            aligned_by.append(f"spf:{spf_domain}")
        aligned_by.extend(f"dkim:{d}" for d in dkim_domains if _aligned(d, author_domain, adkim))
    aligned = bool(aligned_by)

    if author_domain is None:
        dmarc = AuthResult.NONE
        dmarc_detail = "dmarc=none (no single valid From domain)"
    elif lookup_failed:
        dmarc = AuthResult.TEMPERROR
        dmarc_detail = f"dmarc=temperror (policy lookup for {author_domain} failed)"
    elif record is None:
        dmarc = AuthResult.NONE
        dmarc_detail = f"dmarc=none (no DMARC record for {author_domain})"
    elif aligned:
        dmarc = AuthResult.PASS
        dmarc_detail = f"dmarc=pass p={policy}"
    elif AuthResult.TEMPERROR in (spf_result, dkim_result):
        dmarc = AuthResult.TEMPERROR
        dmarc_detail = f"dmarc=temperror p={policy} (an identity could not be checked)"
    else:
        dmarc = AuthResult.FAIL
        dmarc_detail = f"dmarc=fail p={policy}"
    if author_domain is not None:
        dmarc_detail += f" header.from={author_domain} adkim={adkim} aspf={aspf}"
        dmarc_detail += f" aligned={','.join(aligned_by) or 'no'}"

    dkim_details = [
        f"dkim={s.result} d={s.domain or '?'} s={s.selector or '?'} ({s.reason})"
        for s in signatures
    ] or ["dkim=none (no signature)"]
    return AuthOutcome(
        auth=SenderAuth(spf=spf_result, dkim=dkim_result, dmarc=dmarc, aligned=aligned),
        spf_domain=spf_domain,
        dkim_domains=dkim_domains,
        dmarc_policy=policy,
        details="; ".join([spf_detail, *dkim_details, dmarc_detail]),
        dkim_signatures=signatures,
    )


_TOKEN = re.compile(r"^[A-Za-z0-9._-]+$")
_ADDRESS_TOKEN = re.compile(r"^[A-Za-z0-9._+-]+@[A-Za-z0-9._-]+$")


def _pvalue(text: str) -> str:
    """An RFC 8601 property value: as is when it is a plain token or address, else a
    quoted-string holding its printable ASCII (never CR/LF: no header injection)."""
    if _TOKEN.match(text) or _ADDRESS_TOKEN.match(text):
        return text
    printable = "".join(ch for ch in text if " " <= ch <= "~")
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authentication_results(
    authserv_id: str, outcome: AuthOutcome, *, mail_from: str, from_domain: str | None
) -> str:
    """The value of our Authentication-Results header field (RFC 8601), on one line:
    ``mx.example.com; spf=pass smtp.mailfrom=example.org; dkim=pass
    header.d=example.org header.s=sel; dmarc=pass (p=reject) header.from=example.org``.

    One ``dkim=`` entry per verified signature. ``authserv_id`` is our host name
    from configuration; a value that is not a plain token is a configuration
    error and raises ValueError.
    """
    if not _TOKEN.match(authserv_id):
        raise ValueError(f"authserv-id must be a host name, not {authserv_id!r}")
    auth = outcome.auth
    parts = [authserv_id]

    spf_entry = f"spf={auth.spf}"
    envelope = mail_from.strip()
    if envelope and envelope != "<>":
        domain = outcome.spf_domain or envelope.rpartition("@")[2]
        if domain:
            spf_entry += f" smtp.mailfrom={_pvalue(domain)}"
    elif outcome.spf_domain:
        spf_entry += f" smtp.helo={_pvalue(outcome.spf_domain)}"
    parts.append(spf_entry)

    if outcome.dkim_signatures:
        for signature in outcome.dkim_signatures:
            entry = f"dkim={signature.result}"
            if signature.domain:
                entry += f" header.d={_pvalue(signature.domain)}"
            if signature.selector:
                entry += f" header.s={_pvalue(signature.selector)}"
            parts.append(entry)
    else:
        parts.append(f"dkim={auth.dkim}")

    dmarc_entry = f"dmarc={auth.dmarc}"
    if outcome.dmarc_policy in _POLICIES:
        dmarc_entry += f" (p={outcome.dmarc_policy})"
    author = _ascii_domain(from_domain) or (from_domain or "").strip()
    if author:
        dmarc_entry += f" header.from={_pvalue(author)}"
    parts.append(dmarc_entry)
    return "; ".join(parts)


_AR_FIELD = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header section, the rest from the blank line on), split without decoding."""
    end = _header_field_spans(raw)[1]
    return raw[:end], raw[end:]


def _header_field_spans(raw: bytes) -> tuple[list[tuple[int, int]], int]:
    """Byte spans of each header field (continuation lines included) and the offset
    where the header section ends (the blank line, or the end of the message)."""
    spans: list[tuple[int, int]] = []
    pos, size = 0, len(raw)
    while pos < size:
        newline = raw.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and spans:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((pos, end))
        pos = end
    return spans, pos


def _leading_authserv_id(value: str) -> str | None:
    """The authserv-id at the start of an Authentication-Results value: a token or a
    quoted-string, after any whitespace and (nested) comments."""
    i, size = 0, len(value)
    while i < size:
        if value[i] in " \t\r\n":
            i += 1
        elif value[i] == "(":
            depth = 0
            while i < size:
                if value[i] == "\\":
                    i += 2
                    continue
                if value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    if i >= size:
        return None
    if value[i] == '"':
        chars: list[str] = []
        i += 1
        while i < size and value[i] != '"':
            if value[i] == "\\" and i + 1 < size:
                i += 1
            chars.append(value[i])
            i += 1
        return "".join(chars)
    match = re.match(r"[^\s;()]+", value[i:])
    return match.group(0) if match else None


def strip_our_authentication_results(raw: bytes, authserv_id: str) -> bytes:
    """Remove every Authentication-Results field (folded lines included) whose
    authserv-id is ours, compared case-insensitively (RFC 8601 5: only we may
    speak for our ADMD, so any such field arriving from outside is forged).
    Everything else, the body included, is kept byte for byte."""
    ours = authserv_id.strip().lower()
    spans, head_end = _header_field_spans(raw)
    kept: list[bytes] = []
    removed = False
    for start, end in spans:
        field = raw[start:end]
        match = _AR_FIELD.match(field)
        if match:
            value = field[match.end() :].decode("utf-8", errors="replace")
            found = _leading_authserv_id(value)
            if found is not None and found.lower() == ours:
                removed = True
                continue
        kept.append(field)
    if not removed:
        return raw
    return b"".join(kept) + raw[head_end:]


_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII but ':'
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD stay within 78 characters


def prepend_header(raw: bytes, name: str, value: str) -> bytes:
    """Put ``name: value`` before the first header field, folded at spaces to keep
    lines short, with the line ending the message already uses."""
    if not _FIELD_NAME.match(name):
        raise ValueError(f"invalid header field name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError("a header value must not contain line breaks")
    newline = raw.find(b"\n")
    crlf = newline < 0 or (newline > 0 and raw[newline - 1] == 0x0D)
    linesep = b"\r\n" if crlf else b"\n"
    first = f"{name}:"
    lines: list[str] = []
    current = first
    for word in value.split(" "):
        candidate = f"{current} {word}"
        # Fold only before a real word, and never leave the first line empty.
        if word and len(candidate) > _FOLD_AT and current != first:
            lines.append(current)
            current = f" {word}"
        else:
            current = candidate
    lines.append(current)
    folded = linesep.join(line.encode("utf-8") for line in lines)
    return folded + linesep + raw
