"""A small GET-only HTTP layer on top of the ``websockets`` server.

Every component answers ``/healthz`` and ``/metrics``; discovery answers its
JSON API; edges answer ``/v1/games/...`` and the pages beside their WebSocket
paths.  The ``websockets`` server calls ``process_request`` before the upgrade
check, so a plain GET gets a plain HTTP response from the same port and the
same event loop, with no second web framework.  ``Router.process_request``
returns ``None`` for paths that should go on to the WebSocket handshake.

Methods: routes answer GET; ``OPTIONS`` is a CORS preflight; anything else on a
known path is ``405`` with ``Allow: GET, OPTIONS``.  (``websockets`` refuses a
request with a body, e.g. most POSTs, with 400 before the router sees it.)

Origins (``OriginPolicy``, one per router, from ``--allow-origin``): every
HTTP answer carries ``Access-Control-Allow-Origin`` when the request's
``Origin`` is allowed (``*`` allows any); a WebSocket handshake whose ``Origin``
is not allowed is refused with 403 before the upgrade.  A request without
``Origin`` (curl, the Python client, a server) is never refused: the header
only protects browsers' users, and only browsers send it.  A page served by
the edge itself (its ``Origin`` names the ``Host`` it was asked for) is always
allowed.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from xlmate import metrics
from xlmate.errors import ConfigError

ALLOWED_METHODS: Final = "GET, OPTIONS"
PREFLIGHT_MAX_AGE_S: Final = 600  # browsers cache a preflight this long


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def canonical_origin(origin: str) -> str:
    """``origin`` as a browser sends it: scheme and host in lower case, no default port
    (``https://Play.Example.com:443`` -> ``https://play.example.com``)."""
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which browser origins may read HTTP answers (CORS) and open WebSockets.

    ``origins`` holds exact origins (``https://play.example.com``, made canonical by
    ``canonical_origin`` as browsers send them) or ``*``.
    Pure: no sockets, so the rules are unit-tested directly.
    """

    origins: tuple[str, ...] = ("*",)

    @classmethod
    def parse(cls, values: Iterable[str]) -> OriginPolicy:
        """From repeated and/or comma-separated ``--allow-origin`` values; empty: any."""
        origins: list[str] = []
        for value in values:
            for item in value.split(","):
                item = item.strip().rstrip("/")
                if not item:
                    continue
                if item != "*" and not _ORIGIN_RE.fullmatch(item):
                    raise ConfigError(f"{item!r} is not an origin like https://example.com or *")
                origins.append(item if item == "*" else canonical_origin(item))
        return cls(tuple(origins) or ("*",))

    @property
    def any(self) -> bool:
        """Every origin is allowed."""
        return "*" in self.origins

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """May a browser page of ``origin`` use this server?  No ``Origin``: not a browser, yes.

        ``host`` is the request's ``Host`` header: a page served by this very
        server (same origin) is always allowed.
        """
        if origin is None or self.any or origin in self.origins:
            return True
        return host is not None and urlsplit(origin).netloc.lower() == host.lower()

    def cors_headers(self, origin: str | None, host: str | None = None) -> list[tuple[str, str]]:
        """The headers an HTTP answer to ``origin`` carries (none if it is not allowed)."""
        if self.any:
            return [("Access-Control-Allow-Origin", "*")]
        vary = [("Vary", "Origin")]
        if origin is None or not self.allows(origin, host):
            return vary
        return [("Access-Control-Allow-Origin", origin), *vary]

    def preflight_headers(
        self, origin: str | None, host: str | None, requested_headers: str | None
    ) -> list[tuple[str, str]]:
        """The headers of the answer to a CORS preflight (``OPTIONS``)."""
        headers = self.cors_headers(origin, host)
        if not any(name == "Access-Control-Allow-Origin" for name, _ in headers):
            return headers
        headers += [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_S)),
        ]
        if requested_headers:
            headers.append(("Access-Control-Allow-Headers", requested_headers))
        return headers


_ORIGIN_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a route handler sees: the path parameters and the query string."""

    path: str
    params: dict[str, str]
    query: dict[str, str]
    remote: str
    headers: Headers = field(default_factory=Headers)


Handler = Callable[[HttpRequest], Awaitable[Response | None] | Response | None]


def make_response(status: int, body: bytes, content_type: str) -> Response:
    """An HTTP response with a body; the connection closes after it."""
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON response, with extra ``headers`` if given."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    response = make_response(status, body, "application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A text response."""
    return make_response(status, text.encode(), content_type)


def empty_response(status: int, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A response without a body (preflights, 405)."""
    all_headers = Headers(
        [("Content-Length", "0"), ("Cache-Control", "no-store"), ("Connection", "close")]
    )
    for name, value in headers:
        all_headers[name] = value
    return Response(status, http.HTTPStatus(status).phrase, all_headers, b"")


def metrics_response(registry: CollectorRegistry, labels: bytes = b"") -> Response:
    """The Prometheus text exposition of ``registry``.

    ``labels`` (``metrics.constant_labels``) are added to every sample, e.g. a
    broker's shard.
    """
    text = generate_latest(registry)
    if labels:
        text = metrics.with_labels(text, labels)
    return make_response(200, text, CONTENT_TYPE_LATEST)


class Router:
    """Maps GET paths like ``/v1/games/{gameId}/pgn`` to handlers.

    Patterns use ``{name}`` for one path segment of ``[A-Za-z0-9_-]``.  Paths
    registered with ``passthrough`` are WebSocket endpoints: the router returns
    ``None`` so the handshake goes on (if ``origins`` allows the page's
    ``Origin``).  Anything else is a 404.  See the module docstring for methods
    and CORS.
    """

    def __init__(self, origins: OriginPolicy | None = None) -> None:
        self._routes: list[tuple[re.Pattern[str], Handler | None]] = []
        self.origins = origins or OriginPolicy()

    def get(self, pattern: str, handler: Handler) -> None:
        """Answer GET ``pattern`` with ``handler``."""
        self._routes.append((self._compile(pattern), handler))

    def passthrough(self, pattern: str) -> None:
        """Let requests for ``pattern`` continue to the WebSocket handshake."""
        self._routes.append((self._compile(pattern), None))

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        """``/a/{name}.js`` -> a regex: literal text escaped, ``{name}`` one safe segment."""
        parts = re.split(r"\{(\w+)\}", pattern)
        regex = "".join(
            f"(?P<{part}>[A-Za-z0-9_-]+)" if odd else re.escape(part)
            for odd, part in ((i % 2 == 1, p) for i, p in enumerate(parts))
        )
        return re.compile(f"^{regex}\\Z")

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The ``websockets`` hook: answer HTTP routes, pass WebSocket ones on."""
        parts = urlsplit(request.path)
        origin = _one(request.headers, "Origin")
        host = _one(request.headers, "Host")
        for regex, handler in self._routes:
            match = regex.match(parts.path)
            if match is None:
                continue
            if request.method == "OPTIONS":
                requested = _one(request.headers, "Access-Control-Request-Headers")
                return empty_response(
                    204,
                    [
                        ("Allow", ALLOWED_METHODS),
                        *self.origins.preflight_headers(origin, host, requested),
                    ],
                )
            if request.method != "GET":
                return self._with_cors(
                    empty_response(405, [("Allow", ALLOWED_METHODS)]), origin, host
                )
            if handler is None:
                if self.origins.allows(origin, host):
                    return None
                return json_response(
                    403,
                    {"error": "origin_not_allowed", "message": f"origin {origin} is not allowed"},
                )
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            remote = connection.remote_address
            result = handler(
                HttpRequest(
                    parts.path,
                    match.groupdict(),
                    query,
                    str(remote[0]) if remote else "",
                    request.headers,
                )
            )
            if isinstance(result, Awaitable):
                result = await result
            return None if result is None else self._with_cors(result, origin, host)
        return self._with_cors(json_response(404, {"error": "not_found"}), origin, host)

    def _with_cors(self, response: Response, origin: str | None, host: str | None) -> Response:
        for name, value in self.origins.cors_headers(origin, host):
            response.headers[name] = value
        return response


def _one(headers: Headers, name: str) -> str | None:
    """A header that should appear once; None when absent or repeated (never trusted then)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


async def refuse_websocket(connection: ServerConnection) -> None:
    """Handler for HTTP-only servers: a WebSocket that got through is closed at once."""
    await connection.close(1008, "no WebSocket endpoint here")
