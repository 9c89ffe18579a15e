"""optin.decide(): nothing reaches the inbox unless the user opted the sender in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inbox.addresses import E164, EmailAddress
from inbox.message import AuthResult, SenderAuth, Verdict
from optin.decide import (
    REASON_BLOCKED,
    REASON_DOMAIN_BLOCKED,
    REASON_DOMAIN_TRUSTED,
    REASON_DOMAIN_UNAUTHENTICATED,
    REASON_TRUSTED,
    REASON_UNAUTHENTICATED,
    REASON_UNKNOWN,
    Decision,
    Policy,
    TrustVerdict,
    decide,
)

PHONE = E164("+14155550100")
EMAIL = EmailAddress("ada@example.com")
STRICT = Policy()
DMARC_PASS = SenderAuth(
    spf=AuthResult.PASS, dkim=AuthResult.PASS, dmarc=AuthResult.PASS, aligned=True
)
SPF_ONLY_UNALIGNED = SenderAuth(spf=AuthResult.PASS, aligned=False)


def test_trusted_phone_sender_is_admitted() -> None:
    assert decide(PHONE, TrustVerdict.TRUSTED, None, STRICT).verdict is Verdict.ADMIT


def test_unknown_phone_sender_is_quarantined_with_readable_reason() -> None:
    decision = decide(PHONE, None, None, STRICT)
    assert decision.verdict is Verdict.QUARANTINE
    assert decision.reason == REASON_UNKNOWN


def test_blocked_sender_is_dropped() -> None:
    decision = decide(PHONE, TrustVerdict.BLOCKED, None, STRICT)
    assert (decision.verdict, decision.reason) == (Verdict.DROP, REASON_BLOCKED)


def test_trusted_email_with_dmarc_pass_is_admitted() -> None:
    decision = decide(EMAIL, TrustVerdict.TRUSTED, DMARC_PASS, STRICT)
    assert (decision.verdict, decision.reason) == (Verdict.ADMIT, REASON_TRUSTED)


@pytest.mark.parametrize("auth", [None, SenderAuth(), SPF_ONLY_UNALIGNED])
def test_trusted_email_without_authentication_is_quarantined(auth: SenderAuth | None) -> None:
    decision = decide(EMAIL, TrustVerdict.TRUSTED, auth, STRICT)
    assert (decision.verdict, decision.reason) == (Verdict.QUARANTINE, REASON_UNAUTHENTICATED)


def test_relaxed_policy_admits_trusted_unauthenticated_email() -> None:
    relaxed = Policy(require_email_auth=False)
    assert decide(EMAIL, TrustVerdict.TRUSTED, None, relaxed).verdict is Verdict.ADMIT


def test_relaxed_policy_still_quarantines_unknown_email() -> None:
    relaxed = Policy(require_email_auth=False)
    assert decide(EMAIL, None, DMARC_PASS, relaxed).verdict is Verdict.QUARANTINE


auth_strategy = st.one_of(
    st.none(),
    st.builds(
        SenderAuth,
        spf=st.sampled_from(AuthResult),
        dkim=st.sampled_from(AuthResult),
        dmarc=st.sampled_from(AuthResult),
        aligned=st.booleans(),
    ),
)


@given(
    sender=st.sampled_from([PHONE, EMAIL]),
    trust=st.sampled_from([None, TrustVerdict.BLOCKED]),
    domain=st.sampled_from([None, TrustVerdict.BLOCKED, TrustVerdict.TRUSTED]),
    auth=auth_strategy,
    require_auth=st.booleans(),
)
def test_untrusted_or_blocked_sender_is_never_admitted(
    sender: str,
    trust: TrustVerdict | None,
    domain: TrustVerdict | None,
    auth: SenderAuth | None,
    require_auth: bool,
) -> None:
    policy = Policy(require_email_auth=require_auth)
    decision = decide(sender, trust, auth, policy, domain)  # type: ignore[arg-type]
    authenticated_domain_trust = (
        trust is None
        and domain is TrustVerdict.TRUSTED
        and sender == EMAIL
        and auth is not None
        and auth.authenticated
    )
    assert (decision.verdict is Verdict.ADMIT) == authenticated_domain_trust
    assert decision.reason


def test_trusted_domain_admits_authenticated_mail_from_any_address_there() -> None:
    decision = decide(EMAIL, None, DMARC_PASS, STRICT, TrustVerdict.TRUSTED)
    assert decision == Decision(Verdict.ADMIT, REASON_DOMAIN_TRUSTED)


@pytest.mark.parametrize("auth", [None, SPF_ONLY_UNALIGNED])
def test_trusted_domain_never_admits_unauthenticated_mail(auth: SenderAuth | None) -> None:
    relaxed = Policy(require_email_auth=False)
    decision = decide(EMAIL, None, auth, relaxed, TrustVerdict.TRUSTED)
    assert decision == Decision(Verdict.QUARANTINE, REASON_DOMAIN_UNAUTHENTICATED)


def test_blocked_domain_drops_authenticated_mail_from_it() -> None:
    decision = decide(EMAIL, None, DMARC_PASS, STRICT, TrustVerdict.BLOCKED)
    assert decision == Decision(Verdict.DROP, REASON_DOMAIN_BLOCKED)


def test_blocked_domain_cannot_be_used_to_drop_forged_mail_silently() -> None:
    # A forged From at a blocked domain is held, not dropped, so a forger cannot
    # make someone's mail vanish.
    decision = decide(EMAIL, None, None, STRICT, TrustVerdict.BLOCKED)
    assert decision == Decision(Verdict.QUARANTINE, REASON_UNKNOWN)


def test_entry_for_the_exact_address_wins_over_its_domain() -> None:
    blocked = decide(EMAIL, TrustVerdict.BLOCKED, DMARC_PASS, STRICT, TrustVerdict.TRUSTED)
    trusted = decide(EMAIL, TrustVerdict.TRUSTED, DMARC_PASS, STRICT, TrustVerdict.BLOCKED)
    assert (blocked.verdict, trusted.verdict) == (Verdict.DROP, Verdict.ADMIT)


def test_domain_entry_never_applies_to_a_phone_sender() -> None:
    decision = decide(PHONE, None, DMARC_PASS, STRICT, TrustVerdict.TRUSTED)
    assert decision.verdict is Verdict.QUARANTINE
