"""The game authority without sockets: bounded bookkeeping under many moves."""

from __future__ import annotations

from pathlib import Path

from tests.support.chess_games import random_game  # legal moves that never end the game
from xlmate.broker.archive import Archive
from xlmate.broker.authority import Authority, Batch
from xlmate.wire import CommandMsg, OpenRequest

T0 = 1_700_000_000_000


def test_the_deadline_heap_stays_bounded_however_many_moves(tmp_path: Path) -> None:
    """Every move schedules the game's next deadline; stale entries do not pile up."""
    authority = Authority(Archive(tmp_path / "archive"))
    games = [f"g{n}" for n in range(20)]
    for number, game_id in enumerate(games):
        for seat in ("white", "black"):
            req = OpenRequest(
                request_id=number,
                game_id=game_id,
                seat=seat,
                player_id=None,
                clock=[600_000, 2_000],
            )
            authority.open(req, T0, Batch())
    now = T0
    scripts = {game_id: random_game(seed, 80) for seed, game_id in enumerate(games)}
    largest = 0
    for ply in range(80):
        for game_id in games:
            now += 10
            seat = "white" if ply % 2 == 0 else "black"
            cmd = {"t": "move", "u": scripts[game_id][ply]}
            batch = Batch()
            msg = CommandMsg(
                game_id=game_id, edge_id="edge-1", seat=seat, command_id=f"c{ply}", command=cmd
            )
            authority.command(msg, now, batch)
            assert batch.records, f"{game_id} ply {ply} was refused: {batch.frames}"
            largest = max(largest, len(authority._deadlines))
    assert 4 * len(games) + 1024 < 20 * 80  # the moves would overflow the bound...
    assert largest <= 4 * len(games) + 1024 + 1  # ...but the heap never does
    current = {(live.game.deadline_ms(), game_id) for game_id, live in authority.games.items()}
    assert current <= set(authority._deadlines), "a rebuild lost a game's deadline"
