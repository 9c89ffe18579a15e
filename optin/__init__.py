"""The trusted-sender filter: decide(), trust lists, quarantine release and deny."""

from optin.decide import Decision, Policy, TrustVerdict, decide
from optin.errors import NotQuarantined, OptinError, TrustEntryNotFound
from optin.quarantine import ReviewResult, deny, release
from optin.trust import Source, TrustRecord

__all__ = [
    "Decision",
    "NotQuarantined",
    "OptinError",
    "Policy",
    "ReviewResult",
    "Source",
    "TrustEntryNotFound",
    "TrustRecord",
    "TrustVerdict",
    "decide",
    "deny",
    "release",
]
