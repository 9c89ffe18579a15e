"""The trusted-sender decision: a pure function of its inputs, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from inbox.addresses import Address, is_email
from inbox.message import Flood, SenderAuth, Verdict


class TrustVerdict(enum.StrEnum):
    TRUSTED = "trusted"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Policy:
    """Deployment-wide knobs. ``require_email_auth`` False lets a trusted email address
    through even when SPF/DKIM/DMARC did not authenticate it (operators' choice; the
    default is strict because a From header alone is trivially forged)."""

    require_email_auth: bool = True
    # A trusted sender over the per-sender flood limit is still admitted (False:
    # held like anyone else's flood).
    flood_exempt_trusted: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    #: Held because of the flood limit (not for the sender's identity).
    flood: bool = False


REASON_TRUSTED = "sender is on your trusted list"
REASON_DOMAIN_TRUSTED = "sender's domain is on your trusted list and the mail is authenticated"
REASON_BLOCKED = "sender is blocked"
REASON_DOMAIN_BLOCKED = "sender's domain is blocked"
REASON_UNKNOWN = "unknown sender: not on your trusted list"
REASON_UNAUTHENTICATED = (
    "sender is on your trusted list, but this email failed sender authentication "
    "(SPF/DKIM/DMARC), so it may be forged"
)
REASON_DOMAIN_UNAUTHENTICATED = (
    "sender's domain is on your trusted list, but this email failed sender "
    "authentication (SPF/DKIM/DMARC), so it may be forged"
)


def flood_reason(flood: Flood) -> str:
    return f"held: flood from this sender (over {flood.limit} messages in {flood.window_s} s)"


def decide(
    sender: Address,
    trust: TrustVerdict | None,
    auth: SenderAuth | None,
    policy: Policy,
    domain_trust: TrustVerdict | None = None,
    flood: Flood | None = None,
) -> Decision:
    """Admit, quarantine or drop one inbound message.

    ``trust`` is the user's entry for exactly this sender (None: no entry), and
    ``domain_trust`` their entry for the sender's email domain (``@example.com``).
    ``auth`` is the sender authentication the bridge established. An entry for the
    exact sender wins over a domain entry. An email is admitted on an address entry
    only when it is authenticated (unless the policy relaxes that); a domain entry
    applies only to authenticated (DMARC-aligned) mail, whatever the policy, because
    anyone can write any address at that domain into a From header. Phone senders
    carry no authentication of their own: the carrier's caller id is all there is.

    ``flood`` (the gateway's per-sender limit was passed) holds a message that would
    otherwise be quarantined or admitted; a blocked sender's is dropped all the same,
    and a trusted sender's is admitted when the policy exempts trusted senders.
    """
    decision = _decide(sender, trust, auth, policy, domain_trust)
    if flood is None or decision.verdict is Verdict.DROP:
        return decision
    if decision.verdict is Verdict.ADMIT and policy.flood_exempt_trusted:
        return decision
    return Decision(Verdict.QUARANTINE, flood_reason(flood), flood=True)


def _decide(
    sender: Address,
    trust: TrustVerdict | None,
    auth: SenderAuth | None,
    policy: Policy,
    domain_trust: TrustVerdict | None,
) -> Decision:
    if trust is TrustVerdict.BLOCKED:
        return Decision(Verdict.DROP, REASON_BLOCKED)
    email = is_email(sender)
    authenticated = auth is not None and auth.authenticated
    if trust is TrustVerdict.TRUSTED:
        if email and policy.require_email_auth and not authenticated:
            return Decision(Verdict.QUARANTINE, REASON_UNAUTHENTICATED)
        return Decision(Verdict.ADMIT, REASON_TRUSTED)
    if email and domain_trust is not None:
        if not authenticated:
            if domain_trust is TrustVerdict.TRUSTED:
                return Decision(Verdict.QUARANTINE, REASON_DOMAIN_UNAUTHENTICATED)
            return Decision(Verdict.QUARANTINE, REASON_UNKNOWN)
        if domain_trust is TrustVerdict.BLOCKED:
            return Decision(Verdict.DROP, REASON_DOMAIN_BLOCKED)
        return Decision(Verdict.ADMIT, REASON_DOMAIN_TRUSTED)
    return Decision(Verdict.QUARANTINE, REASON_UNKNOWN)
