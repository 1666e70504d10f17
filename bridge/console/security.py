"""Headers every console response carries: a Content-Security-Policy that forbids inline
scripts and styles (a value that sneaks into a page cannot run), no framing, no sniffing, no
Referer leaving the page, and no caching of pages that show plant state."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "ConsoleHeaders"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer makes Chromium send `Origin: null`
    "Cross-Origin-Opener-Policy": "same-origin",
}


class ConsoleHeaders:
    """ASGI middleware: adds the headers to responses under ``prefix``; pages (not the static
    files, which are the same for everyone) are also marked ``no-store``."""

    def __init__(self, app: ASGIApp, prefix: str, static_prefix: str) -> None:
        self.app = app
        self._prefix = prefix
        self._static = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        inside = path == self._prefix or path.startswith(self._prefix + "/")
        if scope["type"] != "http" or not inside:
            await self.app(scope, receive, send)
            return
        static = path.startswith(self._static + "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)
