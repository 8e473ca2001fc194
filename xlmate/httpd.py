"""A small GET-only HTTP layer on top of the ``websockets`` server.

Every component answers ``/healthz`` and ``/metrics``; discovery answers its
JSON API; edges answer ``/v1/games/...`` beside their WebSocket paths.  The
``websockets`` server calls ``process_request`` before the upgrade check, so a
plain GET gets a plain HTTP response from the same port and the same event
loop, with no second web framework.  ``Router.process_request`` returns
``None`` for paths that should go on to the WebSocket handshake.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a route handler sees: the path parameters and the query string."""

    path: str
    params: dict[str, str]
    query: dict[str, str]
    remote: str


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


def json_response(status: int, payload: Any) -> Response:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return make_response(status, body, "application/json")


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A text response."""
    return make_response(status, text.encode(), content_type)


def metrics_response(registry: CollectorRegistry) -> Response:
    """The Prometheus text exposition of ``registry``."""
    return make_response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


class Router:
    """Maps GET paths like ``/v1/games/{gameId}/pgn`` to handlers.

    Patterns use ``{name}`` for one path segment of ``[A-Za-z0-9_-]``.  Paths
    registered with ``passthrough`` are WebSocket endpoints: the router returns
    ``None`` so the handshake goes on.  Anything else is a 404.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], Handler | None]] = []

    def get(self, pattern: str, handler: Handler) -> None:
        """Answer GET ``pattern`` with ``handler``."""
        self._routes.append((self._compile(pattern), handler))

    def passthrough(self, pattern: str) -> None:
        """Let requests for ``pattern`` continue to the WebSocket handshake."""
        self._routes.append((self._compile(pattern), None))

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_-]+)", pattern)
        return re.compile(f"^{regex}$")

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The ``websockets`` hook: answer HTTP routes, pass WebSocket ones on."""
        parts = urlsplit(request.path)
        for regex, handler in self._routes:
            match = regex.match(parts.path)
            if match is None:
                continue
            if handler is None:
                return None
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            remote = connection.remote_address
            result = handler(
                HttpRequest(parts.path, match.groupdict(), query, str(remote[0]) if remote else "")
            )
            if isinstance(result, Awaitable):
                result = await result
            return result
        return json_response(404, {"error": "not_found"})


async def refuse_websocket(connection: ServerConnection) -> None:
    """Handler for HTTP-only servers: a WebSocket that got through is closed at once."""
    await connection.close(1008, "no WebSocket endpoint here")
