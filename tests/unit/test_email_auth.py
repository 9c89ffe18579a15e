"""Sender authentication for email: SPF, DKIM, DMARC, and our Authentication-Results.

Everything runs offline: DNS answers come from a StaticResolver, DKIM keys are
generated for the test run and published in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridges.dns import StaticResolver, SystemResolver
from bridges.email_auth import (
    AuthOutcome,
    authenticate,
    authentication_results,
    organizational_domain,
    prepend_header,
    strip_our_authentication_results,
)
from bridges.errors import DnsTempError
from inbox.message import AuthResult, SenderAuth
from tests.fakes.dns_server import FakeDnsServer
from tests.unit import dkim_keys

AUTHSERV_ID = "mx.optmsg.example"
SENDER_IP = "192.0.2.25"  # inside bank.example's SPF
STRANGER_IP = "198.51.100.7"  # outside every SPF record below
BODY = b"Your statement is ready.\r\n"

Records = Mapping[str, Mapping[str, Sequence[object]]]


@pytest.fixture(scope="module")
def keys() -> dkim_keys.KeyPair:
    return dkim_keys.generate()


def message(from_address: str = "alerts@bank.example", body: bytes = BODY) -> bytes:
    return (
        f"From: Bank <{from_address}>\r\n"
        "To: ada@optmsg.example\r\n"
        "Subject: Statement\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        "Message-ID: <1@bank.example>\r\n"
        "\r\n"
    ).encode() + body


def sign(
    raw: bytes,
    keys: dkim_keys.KeyPair,
    domain: str,
    selector: str = "sel",
    *,
    algorithm: bytes = b"rsa-sha256",
    length: bool = False,
) -> bytes:
    signature = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        keys.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date"],
        signature_algorithm=algorithm,
        length=length,
    )
    return bytes(signature) + raw


def key_record(keys: dkim_keys.KeyPair, domain: str, selector: str = "sel") -> Records:
    return {f"{selector}._domainkey.{domain}": {"TXT": [keys.dns_record()]}}


def check(
    raw: bytes,
    records: Records,
    *,
    client_ip: str = STRANGER_IP,
    helo: str = "mail.sender.example",
    mail_from: str = "bounces@sender.example",
    from_domain: str | None = "bank.example",
    failing: Sequence[str] = (),
) -> AuthOutcome:
    return authenticate(
        raw,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        from_domain=from_domain,
        resolver=StaticResolver(records, failing=failing),
    )


DMARC_REJECT: Records = {"_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject"]}}
BANK_SPF: Records = {"bank.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]}}


# DKIM and DMARC


def test_aligned_dkim_pass_gives_dmarc_pass(keys: dkim_keys.KeyPair) -> None:
    outcome = check(
        sign(message(), keys, "bank.example"), {**key_record(keys, "bank.example"), **DMARC_REJECT}
    )
    assert outcome.auth == SenderAuth(
        spf=AuthResult.NONE, dkim=AuthResult.PASS, dmarc=AuthResult.PASS, aligned=True
    )
    assert outcome.dkim_domains == ("bank.example",)
    assert outcome.dmarc_policy == "reject"


def test_unaligned_dkim_pass_without_aligned_spf_gives_dmarc_fail(
    keys: dkim_keys.KeyPair,
) -> None:
    raw = sign(message(), keys, "mailer.example.net")
    outcome = check(raw, {**key_record(keys, "mailer.example.net"), **DMARC_REJECT})
    assert (outcome.auth.dkim, outcome.auth.dmarc, outcome.auth.aligned) == (
        AuthResult.PASS,
        AuthResult.FAIL,
        False,
    )
    assert outcome.dkim_domains == ("mailer.example.net",)
    assert not outcome.auth.authenticated


def test_body_modified_after_signing_fails_dkim(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "bank.example") + b"Send your password to evil@example.net\r\n"
    outcome = check(raw, {**key_record(keys, "bank.example"), **DMARC_REJECT})
    assert (outcome.auth.dkim, outcome.auth.dmarc) == (AuthResult.FAIL, AuthResult.FAIL)
    assert outcome.dkim_domains == ()


def test_missing_dkim_key_is_permerror(keys: dkim_keys.KeyPair) -> None:
    outcome = check(sign(message(), keys, "bank.example"), DMARC_REJECT)
    assert outcome.auth.dkim is AuthResult.PERMERROR
    assert "no key published" in outcome.details


def test_signature_that_does_not_cover_from_is_permerror(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "bank.example").replace(b"h=from : ", b"h=", 1)
    outcome = check(raw, {**key_record(keys, "bank.example"), **DMARC_REJECT})
    assert outcome.auth.dkim is AuthResult.PERMERROR
    assert "From is not signed" in outcome.details


def test_rsa_sha1_signature_is_not_accepted(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "bank.example", algorithm=b"rsa-sha1")
    outcome = check(raw, {**key_record(keys, "bank.example"), **DMARC_REJECT})
    assert (outcome.auth.dkim, outcome.auth.dmarc) == (AuthResult.FAIL, AuthResult.FAIL)


def test_body_appended_under_a_length_limited_signature_is_not_a_pass(
    keys: dkim_keys.KeyPair,
) -> None:
    raw = sign(message(), keys, "bank.example", length=True) + b"Click http://evil.example\r\n"
    outcome = check(raw, {**key_record(keys, "bank.example"), **DMARC_REJECT})
    assert (outcome.auth.dkim, outcome.auth.dmarc) == (AuthResult.FAIL, AuthResult.FAIL)


def test_length_limited_signature_over_the_whole_body_passes(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "bank.example", length=True)
    outcome = check(raw, {**key_record(keys, "bank.example"), **DMARC_REJECT})
    assert outcome.auth.dkim is AuthResult.PASS


def test_any_passing_aligned_signature_among_several_gives_dmarc_pass(
    keys: dkim_keys.KeyPair,
) -> None:
    raw = sign(sign(message(), keys, "bank.example"), keys, "mailer.example.net", "esp")
    records = {
        **key_record(keys, "bank.example"),
        **key_record(keys, "mailer.example.net", "esp"),
        **DMARC_REJECT,
    }
    outcome = check(raw, records)
    assert outcome.auth.dmarc is AuthResult.PASS
    assert set(outcome.dkim_domains) == {"bank.example", "mailer.example.net"}


# SPF


def test_aligned_spf_pass_gives_dmarc_pass_without_dkim() -> None:
    outcome = check(
        message(), {**BANK_SPF, **DMARC_REJECT}, client_ip=SENDER_IP, mail_from="b@bank.example"
    )
    assert outcome.auth == SenderAuth(
        spf=AuthResult.PASS, dkim=AuthResult.NONE, dmarc=AuthResult.PASS, aligned=True
    )
    assert outcome.spf_domain == "bank.example"


def test_spf_fail_gives_dmarc_fail() -> None:
    outcome = check(message(), {**BANK_SPF, **DMARC_REJECT}, mail_from="b@bank.example")
    assert (outcome.auth.spf, outcome.auth.dmarc) == (AuthResult.FAIL, AuthResult.FAIL)


def test_spf_softfail() -> None:
    records = {"bank.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 ~all"]}}
    outcome = check(message(), records, mail_from="b@bank.example")
    assert outcome.auth.spf is AuthResult.SOFTFAIL


def test_no_spf_record_is_none() -> None:
    outcome = check(message(), {"bank.example": {"TXT": ["google-site-verification=x"]}})
    assert outcome.auth.spf is AuthResult.NONE


def test_spf_include_is_resolved_through_the_resolver() -> None:
    records = {
        "bank.example": {"TXT": ["v=spf1 include:_spf.esp.example -all"]},
        "_spf.esp.example": {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"]},
    }
    outcome = check(message(), records, client_ip="203.0.113.9", mail_from="b@bank.example")
    assert outcome.auth.spf is AuthResult.PASS


def test_spf_redirect_is_resolved_through_the_resolver() -> None:
    records = {
        "bank.example": {"TXT": ["v=spf1 redirect=_spf.bank.example"]},
        "_spf.bank.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    }
    outcome = check(message(), records, client_ip=SENDER_IP, mail_from="b@bank.example")
    assert outcome.auth.spf is AuthResult.PASS


def test_spf_mx_and_a_mechanisms_use_the_resolver() -> None:
    records: Records = {
        "bank.example": {
            "TXT": ["v=spf1 mx a:relay.bank.example -all"],
            "MX": [(10, "mx.bank.example")],
        },
        "mx.bank.example": {"A": ["192.0.2.40"]},
        "relay.bank.example": {"AAAA": ["2001:db8::25"]},
    }
    by_mx = check(message(), records, client_ip="192.0.2.40", mail_from="b@bank.example")
    by_a = check(message(), records, client_ip="2001:db8::25", mail_from="b@bank.example")
    assert (by_mx.auth.spf, by_a.auth.spf) == (AuthResult.PASS, AuthResult.PASS)


def test_spf_ptr_mechanism_uses_the_reverse_zone() -> None:
    records = {
        "bank.example": {"TXT": ["v=spf1 ptr -all"]},
        "25.2.0.192.in-addr.arpa": {"PTR": ["out1.bank.example"]},
        "out1.bank.example": {"A": [SENDER_IP]},
    }
    outcome = check(message(), records, client_ip=SENDER_IP, mail_from="b@bank.example")
    assert outcome.auth.spf is AuthResult.PASS


def test_helo_is_the_spf_identity_of_a_bounce() -> None:
    records = {"out.bank.example": {"TXT": [f"v=spf1 ip4:{SENDER_IP} -all"]}}
    outcome = check(message(), records, client_ip=SENDER_IP, helo="out.bank.example", mail_from="")
    assert (outcome.auth.spf, outcome.spf_domain) == (AuthResult.PASS, "out.bank.example")
    assert outcome.auth.aligned  # relaxed: out.bank.example is in bank.example


def test_malformed_spf_record_is_permerror() -> None:
    records = {"bank.example": {"TXT": ["v=spf1 ip4:192.0.2.300 -all"]}}
    outcome = check(message(), records, client_ip=SENDER_IP, mail_from="b@bank.example")
    assert outcome.auth.spf is AuthResult.PERMERROR


# alignment and policy discovery


def test_relaxed_alignment_accepts_a_subdomain_signature(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "mail.bank.example")
    outcome = check(raw, {**key_record(keys, "mail.bank.example"), **DMARC_REJECT})
    assert (outcome.auth.dmarc, outcome.auth.aligned) == (AuthResult.PASS, True)


def test_strict_alignment_rejects_a_subdomain_signature(keys: dkim_keys.KeyPair) -> None:
    raw = sign(message(), keys, "mail.bank.example")
    records = {
        **key_record(keys, "mail.bank.example"),
        "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject; adkim=s"]},
    }
    outcome = check(raw, records)
    assert (outcome.auth.dkim, outcome.auth.dmarc, outcome.auth.aligned) == (
        AuthResult.PASS,
        AuthResult.FAIL,
        False,
    )


def test_strict_spf_alignment_rejects_a_subdomain_mail_from() -> None:
    records = {
        "bounce.bank.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=quarantine; aspf=s"]},
    }
    outcome = check(message(), records, client_ip=SENDER_IP, mail_from="b@bounce.bank.example")
    assert (outcome.auth.spf, outcome.auth.dmarc) == (AuthResult.PASS, AuthResult.FAIL)


def test_dmarc_record_of_the_organizational_domain_covers_a_subdomain(
    keys: dkim_keys.KeyPair,
) -> None:
    raw = sign(message("alerts@notify.bank.example"), keys, "bank.example")
    records = {
        **key_record(keys, "bank.example"),
        "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]},
    }
    outcome = check(raw, records, from_domain="notify.bank.example")
    assert (outcome.auth.dmarc, outcome.dmarc_policy) == (AuthResult.PASS, "quarantine")


def test_no_dmarc_record_gives_none_and_alignment_is_still_computed(
    keys: dkim_keys.KeyPair,
) -> None:
    outcome = check(sign(message(), keys, "bank.example"), key_record(keys, "bank.example"))
    assert (outcome.auth.dmarc, outcome.auth.aligned) == (AuthResult.NONE, True)
    assert outcome.dmarc_policy is None
    assert outcome.auth.authenticated


def test_two_dmarc_records_mean_no_policy() -> None:
    records = {
        **BANK_SPF,
        "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    }
    outcome = check(message(), records, client_ip=SENDER_IP, mail_from="b@bank.example")
    assert (outcome.auth.dmarc, outcome.auth.aligned) == (AuthResult.NONE, True)


def test_without_a_from_domain_nothing_is_aligned() -> None:
    outcome = check(
        message(),
        {**BANK_SPF, **DMARC_REJECT},
        client_ip=SENDER_IP,
        mail_from="b@bank.example",
        from_domain=None,
    )
    assert (outcome.auth.spf, outcome.auth.dmarc, outcome.auth.aligned) == (
        AuthResult.PASS,
        AuthResult.NONE,
        False,
    )


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        ("bank.example", "bank.example"),
        ("mail.eu.bank.example", "bank.example"),
        ("a.b.co.uk", "b.co.uk"),
        ("shop.example.com.au", "example.com.au"),
        ("Mail.Bank.Example.", "bank.example"),
        ("example", "example"),
    ],
)
def test_organizational_domain_rule(domain: str, organizational: str) -> None:
    assert organizational_domain(domain) == organizational


# DNS failures and hostile input


def test_dns_temp_error_gives_temperror_not_an_exception() -> None:
    outcome = check(
        message(),
        {},
        mail_from="b@bank.example",
        failing=["bank.example", "_dmarc.bank.example"],
    )
    assert (outcome.auth.spf, outcome.auth.dmarc) == (AuthResult.TEMPERROR, AuthResult.TEMPERROR)
    assert not outcome.auth.authenticated


def test_dns_temp_error_on_the_dkim_key_gives_dkim_temperror(keys: dkim_keys.KeyPair) -> None:
    outcome = check(
        sign(message(), keys, "bank.example"), DMARC_REJECT, failing=["sel._domainkey.bank.example"]
    )
    assert (outcome.auth.dkim, outcome.auth.dmarc) == (AuthResult.TEMPERROR, AuthResult.TEMPERROR)


def test_unreadable_dmarc_record_means_strict_alignment(keys: dkim_keys.KeyPair) -> None:
    exact = check(
        sign(message(), keys, "bank.example"),
        key_record(keys, "bank.example"),
        failing=["_dmarc.bank.example"],
    )
    subdomain = check(
        sign(message(), keys, "mail.bank.example"),
        key_record(keys, "mail.bank.example"),
        failing=["_dmarc.bank.example"],
    )
    assert (exact.auth.dmarc, exact.auth.aligned) == (AuthResult.TEMPERROR, True)
    assert (subdomain.auth.dmarc, subdomain.auth.aligned) == (AuthResult.TEMPERROR, False)


class _BrokenResolver:
    """A resolver with a bug: every lookup raises something unexpected."""

    def txt(self, name: str) -> list[str]:
        raise RuntimeError("boom")

    def a(self, name: str) -> list[str]:
        raise RuntimeError("boom")

    def aaaa(self, name: str) -> list[str]:
        raise RuntimeError("boom")

    def mx(self, name: str) -> list[tuple[int, str]]:
        raise RuntimeError("boom")

    def ptr(self, ip: str) -> list[str]:
        raise RuntimeError("boom")


def test_a_faulty_resolver_gives_temperror_not_an_exception(keys: dkim_keys.KeyPair) -> None:
    outcome = authenticate(
        sign(message(), keys, "bank.example"),
        client_ip=SENDER_IP,
        helo="mail.bank.example",
        mail_from="b@bank.example",
        from_domain="bank.example",
        resolver=_BrokenResolver(),
    )
    assert (outcome.auth.spf, outcome.auth.dkim, outcome.auth.dmarc) == (
        AuthResult.TEMPERROR,
        AuthResult.TEMPERROR,
        AuthResult.TEMPERROR,
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \r\n\r\n\x80",
        b" starts with a continuation line\r\n\r\nbody",
        b"DKIM-Signature: v=1; this is not a tag list\r\nFrom: a@bank.example\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.example; s=sel; h=from; bh=!!; b=??\r\n\r\n",
        b"From: a@bank.example\r\nno colon on this header line\r\n\r\nbody",
    ],
)
def test_garbage_message_bytes_never_raise(raw: bytes) -> None:
    outcome = check(raw, {**BANK_SPF, **DMARC_REJECT})
    assert outcome.auth.dkim in {AuthResult.NONE, AuthResult.PERMERROR}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.binary(max_size=2000),
    client_ip=st.text(max_size=40),
    helo=st.text(max_size=80),
    mail_from=st.text(max_size=80),
    from_domain=st.one_of(st.none(), st.text(max_size=80)),
)
def test_arbitrary_input_never_raises(
    raw: bytes, client_ip: str, helo: str, mail_from: str, from_domain: str | None
) -> None:
    outcome = authenticate(
        raw,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        from_domain=from_domain,
        resolver=StaticResolver({**BANK_SPF, **DMARC_REJECT}),
    )
    header = authentication_results(
        AUTHSERV_ID, outcome, mail_from=mail_from, from_domain=from_domain
    )
    assert "\r" not in header and "\n" not in header


def test_huge_txt_records_are_handled() -> None:
    huge = "v=spf1 " + " ".join(f"ip4:10.{i // 256}.{i % 256}.0/24" for i in range(5000)) + " -all"
    records = {
        "bank.example": {"TXT": [huge]},
        "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject; " + "x=" + "y" * 100_000]},
    }
    outcome = check(message(), records, mail_from="b@bank.example")
    assert (outcome.auth.spf, outcome.auth.dmarc) == (AuthResult.FAIL, AuthResult.FAIL)


# Authentication-Results


def test_authentication_results_formatting(keys: dkim_keys.KeyPair) -> None:
    outcome = check(
        sign(message(), keys, "bank.example"),
        {**key_record(keys, "bank.example"), **BANK_SPF, **DMARC_REJECT},
        client_ip=SENDER_IP,
        mail_from="bounces@bank.example",
    )
    header = authentication_results(
        AUTHSERV_ID, outcome, mail_from="bounces@bank.example", from_domain="bank.example"
    )
    assert header == (
        "mx.optmsg.example; spf=pass smtp.mailfrom=bank.example; "
        "dkim=pass header.d=bank.example header.s=sel; "
        "dmarc=pass (p=reject) header.from=bank.example"
    )


def test_authentication_results_names_helo_for_a_bounce_without_signatures() -> None:
    outcome = check(message(), {}, helo="out.bank.example", mail_from="")
    header = authentication_results(AUTHSERV_ID, outcome, mail_from="", from_domain="bank.example")
    assert header == (
        "mx.optmsg.example; spf=none smtp.helo=out.bank.example; dkim=none; "
        "dmarc=none header.from=bank.example"
    )


def test_authentication_results_quotes_hostile_values() -> None:
    outcome = check(message(), {}, from_domain="bank.example")
    header = authentication_results(
        AUTHSERV_ID, outcome, mail_from="x@evil\r\nX-Injected: 1", from_domain='a"b; dmarc=pass'
    )
    assert "\r" not in header and "\n" not in header
    assert header.endswith('header.from="a\\"b; dmarc=pass"')


def test_authentication_results_refuses_a_malformed_authserv_id() -> None:
    outcome = check(message(), {})
    with pytest.raises(ValueError, match="authserv-id"):
        authentication_results("mx.example; spf=pass", outcome, mail_from="", from_domain=None)


# header surgery

FORGED = (
    b"Received: from relay.example by mx.optmsg.example\r\n"
    b"Authentication-Results: mx.optmsg.example; dmarc=pass header.from=bank.example\r\n"
    b"authentication-results:   (comment) MX.OPTMSG.EXAMPLE 1;\r\n"
    b"\tspf=pass smtp.mailfrom=bank.example;\r\n"
    b"  dkim=pass header.d=bank.example\r\n"
    b'Authentication-Results: "mx.optmsg.example"; dkim=pass\r\n'
    b"Authentication-Results: mx.bank.example; spf=pass smtp.mailfrom=bank.example\r\n"
    b"From: alerts@bank.example\r\n"
    b"\r\n"
    b"Authentication-Results: mx.optmsg.example; this line is body text\r\n"
)


def test_strip_removes_fields_claiming_our_authserv_id() -> None:
    stripped = strip_our_authentication_results(FORGED, AUTHSERV_ID)
    assert stripped == (
        b"Received: from relay.example by mx.optmsg.example\r\n"
        b"Authentication-Results: mx.bank.example; spf=pass smtp.mailfrom=bank.example\r\n"
        b"From: alerts@bank.example\r\n"
        b"\r\n"
        b"Authentication-Results: mx.optmsg.example; this line is body text\r\n"
    )


def test_strip_leaves_a_message_without_our_fields_untouched() -> None:
    raw = b"Authentication-Results: mx.other.example; spf=pass\nFrom: a@b.example\n\nbody\r\n\x00"
    assert strip_our_authentication_results(raw, AUTHSERV_ID) is raw


def test_prepend_header_keeps_the_message_line_endings() -> None:
    assert prepend_header(b"From: a@b.example\n\nbody\n", "X-Test", "yes") == (
        b"X-Test: yes\nFrom: a@b.example\n\nbody\n"
    )
    assert prepend_header(b"From: a@b.example\r\n\r\nbody", "X-Test", "yes").startswith(
        b"X-Test: yes\r\nFrom:"
    )


def test_prepend_header_folds_long_values_at_spaces() -> None:
    value = "mx.optmsg.example; " + "; ".join(f"dkim=pass header.d=d{i}.example" for i in range(6))
    result = prepend_header(b"From: a@b.example\r\n\r\n", "Authentication-Results", value)
    head = result.split(b"\r\nFrom:")[0]
    lines = head.split(b"\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert b"".join(lines).decode() == f"Authentication-Results: {value}"  # unfolds back
    assert all(line.startswith(b" ") for line in lines[1:])


def test_prepend_header_refuses_line_breaks_in_the_value() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        prepend_header(b"", "X-Test", "a\r\nBcc: victim@example.com")


def test_our_header_survives_a_round_trip_through_strip() -> None:
    outcome = check(message(), {})
    value = authentication_results(AUTHSERV_ID, outcome, mail_from="", from_domain="bank.example")
    stamped = prepend_header(message(), "Authentication-Results", value)
    assert strip_our_authentication_results(stamped, AUTHSERV_ID) == message()


# resolvers


def test_static_resolver_follows_cnames_and_answers_absent_names_empty() -> None:
    resolver = StaticResolver(
        {
            "www.bank.example": {"CNAME": ["web.bank.example."]},
            "Web.Bank.Example": {"A": ["192.0.2.80"], "TXT": ["hello"]},
        }
    )
    assert resolver.a("WWW.bank.example.") == ["192.0.2.80"]
    assert resolver.txt("www.bank.example") == ["hello"]
    assert resolver.mx("www.bank.example") == []
    assert resolver.aaaa("nowhere.example") == []


def test_static_resolver_answers_ptr_from_the_reverse_zone() -> None:
    reverse = "1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa"
    resolver = StaticResolver({reverse: {"PTR": ["six.bank.example"]}})
    assert resolver.ptr("2001:db8::1") == ["six.bank.example"]
    assert resolver.ptr("not an ip") == []


def test_static_resolver_failing_names_raise_dns_temp_error() -> None:
    resolver = StaticResolver({}, failing=["bank.example"])
    with pytest.raises(DnsTempError):
        resolver.txt("BANK.example.")


@pytest.mark.parametrize(
    "records",
    [
        {"bank.example": {"SRV": ["x"]}},
        {"bank.example": {"A": ["2001:db8::1"]}},
        {"bank.example": {"MX": ["mx.bank.example"]}},
        {"bank.example": {"TXT": "v=spf1 -all"}},
    ],
)
def test_static_resolver_refuses_malformed_tables(records: Records) -> None:
    with pytest.raises(ValueError, match=r"bank\.example"):
        StaticResolver(records)


def test_system_resolver_is_built_with_bounded_timeouts_without_network() -> None:
    resolver = SystemResolver(timeout=2.5, nameservers=["127.0.0.1"])
    assert resolver.timeout == 2.5
    assert resolver.nameservers == ["127.0.0.1"]


def test_system_resolver_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SystemResolver(timeout=0, nameservers=["127.0.0.1"])


def test_system_resolver_asks_the_configured_server_and_port() -> None:
    records = {"example.org": {"TXT": ['"v=spf1 ip4:192.0.2.1 -all"'], "A": ["192.0.2.1"]}}
    with FakeDnsServer(records) as server:
        resolver = SystemResolver(timeout=2.0, nameservers=[server.address])
        assert resolver.nameservers == [f"127.0.0.1@{server.address[1]}"]
        assert resolver.txt("example.org") == ["v=spf1 ip4:192.0.2.1 -all"]
        assert resolver.a("example.org") == ["192.0.2.1"]
        assert resolver.txt("missing.example.org") == []
        asked = server.queries
        assert resolver.txt("missing.example.org") == []  # the NXDOMAIN is cached
        assert server.queries == asked
