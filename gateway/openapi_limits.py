"""The client API's per-IP limit in the OpenAPI document: every operation may answer
429 (gateway.api_limits), with Retry-After."""

from __future__ import annotations

from typing import Any

from gateway.openapi_support import ref

PER_IP = (
    "Too many requests from this client IP (limits.api_requests_per_ip within "
    "limits.api_window_s; an IPv6 client counts per /64); try again after "
    "Retry-After seconds"
)
RATE_LIMITED_PER_IP: dict[str, Any] = {
    "description": PER_IP,
    "headers": {
        "Retry-After": {
            "required": True,
            "description": "Whole seconds until a request may succeed",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }
    },
    "content": {"application/problem+json": {"schema": ref("Problem")}},
}


def add_per_ip_limit(document: dict[str, Any]) -> None:
    """Document the 429 on every operation; an operation that already answers 429 for
    a reason of its own keeps its description, with the per-IP limit added."""
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            own = responses.get("429")
            if own is None:
                responses["429"] = RATE_LIMITED_PER_IP
            elif PER_IP not in own["description"]:
                # A copy: the operation's own response may be shared by other operations.
                responses["429"] = {**own, "description": f"{own['description']}. Or: {PER_IP}"}
