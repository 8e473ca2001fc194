"""The edge's read-only game views over HTTP: ``GET /v1/games/{id}`` and ``/pgn``.

Each asks the broker on the edge's catch-up socket; nothing is cached here.
"""

from __future__ import annotations

from websockets.http11 import Response

from xlmate.constants import GAME_ID_RE
from xlmate.edge.bus import BrokerUnavailable
from xlmate.edge.shardbus import ShardedBus
from xlmate.httpd import HttpRequest, json_response, text_response
from xlmate.wire import PgnReply, StateReply


class GameViews:
    """HTTP handlers for one edge's ``Router``."""

    def __init__(self, bus: ShardedBus) -> None:
        self.bus = bus

    async def game(self, request: HttpRequest) -> Response:
        """The game's current state, as a spectator's ``sync`` would show it."""
        game_id = request.params["gameId"]
        if not GAME_ID_RE.match(game_id):
            return json_response(404, {"error": "not_found"})
        try:
            reply = await self.bus.fetch(game_id, None)
        except BrokerUnavailable:
            return json_response(503, {"error": "unavailable"})
        if isinstance(reply, StateReply):
            return json_response(200, {**reply.sync, "you": "spectator"})
        return json_response(404, {"error": "not_found"})

    async def pgn(self, request: HttpRequest) -> Response:
        """The game's PGN."""
        game_id = request.params["gameId"]
        if not GAME_ID_RE.match(game_id):
            return json_response(404, {"error": "not_found"})
        try:
            reply = await self.bus.pgn(game_id)
        except BrokerUnavailable:
            return json_response(503, {"error": "unavailable"})
        if isinstance(reply, PgnReply):
            return text_response(200, reply.text, "application/x-chess-pgn; charset=utf-8")
        return json_response(404, {"error": "not_found"})
