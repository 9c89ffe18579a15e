"""How the server reads an address a person typed, before anything is saved.

A client shows "will be saved as +1 415-555-0100" while the user types, and the reason
when the text is not an address, without carrying its own copy of the phone-number
rules: the answer comes from the very parser that POST /trusted-senders uses.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api_support import ApiProblem, user_region
from gateway.keys import SETTINGS
from inbox.addresses import E164, format_international, parse_in_regions
from inbox.errors import AddressError
from optin import trust
from optin.screener import display_name

#: Longer text is no address of any kind (the parsers stop at 254 characters); the
#: bound keeps a pasted page out of the parser and out of the echoed answer, and any
#: value within it fits aiohttp's 8,190-byte request line even when every character
#: is four UTF-8 bytes, percent-encoded (12 bytes).
MAX_VALUE_CHARS = 500


#: What the address is for: the trust list reads a number in the user's region only;
#: sending (drafts, POST /messages) tries the user's region, then the deployment's.
PURPOSES = ("trust", "send")


def reading(typed: str, region: str, *, also: str | None = None) -> dict[str, Any]:
    """What the trust list would store for ``typed`` (or, with ``also``, what a send
    would address, trying that region second): the canonical address, its kind and
    how it reads (a phone number with its country code), or why it is none."""
    regions = (region,) if also is None else (region, also)
    try:
        address = parse_in_regions(trust.parse_entry, typed, regions)
    except AddressError as exc:
        return {
            "value": typed,
            "valid": False,
            "address": None,
            "kind": None,
            "display": None,
            "reason": exc.reason,
        }
    kind = trust.kind_of(address)
    display = (
        format_international(E164(address)) if kind == "phone" else display_name(address, region)
    )
    return {
        "value": typed,
        "valid": True,
        "address": address,
        "kind": kind,
        "display": display,
        "reason": None,
    }


async def normalize_address(request: web.Request) -> web.StreamResponse:
    typed = request.query.get("value")
    if typed is None:
        raise ApiProblem(400, "value is required: the address as typed")
    if len(typed) > MAX_VALUE_CHARS:
        raise ApiProblem(400, f"value must be at most {MAX_VALUE_CHARS} characters")
    purpose = request.query.get("purpose", "trust")
    if purpose not in PURPOSES:
        raise ApiProblem(400, "purpose must be trust or send")
    also = request.config_dict[SETTINGS].current.optin.default_region if purpose == "send" else None
    # An invalid address is a valid question: 200 with the reason, so that a client
    # checking as the user types is not answered with an error for every keystroke.
    return web.json_response(reading(typed, await user_region(request), also=also))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/addresses/normalize", normalize_address)
