"""Helpers that play real games through the client library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.integration.cluster import SECRET
from xlmate.client import GameClient
from xlmate.tokens import Clock, mint_seat_token, new_game_id

TEN_MINUTES = Clock(600, 0)


def mint_game(
    clock: Clock = TEN_MINUTES, *, white_id: str | None = None, black_id: str | None = None
) -> tuple[str, str, str]:
    """A fresh game id and its white and black seat tokens (signed with the tests' secret)."""
    gid = new_game_id()
    white = mint_seat_token(SECRET, gid, "white", player_id=white_id, clock=clock)
    black = mint_seat_token(SECRET, gid, "black", player_id=black_id, clock=clock)
    return gid, white, black


async def seat_players(game: dict[str, Any], url: str) -> tuple[GameClient, GameClient]:
    """White and black of ``game`` (as ``Cluster.new_game`` returns it), connected to ``url``."""
    gid = game["gameId"]
    white = await GameClient(gid, token=game["white"]["token"], edge_url=url).connect()
    black = await GameClient(gid, token=game["black"]["token"], edge_url=url).connect()
    return white, black


@dataclass
class Played:
    """What a background game achieved: moves acked so far (in order)."""

    acked: list[str] = field(default_factory=list)


async def play(white: GameClient, black: GameClient, moves: list[str], played: Played) -> None:
    """Play ``moves`` alternately; every move must be acked (the client retries through faults)."""
    for ply, uci in enumerate(moves):
        player = white if ply % 2 == 0 else black
        await player.move(uci)
        played.acked.append(uci)


def assert_clean_history(client: GameClient, expected_moves: list[str]) -> None:
    """The client saw v = 1..N once each, in order, and exactly the expected moves."""
    assert client.rewinds == 0, "a sync went back in v"
    versions = [e["v"] for e in client.events]
    assert versions == list(range(1, len(versions) + 1)), f"gap or duplicate: {versions}"
    seen = [e["uci"] for e in client.events if e["type"] == "move"]
    assert seen == expected_moves
