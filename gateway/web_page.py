"""The web page: ``GET /`` (index.html) and its static files under ``/static/``.

The page is plain HTML, CSS and ES modules shipped in ``gateway/static`` (no build
step) and talks to the gateway only through the public client API (``/api/v1``),
like any other client. Every response carries a strict Content-Security-Policy:
scripts, styles and connections only from this origin, no inline script or style,
no plugins, no framing of the page by others. E-mail HTML is shown by the page in a
sandboxed ``<iframe srcdoc>``, which inherits this policy, so it cannot run scripts
or load anything remote either.

Only files that exist under ``gateway/static`` with a known suffix are served; a
name is checked against a strict pattern before it touches the file system, so
``..``, encoded separators, hidden files and anything unexpected are a 404.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.problems import problem

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
STATIC_PREFIX: Final = "/static"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # blob: for images of attachments fetched with the bearer token; data: for
        # the empty favicon (which keeps browsers from asking for /favicon.ico).
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

#: Headers on every response of the page and its files.
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # For browsers that predate frame-ancestors.
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    # Files change with every deployment and are small: always revalidate
    # (aiohttp answers 304 to a matching If-None-Match / If-Modified-Since).
    "Cache-Control": "no-cache",
}

CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Lower-case words separated by '/', ending in one known suffix: no '..', no
# hidden files, no backslashes or encoded separators can pass.
_NAME = re.compile(r"(?:[a-z0-9][a-z0-9_-]*/)*[a-z0-9][a-z0-9_.-]*\.(?:html|css|js|svg|png)")


#: Files the sandboxed email frame loads. The frame has no origin of its own (no
#: allow-same-origin), so a same-origin resource policy would block them; they are
#: public and hold nothing of a user's.
FRAME_FILES: Final[frozenset[str]] = frozenset({"email-frame.css"})


def _file(path: Path) -> web.FileResponse:
    headers = dict(SECURITY_HEADERS)
    headers["Content-Type"] = CONTENT_TYPES[path.suffix]
    if path.name in FRAME_FILES and path.parent == STATIC_DIR:
        headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return web.FileResponse(path, headers=headers)


def _not_found() -> web.Response:
    return problem(404, "no such file", headers=dict(SECURITY_HEADERS))


def static_path(name: str, root: Path = STATIC_DIR) -> Path | None:
    """The file ``name`` names under ``root``, or None when it is not one to serve."""
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    path = (root / name).resolve()
    # A symbolic link pointing out of the directory is refused like '..'.
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def index(request: web.Request) -> web.StreamResponse:
    return _file(STATIC_DIR / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    path = static_path(request.match_info["name"])
    if path is None:
        return _not_found()
    return _file(path)


def install(app: web.Application) -> None:
    """Serve the page at ``/`` and its files under ``/static/``."""
    app.router.add_get("/", index)
    app.router.add_get(STATIC_PREFIX + "/{name:.+}", static_file)
