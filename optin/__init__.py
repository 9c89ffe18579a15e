"""The trusted-sender filter: decide(), trust lists, contacts, the screener
(quarantine review) and release."""

from optin.address_book import ImportResult
from optin.contacts import (
    Contact,
    ContactsTooLarge,
    ImportReport,
    MalformedContacts,
    RejectedEntry,
    parse_contacts,
)
from optin.decide import Decision, Policy, TrustVerdict, decide
from optin.errors import NothingToUndo, NotQuarantined, OptinError, TrustEntryNotFound
from optin.quarantine import ReviewResult, deny, release
from optin.screener import DecisionResult, UndoResult
from optin.trust import Source, TrustRecord, TrustTarget, parse_entry

__all__ = [
    "Contact",
    "ContactsTooLarge",
    "Decision",
    "DecisionResult",
    "ImportReport",
    "ImportResult",
    "MalformedContacts",
    "NotQuarantined",
    "NothingToUndo",
    "OptinError",
    "Policy",
    "RejectedEntry",
    "ReviewResult",
    "Source",
    "TrustEntryNotFound",
    "TrustRecord",
    "TrustTarget",
    "TrustVerdict",
    "UndoResult",
    "decide",
    "deny",
    "parse_contacts",
    "parse_entry",
    "release",
]
