"""Property tests of the game state machine: random command streams never break its invariants."""

from __future__ import annotations

import json
import random
from typing import Any

import chess
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support.chess_games import expected_ending
from xlmate.broker.game import Game, TimeControl, TimeExpired
from xlmate.constants import Color
from xlmate.errors import CommandRejected
from xlmate.messages import Draw, GameCommand, Move, Resign, Takeback

T0 = 1_700_000_000_000

files = st.sampled_from("abcdefgh")
ranks = st.sampled_from("12345678")
squares = st.builds(lambda f, r: f + r, files, ranks)
# Well-formed UCI that is mostly illegal: exercises the refusal paths.
garbage_uci = st.builds(
    lambda a, b, p: a + b + p, squares, squares, st.sampled_from(["", "", "q", "r", "b", "n"])
)
actions = st.sampled_from(["offer", "accept", "decline"])

# A step is (ms since the previous step, seat, what to do, idempotency key suffix).
legal = st.tuples(st.just("legal"), st.integers(0, 255))
what = st.one_of(
    legal,
    legal,
    legal,
    st.tuples(st.just("uci"), garbage_uci),
    st.tuples(st.just("resign"), st.none()),
    st.tuples(st.just("draw"), actions),
    st.tuples(st.just("takeback"), actions),
    st.tuples(st.just("tick"), st.none()),
)
steps = st.lists(
    st.tuples(
        st.integers(0, 2_000) | st.integers(0, 2_000) | st.integers(0, 60_000),
        st.sampled_from(["white", "black"]),
        what,
        st.none() | st.sampled_from(["c1", "c2", "c3", "c4"]),
    ),
    max_size=120,
)
games = st.builds(
    lambda initial, increment, abort: (TimeControl(initial, increment), abort),
    st.integers(1_000, 120_000),
    st.integers(0, 5_000),
    st.integers(5_000, 60_000),
)

Input = tuple[str, Color, GameCommand | None, int, str | None]


def command_for(game: Game, kind: str, arg: Any) -> GameCommand | None:
    """Turn a drawn step into a concrete command (None means a tick)."""
    if kind == "legal":
        legal = sorted(m.uci() for m in game.board.legal_moves)
        return Move(legal[arg % len(legal)] if legal else "e2e4")
    if kind == "uci":
        return Move(arg)
    if kind == "resign":
        return Resign()
    if kind == "draw":
        return Draw(arg)
    if kind == "takeback":
        return Takeback(arg)
    return None


def check_events(events: list[dict[str, Any]], v_before: int, game: Game) -> None:
    assert [e["v"] for e in events] == list(range(v_before + 1, v_before + 1 + len(events)))
    for produced in events:
        assert produced["gameId"] == game.game_id
        assert isinstance(produced["type"], str)
    json.dumps(events)


def check_state(game: Game, now: int) -> None:
    sync = game.sync(now)
    assert json.loads(json.dumps(sync)) == sync
    assert (game.status == "over") == (game.result is not None) == (game.deadline_ms() is None)
    assert len(sync["moves"]) == len(sync["san"]) == len(game.board.move_stack)
    clock = sync["clock"]
    assert clock["white"] >= 0
    assert clock["black"] >= 0
    assert clock["running"] in (None, sync["turn"])


def run(
    time_control: TimeControl, abort_after_ms: int, inputs: list[Input]
) -> tuple[list[Any], dict[str, Any]]:
    """Feed recorded inputs into a fresh game, checking invariants; return outputs and state."""
    game = Game("prop", time_control, T0, abort_after_ms=abort_after_ms, max_command_ids=3)
    outputs: list[Any] = []
    for kind, color, command, now, key in inputs:
        v_before = game.v
        if kind == "tick":
            events = game.tick(now)
            check_events(events, v_before, game)
            outputs.append(events)
        else:
            assert command is not None
            before = game.sync(now)
            try:
                applied = game.apply(color, command, now, key)
            except TimeExpired:
                assert game.sync(now) == before
                events = game.tick(now)  # what the sequencer does next
                assert events
                check_events(events, v_before, game)
                outputs.append(("expired", events))
            except CommandRejected as exc:
                assert game.sync(now) == before
                outputs.append(("rejected", exc.code))
            else:
                if applied.duplicate:
                    assert applied.events == []
                    assert game.sync(now) == before
                else:
                    check_events(applied.events, v_before, game)
                    assert applied.v == v_before + len(applied.events) == game.v
                outputs.append((applied.events, applied.v, applied.duplicate))
        check_state(game, now)
    return outputs, game.sync(inputs[-1][3] if inputs else T0)


@settings(max_examples=200, deadline=None)
@given(games, steps)
def test_random_command_streams_keep_invariants_and_replay_identically(
    setup: tuple[TimeControl, int], drawn: list[tuple[int, Color, tuple[str, Any], str | None]]
) -> None:
    """Any command stream only raises CommandRejected, keeps v gap-free and replays identically."""
    time_control, abort_after_ms = setup
    # Record concrete inputs (legal moves depend on the position, so draw them live).
    probe = Game("prop", time_control, T0, abort_after_ms=abort_after_ms, max_command_ids=3)
    inputs: list[Input] = []
    now = T0
    for dt, color, (kind, arg), key in drawn:
        now += dt
        command = command_for(probe, kind, arg)
        if kind == "legal":
            color = probe.turn  # a legal move is played by the side to move
        scoped = None if key is None else f"{color}:{key}"
        entry: Input = ("tick" if command is None else "cmd", color, command, now, scoped)
        inputs.append(entry)
        # Keep the probe in step so "legal" picks come from the real position.
        if command is None:
            probe.tick(now)
        else:
            try:
                probe.apply(color, command, now, scoped)
            except TimeExpired:
                probe.tick(now)
            except CommandRejected:
                pass
    first = run(time_control, abort_after_ms, inputs)
    second = run(time_control, abort_after_ms, inputs)
    assert first == second
    event(f"ended by {first[1]['reason']}")


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_random_playouts_end_exactly_when_python_chess_says(rng: random.Random) -> None:
    """Random legal games end automatically at the first position python-chess calls over."""
    game = Game("playout", TimeControl(600_000, 0), T0)
    oracle = chess.Board()
    for ply in range(600):
        move = rng.choice(sorted(oracle.legal_moves, key=chess.Move.uci))
        events = game.apply(game.turn, Move(move.uci()), T0 + ply).events
        oracle.push(move)
        assert game.board.fen() == oracle.fen() == events[0]["fen"]
        reason = expected_ending(oracle)
        assert game.reason == reason
        if reason is not None:
            assert events[-1]["type"] == "game_over"
            event(f"ended by {reason}")
            break
