"""The trusted-sender decision: a pure function of its inputs, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from inbox.addresses import Address, is_email
from inbox.message import SenderAuth, Verdict


class TrustVerdict(enum.StrEnum):
    TRUSTED = "trusted"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Policy:
    """Deployment-wide knobs. ``require_email_auth`` False lets a trusted email address
    through even when SPF/DKIM/DMARC did not authenticate it (operators' choice; the
    default is strict because a From header alone is trivially forged)."""

    require_email_auth: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str


REASON_TRUSTED = "sender is on your trusted list"
REASON_BLOCKED = "sender is blocked"
REASON_UNKNOWN = "unknown sender: not on your trusted list"
REASON_UNAUTHENTICATED = (
    "sender is on your trusted list, but this email failed sender authentication "
    "(SPF/DKIM/DMARC), so it may be forged"
)


def decide(
    sender: Address,
    trust: TrustVerdict | None,
    auth: SenderAuth | None,
    policy: Policy,
) -> Decision:
    """Admit, quarantine or drop one inbound message.

    ``trust`` is the user's entry for exactly this sender (None: no entry). ``auth``
    is the sender authentication the bridge established; an email is admitted only
    when it is authenticated (unless the policy relaxes that). Phone senders carry
    no authentication of their own: the carrier's caller id is all there is.
    """
    if trust is TrustVerdict.BLOCKED:
        return Decision(Verdict.DROP, REASON_BLOCKED)
    if trust is not TrustVerdict.TRUSTED:
        return Decision(Verdict.QUARANTINE, REASON_UNKNOWN)
    email_needs_auth = is_email(sender) and policy.require_email_auth
    if email_needs_auth and (auth is None or not auth.authenticated):
        return Decision(Verdict.QUARANTINE, REASON_UNAUTHENTICATED)
    return Decision(Verdict.ADMIT, REASON_TRUSTED)
