"""The pages every edge serves to play and to watch a game in a browser.

``GET /play/{gameId}?token=...`` and ``GET /watch/{gameId}`` answer one static
HTML page (``edge/web/play.html``); its script reads the mode, the game id and
the token from its own URL, then plays through the JavaScript client
(``clients/js/xlmate-client.js``, served as ``/static/xlmate-client.js``).  No
build step and no templating: the files are read once at start and served as
they are.  Optional query parameters: ``discovery`` (discovery's HTTP URL; the
page then asks it for an edge and falls back through its list when an edge
dies) and ``region``; without ``discovery`` the page uses the edge it came from.

Only the files named in ``STATIC`` are served: no part of a request's path
ever reaches the file system.  The HTML carries a Content-Security-Policy
(scripts and styles from this edge only) and ``Referrer-Policy: no-referrer``,
so the seat token in the page's URL never leaks to another site.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from websockets.http11 import Response

from xlmate.errors import ConfigError
from xlmate.httpd import HttpRequest, OriginPolicy, Router, make_response

WEB_DIR: Final = Path(__file__).resolve().parent / "web"
PAGE: Final = "play.html"
STATIC: Final = {
    "xlmate-client.js": "text/javascript; charset=utf-8",
    "play.js": "text/javascript; charset=utf-8",
    "board.js": "text/javascript; charset=utf-8",
    "play.css": "text/css; charset=utf-8",
}


class Pages:
    """The page and its static files, read from ``web_dir`` once (a missing file fails start)."""

    def __init__(self, origins: OriginPolicy, web_dir: Path = WEB_DIR) -> None:
        try:
            self._files = {name: (web_dir / name).read_bytes() for name in [PAGE, *STATIC]}
        except OSError as exc:
            raise ConfigError(f"the edge's page files are missing ({exc})") from exc
        ancestors = "*" if origins.any else " ".join(("'self'", *origins.origins))
        self._csp = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self' http: https: ws: wss:; base-uri 'none'; form-action 'none'; "
            f"frame-ancestors {ancestors}"
        )

    def add_routes(self, router: Router) -> None:
        """Register ``/play/{gameId}``, ``/watch/{gameId}`` and ``/static/<file>``."""
        router.get("/play/{gameId}", self._page)
        router.get("/watch/{gameId}", self._page)
        for name, content_type in STATIC.items():
            router.get(f"/static/{name}", self._static(name, content_type))

    def _page(self, _request: HttpRequest) -> Response:
        response = make_response(200, self._files[PAGE], "text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = self._csp
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _static(self, name: str, content_type: str) -> Callable[[HttpRequest], Response]:
        body = self._files[name]

        def handler(_request: HttpRequest) -> Response:
            response = make_response(200, body, content_type)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

        return handler
