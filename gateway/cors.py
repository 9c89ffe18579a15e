"""CORS for the client API, off unless ``http.cors_origins`` names web apps' origins.

Hand-written rather than a dependency: the policy is small and fixed (bearer tokens,
no cookies, one path prefix), and aiohttp-cors would add per-route registration that
every route module would have to remember.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a listed
  origin is answered here, before authentication (browsers send no token with it),
  with the methods and request headers the API takes.
- Any other request from a listed origin gets ``Access-Control-Allow-Origin`` naming
  it, and the response headers a client reads exposed, on errors too (a web app must
  be able to read a 401 problem to know it should sign in again).
- Nothing is added for an origin not on the list: the browser then refuses the page
  the response. Never ``Access-Control-Allow-Credentials``: the API authenticates by
  bearer token, never by cookie, so there are no credentials to allow.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.api_support import API_PREFIX, Handler

ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "Last-Event-ID")
EXPOSED_HEADERS = ("ETag", "Location", "Retry-After", "WWW-Authenticate")
#: How long a browser may reuse a preflight answer (seconds).
PREFLIGHT_MAX_AGE = 600


def _under_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _vary_origin(response: web.StreamResponse) -> None:
    # The response depends on Origin, so shared caches must key on it.
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Origin"
    elif "origin" not in {v.strip().lower() for v in vary.split(",")}:
        response.headers["Vary"] = f"{vary}, Origin"


def install(app: web.Application, origins: Sequence[str]) -> None:
    """Answer preflights and label API responses for ``origins`` (already normalised
    by the settings); nothing at all when there are none."""
    allowed = frozenset(origins)
    if not allowed:
        return

    def listed_origin(request: web.BaseRequest) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin in allowed and _under_api(request.path) else None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = listed_origin(request)
        if (
            origin is None
            or request.method != "OPTIONS"
            or "Access-Control-Request-Method" not in request.headers
        ):
            return await handler(request)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
            },
        )

    async def label(request: web.BaseRequest, response: web.StreamResponse) -> None:
        # On prepare rather than in the middleware: a streamed response (events) has
        # sent its headers before its handler returns.
        if not _under_api(request.path):
            return
        _vary_origin(response)
        origin = listed_origin(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)

    # First, so that preflights skip every other middleware (authentication included).
    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(label)
