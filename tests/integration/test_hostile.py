"""Hostile input and untrusted peers, against real processes (issue: hostile input).

One cluster serves the whole module: discovery, a broker, edges A (eu-west) and
B (us-east) with the default limits, edge C (ap-south, ``--capacity 3``) and
edge D (sa-east, ``--max-per-ip 5``).  Every test plays a real game, white on A
and black on B, in the background while it attacks (docs/architecture.md invariants
3 and 4), then checks that the game finished with every move, in order, with no
gap; that every process is alive and answers ``/healthz``; and that no edge's
RSS grew by more than ``EDGE_RSS_BOUND`` (docs/security.md records what it
actually grows by).  All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import msgpack
import psutil
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.cluster import (
    SECRET,
    Cluster,
    Edge,
    eventually,
    http_get_async,
    http_json_async,
)
from tests.integration.games import Played, assert_clean_history
from tests.support.chess_games import random_game
from xlmate.client import GameClient
from xlmate.constants import Color
from xlmate.tokens import Clock, mint_seat_token, new_game_id
from xlmate.wire import CTL_TOPIC, BrokerBeat, FetchRequest, MissingReply, decode, encode

MB = 1024 * 1024
# RSS bounds, documented in docs/security.md with what was measured: an edge grew at most
# ~5 MiB in one attack (200 spectators of unknown games on a fresh edge; ~0 when repeated)
# and ~6.5 MiB over the whole module; the broker under 0.5 MiB.
EDGE_RSS_BOUND = 16 * MB  # per attack, per edge
EDGE_RSS_MODULE_BOUND = 32 * MB  # over every attack of this module, per edge
BROKER_RSS_BOUND = 16 * MB  # per attack, while its ZeroMQ ports take garbage
PLIES = 40  # the background game's length
PACE_S = 0.05  # while an attack runs, the background game plays one move per PACE_S
MAX_MOVE_LATENCY_S = 1.0  # a move's ack, under attack (measured: tens of ms)
OPEN_TIMEOUT_S = 3.0  # the handshake deadline given to edge A (--open-timeout; default 10 s)
FRAME_LIMIT = 4096  # docs/protocol.md: bigger client frames are closed 1009
RATE_PER_S = 20  # docs/protocol.md: 20 messages/s per socket, bursts of 40
RATE_BURST = 40
MAX_STRIKES = 50  # docs/protocol.md: net rate-limited messages before close 4008
FLOODERS = 5
MAX_PER_IP = 5  # edge D's --max-per-ip
CAPACITY = 3  # edge C's --capacity
MAX_INBOUND = 64 * 1024  # docs/security.md: biggest frame the broker accepts on XSUB/XPUB/ROUTER
EDGE_INBOUND = 8 * MB  # docs/security.md: biggest frame an edge accepts from the broker
WIRE_MAX_FRAME = MB  # docs/security.md: biggest bus message the wire format decodes


# --- the cluster and the background game ---------------------------------------------


@dataclass
class Hostile:
    """The module's cluster and its four edges."""

    c: Cluster
    a: Edge  # eu-west, default limits: white of every background game
    b: Edge  # us-east, default limits: black of every background game
    full: Edge  # ap-south, --capacity 3
    strict: Edge  # sa-east, --max-per-ip 5
    growth: dict[str, int] = field(default_factory=dict)  # largest RSS growth per process
    start: dict[str, int] = field(default_factory=dict)  # edge RSS once warmed up


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Hostile]:
    """discovery, broker and four edges, registered and warmed up; logs shown on failure."""
    c = Cluster(tmp_path_factory.mktemp("hostile"))
    failed_before = request.session.testsfailed
    try:
        c.start_discovery()
        c.start_broker()
        a = c.start_edge("eu-west", "--open-timeout", str(OPEN_TIMEOUT_S), wait=False)
        b = c.start_edge("us-east", wait=False)
        full = c.start_edge("ap-south", "--capacity", str(CAPACITY), wait=False)
        strict = c.start_edge("sa-east", "--max-per-ip", str(MAX_PER_IP), wait=False)
        for edge in c.edges:
            edge.proc.wait_healthy()
        c.wait_registered(*c.edges)
        h = Hostile(c, a, b, full, strict)
        asyncio.run(_warm_up(h))  # first-use allocations are not what the RSS bound is about
        h.start = {e.edge_id: rss(e.proc.pid) for e in c.edges}
        yield h
        print("largest RSS growth in one attack (MiB):", _mib(h.growth))
        print("edge RSS growth over the module (MiB):", _mib(module_growth(h)))
    finally:
        c.stop()
        if request.session.testsfailed > failed_before:
            print(c.logs())


def module_growth(h: Hostile) -> dict[str, int]:
    """How much each edge's RSS grew since the module's cluster was warmed up."""
    return {e.edge_id: rss(e.proc.pid) - h.start[e.edge_id] for e in h.c.edges if e.proc.alive()}


def _mib(sizes: dict[str, int]) -> dict[str, float]:
    return {name: round(size / MB, 1) for name, size in sizes.items()}


async def _warm_up(h: Hostile) -> None:
    """A short game and a spectator on every edge."""
    gid, white, black = await seat_pair(h)
    try:
        for ply, uci in enumerate(random_game(seed=0, plies=6)):
            await (white if ply % 2 == 0 else black).move(uci)
        for edge in h.c.edges:
            async with connect(spectate_url(edge, gid)) as ws:
                await ws.recv()
    finally:
        await white.close()
        await black.close()


async def seat_pair(h: Hostile) -> tuple[str, GameClient, GameClient]:
    """A new game, white connected to edge A and black to edge B."""
    gid = new_game_id()
    clock = Clock(300, 3)
    white = GameClient(gid, token=seat(gid, "white", clock), edge_url=h.a.url)
    black = GameClient(gid, token=seat(gid, "black", clock), edge_url=h.b.url)
    await white.connect()
    await black.connect()
    return gid, white, black


def seat(gid: str, color: Color, clock: Clock | None = None) -> str:
    return mint_seat_token(SECRET, gid, color, clock=clock)


def spectate_url(edge: Edge, gid: str) -> str:
    return f"{edge.url}/v1/games/{gid}/spectate"


def player_url(edge: Edge, gid: str, token: str) -> str:
    return f"{edge.url}/v1/games/{gid}/ws?token={token}"


@dataclass
class Background:
    """The game played while a test attacks."""

    gid: str
    white: GameClient
    black: GameClient
    moves: list[str]
    played: Played = field(default_factory=Played)
    latencies: list[float] = field(default_factory=list)
    attack_over: asyncio.Event = field(default_factory=asyncio.Event)
    during: int = 0  # moves acked while the attack ran (the first is acked before it starts)


async def _play(game: Background, pace: float) -> None:
    """Play every move, one per ``pace`` seconds until the attack is over, then at full speed."""
    for ply, uci in enumerate(game.moves):
        player = game.white if ply % 2 == 0 else game.black
        started = time.monotonic()
        await player.move(uci)
        if not game.attack_over.is_set():
            game.latencies.append(time.monotonic() - started)
        game.played.acked.append(uci)
        if not game.attack_over.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(game.attack_over.wait(), pace)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@contextlib.asynccontextmanager
async def under_attack(
    h: Hostile, *, pace: float = PACE_S, progress: int = 0, seed: int = 1
) -> AsyncIterator[Background]:
    """Run the body as an attack on a live game, then check the game and the cluster.

    The game has its first move acked before the attack starts; ``progress`` is how many
    more moves must be acked while the attack runs.
    """
    gid, white, black = await seat_pair(h)
    game = Background(gid, white, black, random_game(seed=seed, plies=PLIES))
    procs = {e.edge_id: e.proc for e in h.c.edges}
    assert h.c.broker is not None
    procs["broker"] = h.c.broker
    before = {name: rss(proc.pid) for name, proc in procs.items()}
    task = asyncio.create_task(_play(game, pace))
    try:
        await eventually(lambda: game.played.acked or task.done(), 10.0, "the first move")
        if task.done():
            task.result()  # the game failed before the attack: say why
        at_start = len(game.played.acked)
        yield game
        game.during = len(game.played.acked) - at_start
        game.attack_over.set()
        await asyncio.wait_for(task, 60)
        for client in (white, black):
            await client.wait_for_v(len(game.moves))
            assert_clean_history(client, game.moves)
        assert game.during >= progress, f"only {game.during} moves during the attack"
        worst = max(game.latencies, default=0.0)
        assert worst < MAX_MOVE_LATENCY_S, f"a move took {worst:.3f}s to be acked under attack"
        await assert_cluster_healthy(h)
        for name, proc in procs.items():
            grew = rss(proc.pid) - before[name]
            h.growth[name] = max(h.growth.get(name, 0), grew)
            bound = BROKER_RSS_BOUND if name == "broker" else EDGE_RSS_BOUND
            assert grew < bound, f"{name} RSS grew by {grew / MB:.1f} MiB"
        print(
            f"moves during the attack: {game.during}, slowest ack {worst * 1000:.0f} ms, "
            f"RSS growth (MiB): "
            + ", ".join(f"{n} {(rss(p.pid) - before[n]) / MB:+.1f}" for n, p in procs.items())
        )
    finally:
        game.attack_over.set()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await white.close()
        await black.close()


async def assert_cluster_healthy(h: Hostile) -> None:
    """Every process alive, every /healthz 200 and ok."""
    for proc in h.c.procs:
        assert proc.alive(), f"{proc.name} died:\n{proc.log()[-3000:]}"
    bases = [h.c.discovery_url, h.c.broker_http, *(e.http for e in h.c.edges)]
    for base in bases:
        status, body = await http_json_async(f"{base}/healthz")
        assert status == 200 and body["status"] == "ok", (base, status, body)


# --- small helpers --------------------------------------------------------------------


async def health(base: str) -> dict[str, Any]:
    """A component's /healthz body."""
    status, body = await http_json_async(f"{base}/healthz")
    assert isinstance(body, dict), (base, status, body)
    return body


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample of a component's /metrics (0 when absent)."""
    status, body = await http_get_async(f"{base}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def next_message(
    ws: ClientConnection, want: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The next message ``want`` accepts (game events and presence in between are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if want(message):
                return message


def is_error(message: dict[str, Any]) -> bool:
    return message.get("type") == "error"


async def close_of(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Read until the server closes the socket; its close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    return ws.close_code, ws.close_reason


async def opened(url: str, **kwargs: Any) -> ClientConnection:
    """A socket that got its first frame (the sync): the edge took it."""
    ws = await connect(url, **kwargs)
    first = json.loads(await asyncio.wait_for(ws.recv(), 5.0))
    assert first["type"] == "sync", first
    return ws


# --- client input ---------------------------------------------------------------------


async def test_malformed_messages_get_their_documented_error_codes(hostile: Hostile) -> None:
    """Bad JSON, non-objects, wrong types, unknown types, bad moves: the documented errors."""
    async with under_attack(hostile) as game:
        ws = await opened(player_url(hostile.a, game.gid, seat(game.gid, "white")))
        cases: list[tuple[str | dict[str, Any], str, str | None]] = [
            ("{", "bad_json", None),
            ("not json", "bad_json", None),
            ('{"type":"move","uci":"e2e4"', "bad_json", None),
            ("[1,2]", "bad_message", None),
            ('"move"', "bad_message", None),
            ("null", "bad_message", None),
            ("42", "bad_message", None),
            ({"type": 5}, "bad_message", None),
            ({"id": "t0"}, "bad_message", "t0"),
            ({"type": "move", "uci": 5, "id": "t1"}, "bad_message", "t1"),
            ({"type": "move", "from": 1, "to": [], "id": "t2"}, "bad_message", "t2"),
            ({"type": "draw", "action": 7, "id": "t3"}, "bad_message", "t3"),
            ({"type": "takeback", "action": "maybe", "id": 4}, "bad_message", 4),
            ({"type": "resign", "id": {"x": 1}}, "bad_message", None),
            ({"type": "resign", "id": True}, "bad_message", None),
            ({"type": "resign", "id": "x" * 65}, "bad_message", None),
            ({"type": "castle", "id": "t5"}, "unknown_type", "t5"),
            ({"type": "MOVE", "uci": "e2e4"}, "unknown_type", None),
            ({"type": "move", "uci": "e2e4" * 100, "id": "t6"}, "bad_message", "t6"),
            ({"type": "move", "from": "z9", "to": "e4", "id": "t7"}, "bad_message", "t7"),
            ({"type": "move", "from": "e2", "to": "i1"}, "bad_message", None),
            ({"type": "move", "from": "e7", "to": "e8", "promotion": "k"}, "bad_message", None),
            ({"type": "move", "uci": "e2e4\n", "id": "t8"}, "bad_message", "t8"),
            ({"type": "move", "from": "e2", "to": "e4\n"}, "bad_message", None),
            ({"type": "move", "uci": None}, "bad_message", None),
        ]
        assert len(cases) < RATE_BURST
        for payload, code, cid in cases:
            await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
            error = await next_message(ws, is_error)
            assert (error["code"], error.get("id")) == (code, cid), payload
            assert isinstance(error["message"], str) and error["message"]
        await ws.send('{"type":"ping"}')
        await next_message(ws, lambda m: m.get("type") == "pong")
        await ws.close()


async def test_binary_frames_get_bad_message_and_the_socket_stays_usable(
    hostile: Hostile,
) -> None:
    """Binary frames are answered with error bad_message; a ping then still gets pong."""
    async with under_attack(hostile) as game:
        ws = await opened(spectate_url(hostile.a, game.gid))
        for frame in (b"\x00\x01\x02", b'{"type":"ping"}', msgpack.packb({"type": "sync"})):
            await ws.send(frame)
            error = await next_message(ws, is_error)
            assert error["code"] == "bad_message" and "id" not in error
        await ws.send('{"type":"ping"}')
        await next_message(ws, lambda m: m.get("type") == "pong")
        await ws.close()


async def test_frames_over_4096_bytes_are_closed_1009(hostile: Hostile) -> None:
    """Text, binary, fragmented and deflate-bomb messages over 4096 bytes: close 1009."""
    async with under_attack(hostile) as game:
        url = spectate_url(hostile.a, game.gid)
        # Exactly at the limit is still a message.
        ws = await opened(url, compression=None)
        padded = json.dumps({"type": "ping", "pad": ""})
        exact = padded.replace('""', '"' + "x" * (FRAME_LIMIT - len(padded)) + '"')
        assert len(exact.encode()) == FRAME_LIMIT
        await ws.send(exact)
        await next_message(ws, lambda m: m.get("type") == "pong")
        await ws.close()
        too_big: list[tuple[Any, dict[str, Any]]] = [
            ("x" * (FRAME_LIMIT + 1), {"compression": None}),
            (b"x" * 5000, {"compression": None}),
            (iter(["x" * 2000] * 3), {"compression": None}),  # fragments that add up
            ("{" + " " * 1_000_000 + "}", {"compression": "deflate"}),  # ~1 KiB on the wire
        ]
        for frame, options in too_big:
            ws = await opened(url, **options)
            await ws.send(frame)
            code, reason = await close_of(ws)
            assert code == 1009, (code, reason)
        # A text frame that is not UTF-8 is the WebSocket library's to refuse: 1007.
        ws = await opened(url, compression=None)
        await ws.send(b"\xff\xfe{}", text=True)
        assert (await close_of(ws))[0] == 1007


async def test_slow_and_broken_handshakes_are_dropped(hostile: Hostile) -> None:
    """Idle and half-sent handshakes are dropped after the open timeout; junk HTTP at once."""
    async with under_attack(hostile, pace=OPEN_TIMEOUT_S / PLIES, progress=10) as game:
        started = time.monotonic()

        async def dropped_after(payload: bytes) -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", hostile.a.port)
            try:
                writer.write(payload)
                await writer.drain()
                async with asyncio.timeout(OPEN_TIMEOUT_S + 5):
                    with contextlib.suppress(ConnectionError):
                        while await reader.read(65536):
                            pass
                return time.monotonic() - started
            finally:
                writer.close()

        idle = [dropped_after(b"") for _ in range(25)]
        partial = [
            dropped_after(f"GET /v1/games/{game.gid}/spectate HTTP/1.1\r\nHost: a\r\n".encode())
            for _ in range(25)
        ]
        slow = asyncio.gather(*idle, *partial)
        # Broken requests are answered (or dropped) at once, not after the timeout.
        for junk, status in (
            (b"HELLO\r\n\r\n", b""),
            (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
            (b"GET /v1/games/g/ws?token=" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", b"414"),
            (b"GET /v1/games/g/spectate HTTP/1.1\r\nHost: a\r\n\r\n", b"426"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", hostile.a.port)
            writer.write(junk)
            answer = await asyncio.wait_for(reader.read(), 2.0)
            writer.close()
            assert status in answer[:20], (junk[:30], answer[:60])
        # While 50 handshakes hang, the edge still serves new sockets.
        ws = await opened(spectate_url(hostile.a, game.gid))
        await ws.close()
        elapsed = await slow
        assert all(OPEN_TIMEOUT_S - 1 < t < OPEN_TIMEOUT_S + 3 for t in elapsed), elapsed
        print(f"hanging handshakes dropped after {min(elapsed):.1f}-{max(elapsed):.1f} s")


# --- tokens and game ids ----------------------------------------------------------------


async def test_bad_tokens_are_closed_4001_and_tokens_for_another_game_4003(
    hostile: Hostile,
) -> None:
    """Garbage, forged, expired, unsigned and ill-claimed tokens: 4001; another game's: 4003."""
    async with under_attack(hostile) as game:
        gid = game.gid
        games_before = (await health(hostile.c.broker_http))["games"]

        def signed(claims: dict[str, Any], key: str = SECRET) -> str:
            return jwt.encode(claims, key, algorithm="HS256")

        unsigned = jwt.encode({"gid": gid, "color": "white"}, None, algorithm="none")
        cases = [
            ("garbage", 4001),
            ("", 4001),
            (signed({"gid": gid, "color": "white"}, "not-the-cluster-secret-0123456789"), 4001),
            (seat(gid, "white")[:-2], 4001),  # a damaged signature
            (mint_seat_token(SECRET, gid, "white", expires_at=1), 4001),
            (unsigned, 4001),
            (signed({"gid": gid}), 4001),
            (signed({"gid": gid, "color": "red"}), 4001),
            (signed({"gid": "bad id!", "color": "white"}), 4001),
            (signed({"gid": gid, "color": "white", "sub": ""}), 4001),
            (signed({"gid": gid, "color": "white", "sub": "x" * 200}), 4001),
            (signed({"gid": gid, "color": "white", "clock": "fast"}), 4001),
            (signed({"gid": gid, "color": "white", "clock": {"initial": 10**400}}), 4001),
            (signed({"gid": gid, "color": "white", "clock": {"initial": -5}}), 4001),
            (seat(new_game_id(), "white"), 4003),
        ]
        for token, code in cases:
            ws = await connect(player_url(hostile.a, gid, token))
            assert (await close_of(ws))[0] == code, token
        ws = await connect(f"{hostile.a.url}/v1/games/{gid}/ws")  # no token at all
        assert (await close_of(ws))[0] == 4001
        assert (await health(hostile.c.broker_http))["games"] == games_before


async def test_spectating_unknown_games_is_4004_and_creates_nothing(hostile: Hostile) -> None:
    """Random game ids get 4004 (or 404 for malformed ones) and never create a game."""
    async with under_attack(hostile) as game:
        broker_games = (await health(hostile.c.broker_http))["games"]
        edge_games = (await health(hostile.a.http))["games"]
        limit = asyncio.Semaphore(20)

        async def spectate(gid: str) -> int | None:
            async with limit:
                try:
                    ws = await connect(spectate_url(hostile.a, gid))
                except InvalidStatus as exc:
                    return exc.response.status_code
                return (await close_of(ws))[0]

        unknown = [new_game_id() for _ in range(200)]
        assert set(await asyncio.gather(*map(spectate, unknown))) == {4004}
        malformed = ["x" * 65, "a.b", "%00", "%C3%A9t%C3%A9", "..", "a%2Fb"]
        for code in await asyncio.gather(*map(spectate, malformed)):
            assert code in (404, 4004)
        for gid in unknown[:20]:
            assert (await http_get_async(f"{hostile.a.http}/v1/games/{gid}"))[0] == 404
            assert (await http_get_async(f"{hostile.b.http}/v1/games/{gid}/pgn"))[0] == 404
        assert (await health(hostile.c.broker_http))["games"] == broker_games

        async def forgotten() -> bool:
            return (await health(hostile.a.http))["games"] == edge_games

        await eventually(
            forgotten,
            5.0,
            "the edge to forget the rooms of unknown games",
        )
        assert game.gid not in unknown


# --- floods and limits ------------------------------------------------------------------


async def test_a_flood_of_5000_messages_is_rate_limited_then_closed_4008(
    hostile: Hostile,
) -> None:
    """Five sockets each send 5000 messages at once: rate_limited errors, then close 4008."""
    edge = hostile.a
    errors_before = await metric(edge.http, "xlmate_edge_client_errors_total", code="rate_limited")
    closes_before = await metric(edge.http, "xlmate_edge_closes_total", code="4008")
    async with under_attack(hostile) as game:

        async def flood() -> tuple[int | None, str | None, dict[str, int]]:
            ws = await opened(spectate_url(edge, game.gid), compression=None)
            seen: dict[str, int] = {}

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for frame in ws:
                        message = json.loads(frame)
                        key = message.get("code") or message["type"]
                        seen[key] = seen.get(key, 0) + 1

            reader = asyncio.create_task(read())
            with contextlib.suppress(ConnectionClosed):
                for _ in range(5000):
                    await ws.send('{"type":"ping"}')
            await asyncio.wait_for(reader, 5.0)
            return ws.close_code, ws.close_reason, seen

        started = time.monotonic()
        results = await asyncio.gather(*(flood() for _ in range(FLOODERS)))
        refill = RATE_PER_S * (time.monotonic() - started)
        for code, reason, seen in results:
            assert (code, reason) == (4008, "flooding"), (code, reason, seen)
            # Only the burst (and what the bucket refilled meanwhile) was served.
            assert seen.get("pong", 0) <= RATE_BURST + refill, seen
        print("what each flooder received before 4008:", [seen for _, _, seen in results])
        # Each flooder earned at least 50 strikes (an answered message takes one back), all
        # answered with rate_limited; the queue of a socket closed 4008 is dropped, so the
        # client may see fewer of them than the edge counts.
        rate_limited = await metric(
            edge.http, "xlmate_edge_client_errors_total", code="rate_limited"
        )
        extra = rate_limited - errors_before - FLOODERS * MAX_STRIKES
        assert 0 <= extra <= FLOODERS * refill, extra
        closes = await metric(edge.http, "xlmate_edge_closes_total", code="4008") - closes_before
        assert closes == FLOODERS


async def test_a_burst_gets_40_answers_and_rate_limited_errors_then_the_bucket_refills(
    hostile: Hostile,
) -> None:
    """60 pings at once: the 40 of the burst (and what refilled meanwhile) answered, the rest
    rate_limited, one reply each; later pings are answered again as the bucket refills."""
    sent = 60
    assert RATE_BURST < sent < RATE_BURST + MAX_STRIKES  # over the burst, under a 4008 close

    def reply(message: dict[str, Any]) -> bool:
        return message.get("type") == "pong" or message.get("code") == "rate_limited"

    async with under_attack(hostile) as game:
        ws = await opened(spectate_url(hostile.a, game.gid), compression=None)
        started = time.monotonic()
        for _ in range(sent):
            await ws.send('{"type":"ping"}')
        seen = {"pong": 0, "rate_limited": 0}
        for _ in range(sent):
            message = await next_message(ws, reply)
            seen[message.get("code") or "pong"] += 1
        refill = RATE_PER_S * (time.monotonic() - started)
        assert RATE_BURST <= seen["pong"] <= RATE_BURST + refill, seen
        assert seen["rate_limited"] == sent - seen["pong"], seen

        async def answered() -> bool:
            await ws.send('{"type":"ping"}')
            return (await next_message(ws, reply))["type"] == "pong"

        # A token comes back every 1/RATE_PER_S s; polling spends at most a few strikes.
        await eventually(answered, 5.0, "the bucket to give a token back")
        await ws.close()


async def test_rate_limited_commands_still_get_one_error_each_with_their_id(
    hostile: Hostile,
) -> None:
    """60 commands with ids in a burst: every id gets exactly one reply; the excess rate_limited."""
    async with under_attack(hostile) as game:
        ws = await opened(player_url(hostile.a, game.gid, seat(game.gid, "white")))
        ids = [f"burst-{n}" for n in range(60)]
        for cid in ids:  # "decline" with no offer standing: harmless, refused no_offer
            await ws.send(json.dumps({"type": "takeback", "action": "decline", "id": cid}))
        replies: dict[str, list[str]] = {}
        async with asyncio.timeout(10):
            while len(replies) < len(ids):
                message = json.loads(await ws.recv())
                if message["type"] in ("ack", "error") and "id" in message:
                    replies.setdefault(message["id"], []).append(message.get("code", "ack"))
                elif message["type"] == "error":
                    raise AssertionError(f"an error without the command's id: {message}")
        assert sorted(replies) == sorted(ids)
        assert all(len(codes) == 1 for codes in replies.values()), replies
        codes = {codes[0] for codes in replies.values()}
        assert "rate_limited" in codes and codes <= {"rate_limited", "no_offer"}, codes
        await ws.close()


async def test_more_sockets_than_max_per_ip_are_closed_4008(hostile: Hostile) -> None:
    """Edge D (--max-per-ip 5) closes a 6th socket from one address with 4008, not others'."""
    edge = hostile.strict
    async with under_attack(hostile) as game:
        url = spectate_url(edge, game.gid)
        mine = [await opened(url) for _ in range(MAX_PER_IP)]
        extra = await connect(url)
        assert await close_of(extra) == (4008, "too many connections from this address")
        other = await opened(url, local_addr=("127.0.0.2", 0))  # another client address
        await mine.pop().close()
        left = len(mine) + 1

        async def counted_out() -> bool:
            return (await health(edge.http))["connections"] == left

        await eventually(
            counted_out,
            5.0,
            "the edge to count the closed socket out",
        )
        mine.append(await opened(url))  # a freed slot can be used again
        for ws in [*mine, other]:
            await ws.close()


async def test_a_full_edge_closes_1013_and_discovery_stops_offering_it(hostile: Hostile) -> None:
    """Edge C (--capacity 3) closes a 4th socket with 1013 and leaves placement while full."""
    edge, c = hostile.full, hostile.c
    query = f"{c.discovery_url}/v1/nodes/discovery?region={edge.region}"

    async def offered() -> bool:
        status, body = await http_json_async(query)
        return status == 200 and edge.edge_id in [
            body["node"]["id"],
            *(n["id"] for n in body["nodes"]),
        ]

    async def not_offered() -> bool:
        return not await offered()

    async def listed() -> dict[str, Any]:
        nodes = (await http_json_async(f"{c.discovery_url}/v1/nodes"))[1]["nodes"]
        return next(n for n in nodes if n["id"] == edge.edge_id)

    async with under_attack(hostile) as game:
        assert (await http_json_async(query))[1]["node"]["id"] == edge.edge_id
        url = spectate_url(edge, game.gid)
        sockets = [await opened(url) for _ in range(CAPACITY)]
        extra = await connect(url)
        assert await close_of(extra) == (1013, "edge full")
        await eventually(not_offered, 5.0, "discovery to stop offering the full edge")
        node = await listed()
        assert (node["load"], node["connections"], node["capacity"]) == (1.0, CAPACITY, CAPACITY)
        await sockets.pop().close()
        await eventually(offered, 5.0, "discovery to offer the edge again once it has room")
        for ws in sockets:
            await ws.close()


async def test_a_spectator_that_never_reads_is_closed_4008_and_players_are_not_delayed(
    hostile: Hostile,
) -> None:
    """A spectator that stops reading fills its 256-frame queue: closed 4008, players unhurt."""
    async with under_attack(hostile, progress=3) as game:
        # A tiny receive window (and MSS, so the edge's kernel send buffer stays small too):
        # the edge's queue for this socket fills after ~1,000 frames instead of ~50,000.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hostile.a.port))
        slow = await connect(
            spectate_url(hostile.a, game.gid), sock=sock, max_queue=1, compression=None
        )
        logged = f"slow consumer on game {game.gid}"

        def killed() -> bool:
            return logged in hostile.a.proc.log()

        # Each spectator joining or leaving on edge B changes the game's presence, which
        # every socket of the game gets: a stream of frames no rate limit slows down.
        joins = 0

        async def churn() -> None:
            nonlocal joins
            deadline = time.monotonic() + 20
            while not killed() and time.monotonic() < deadline:
                async with connect(
                    spectate_url(hostile.b, game.gid), max_queue=None, compression=None
                ) as ws:
                    await ws.recv()
                joins += 1

        await asyncio.gather(*(churn() for _ in range(30)))
        assert killed(), f"no slow consumer after {joins} spectators came and went"
        frames = 0
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(5):
                async for _ in slow:
                    frames += 1
        assert (slow.close_code, slow.close_reason) == (4008, "slow consumer")
        print(f"{joins} spectators came and went; the slow one got {frames} frames, then 4008")


# --- untrusted peers on the bus -------------------------------------------------------------


async def raw_junk(port: int, payload: bytes) -> None:
    """Send ``payload`` over raw TCP, give the peer a moment to answer or hang up, close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with contextlib.suppress(OSError, TimeoutError):
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 1.0)
    writer.close()


ZMTP_NULL_GREETING = (
    b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
)


def zmtp_ready(socket_type: bytes) -> bytes:
    """A ZMTP 3.0 READY command for the NULL mechanism."""
    body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


async def test_garbage_on_the_brokers_zeromq_ports_is_dropped_and_counted(
    hostile: Hostile,
) -> None:
    """Raw TCP junk and junk from a rogue publisher and dealer: the broker drops and counts it."""
    c = hostile.c
    bad = "xlmate_broker_bad_frames_total"
    ctx = zmq.asyncio.Context()
    try:
        async with under_attack(hostile) as game:
            games_before = (await health(c.broker_http))["games"]
            # 1. Raw TCP where ZMTP is expected: nothing of it may reach the game loop.
            for port in (c.xsub_port, c.xpub_port, c.catchup_port):
                for payload in (
                    os.urandom(64 * 1024),
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"WHAT".ljust(52, b"\x00"),
                    ZMTP_NULL_GREETING + zmtp_ready(b"NOPE"),
                    b"",
                ):
                    await raw_junk(port, payload)
            # A subscriber that subscribes to everything and never reads.
            idle = ctx.socket(zmq.SUB)
            idle.setsockopt(zmq.RCVHWM, 1)
            idle.setsockopt(zmq.LINGER, 0)
            idle.connect(f"tcp://127.0.0.1:{c.xpub_port}")
            idle.setsockopt(zmq.SUBSCRIBE, b"")

            # 2. A rogue publisher on XSUB (an XPUB, so it sees the broker subscribe first).
            rogue = ctx.socket(zmq.XPUB)
            rogue.setsockopt(zmq.LINGER, 0)
            rogue.connect(f"tcp://127.0.0.1:{c.xsub_port}")
            assert await asyncio.wait_for(rogue.recv(), 5.0) == b"\x01"
            xsub_before = await metric(c.broker_http, bad, socket="xsub")
            junk: list[list[bytes]] = [
                [b"cmd", b"\xc1"],
                [b"cmd", b"not msgpack at all"],
                [b"cmd", msgpack.packb([1, 2, 3])],
                [b"cmd", msgpack.packb({"g": game.gid})],
                [b"cmd", msgpack.packb({"k": "nope"})],
                [b"cmd", msgpack.packb({"k": "hb", "ep": "rogue", "t": 1})],  # broker -> edge kinds
                [b"cmd", msgpack.packb({"k": "ev", "g": game.gid, "v": 1, "j": b"{}"})],
                [
                    b"cmd",
                    msgpack.packb({"k": "cmd", "g": game.gid, "e": 5, "s": "w", "i": "", "c": []}),
                ],
                [b"cmd", msgpack.packb({"k": "edge_beat", "extra": 1})],  # (unknown keys are
                # ignored, docs/protocol.md "Internal formats", but "e" is missing)
                [
                    b"cmd",
                    msgpack.packb(
                        {"k": "presence_report", "g": game.gid, "e": "x", "w": -1, "b": 0, "x": 0}
                    ),
                ],
                [b"cmd", b"\xdd\xff\xff\xff\xff"],  # an array that claims 4 billion items
                [b"cmd", b"\x91" * 60_000],  # 60,000 nested arrays
                [b"cmd"],
                [b"cmd", b"x", b"y"],  # edges batch bodies: each bad body counts
                [b"cmd", b"x", msgpack.packb({"k": "edge_beat", "e": "rogue"})],  # 1 bad, 1 fine
            ]
            expected = len(junk) + 1  # the message of two bad bodies counts twice
            for frames in junk:
                await rogue.send_multipart(frames)

            async def all_counted() -> bool:
                return await metric(c.broker_http, bad, socket="xsub") - xsub_before >= expected

            await eventually(
                all_counted,
                5.0,
                "the broker to count every junk message on XSUB",
            )
            assert await metric(c.broker_http, bad, socket="xsub") - xsub_before == expected

            # 3. A rogue dealer on the catch-up ROUTER.
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(f"tcp://127.0.0.1:{c.catchup_port}")
            router_before = await metric(c.broker_http, bad, socket="router")
            requests: list[list[bytes]] = [
                [b"\xc1"],
                [msgpack.packb({"k": "nope", "q": 1})],
                [
                    msgpack.packb(
                        {"k": "open", "q": "x", "g": game.gid, "s": "white", "p": None, "tc": None}
                    )
                ],
                [msgpack.packb({"k": "fetch", "q": 1, "g": "", "since": None})],
                [msgpack.packb({"k": "missing", "q": 1, "g": game.gid})],  # a reply kind
                [b"two", b"frames"],
            ]
            for frames in requests:
                await dealer.send_multipart(frames)
            # The ROUTER answers in order: once this reply is back, the junk was handled.
            await dealer.send(encode(FetchRequest(request_id=7, game_id=new_game_id(), since=None)))
            reply = decode(await asyncio.wait_for(dealer.recv(), 5.0))
            assert isinstance(reply, MissingReply) and reply.request_id == 7
            assert await metric(c.broker_http, bad, socket="router") - router_before == len(
                requests
            )

            # Nothing of this reached an edge or created a game.
            for edge in c.edges:
                assert await metric(edge.http, "xlmate_edge_bad_bus_frames_total") == 0
            assert (await health(c.broker_http))["games"] == games_before
    finally:
        ctx.destroy(linger=0)


async def test_oversize_frames_on_the_brokers_zeromq_ports_are_refused(hostile: Hostile) -> None:
    """Frames over 64 KiB on XSUB, XPUB and ROUTER are refused by libzmq, never buffered."""
    c = hostile.c
    assert c.broker is not None
    bad = "xlmate_broker_bad_frames_total"
    ctx = zmq.asyncio.Context()
    try:
        async with under_attack(hostile) as game:
            # XSUB: libzmq drops the connection; the rogue (an XPUB) sees the broker subscribe
            # again when it reconnects, and the broker loop never sees the frame.
            rogue = ctx.socket(zmq.XPUB)
            rogue.setsockopt(zmq.LINGER, 0)
            rogue.setsockopt(zmq.RECONNECT_IVL, 50)
            rogue.setsockopt(zmq.XPUB_VERBOSE, 1)  # pass on the same subscription again
            rogue.connect(f"tcp://127.0.0.1:{c.xsub_port}")
            assert await asyncio.wait_for(rogue.recv(), 5.0) == b"\x01"
            # A frame of exactly 64 KiB still reaches the broker loop (which counts the junk).
            xsub_before = await metric(c.broker_http, bad, socket="xsub")
            await rogue.send_multipart([b"cmd", b"x" * MAX_INBOUND])

            async def counted() -> bool:
                return await metric(c.broker_http, bad, socket="xsub") > xsub_before

            await eventually(counted, 5.0, "the frame at the limit to be counted")
            assert await metric(c.broker_http, bad, socket="xsub") - xsub_before == 1
            # One byte more and libzmq drops it with the connection.
            xsub_before = await metric(c.broker_http, bad, socket="xsub")
            await rogue.send_multipart([b"cmd", b"x" * (MAX_INBOUND + 1)])
            assert await asyncio.wait_for(rogue.recv(), 5.0) == b"\x01", "not disconnected"
            await rogue.send_multipart([b"cmd", b"small junk"])

            await eventually(
                counted,
                5.0,
                "the small junk to be counted",
            )
            assert await metric(c.broker_http, bad, socket="xsub") - xsub_before == 1

            # ROUTER: the same for a dealer; the reply to a later request proves the order.
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.RECONNECT_IVL, 50)
            dealer.connect(f"tcp://127.0.0.1:{c.catchup_port}")
            await dealer.send(encode(FetchRequest(request_id=1, game_id=game.gid, since=None)))
            assert decode(await asyncio.wait_for(dealer.recv(), 5.0)).request_id == 1
            router_before = await metric(c.broker_http, bad, socket="router")
            await dealer.send(b"x" * (MAX_INBOUND + 1))
            # Requests sent behind it may be lost with the dropped connection: ask until answered.
            deadline = time.monotonic() + 5
            for q in range(2, 1000):
                await dealer.send(encode(FetchRequest(request_id=q, game_id=game.gid, since=None)))
                if await dealer.poll(200):
                    assert decode(await dealer.recv()).request_id == q
                    break
                assert time.monotonic() < deadline, "the ROUTER stopped answering"
            assert await metric(c.broker_http, bad, socket="router") == router_before

            # XPUB: a "subscription" that claims 64 MiB and sends 32 MiB of it.
            before = rss(c.broker.pid)
            reader, writer = await asyncio.open_connection("127.0.0.1", c.xpub_port)
            try:
                writer.write(ZMTP_NULL_GREETING + zmtp_ready(b"SUB"))
                await writer.drain()
                await asyncio.wait_for(reader.readexactly(64), 5.0)  # the broker's greeting
                writer.write(b"\x02" + struct.pack(">Q", 64 * MB))  # a long frame header
                with contextlib.suppress(ConnectionError):
                    chunk = b"\x01" + b"g" * (MB - 1)
                    for _ in range(32):
                        writer.write(chunk)
                        await asyncio.wait_for(writer.drain(), 5.0)
                grew = rss(c.broker.pid) - before
            finally:
                writer.close()
            print(f"broker RSS after a 32 MiB subscription frame: {grew / MB:+.1f} MiB")
            assert grew < 16 * MB, f"the broker buffered {grew / MB:.0f} MiB of one frame"
            assert c.broker.alive()
    finally:
        ctx.destroy(linger=0)


async def test_a_rogue_brokers_frames_over_1_mib_are_counted_and_over_8_mib_refused(
    cluster: Cluster,
) -> None:
    """On an edge's bus, a frame over 1 MiB is dropped and counted; over 8 MiB libzmq hangs
    up, and the edge opens new bus sockets once the broker has been silent long enough."""
    ctx = zmq.asyncio.Context()
    try:
        # The "broker" is the test's own XPUB on the cluster's port: no real broker runs.
        rogue = ctx.socket(zmq.XPUB)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.setsockopt(zmq.XPUB_VERBOSER, 1)  # pass on unsubscriptions: a hang-up shows
        rogue.bind(f"tcp://127.0.0.1:{cluster.xpub_port}")
        edge = cluster.start_edge("eu-west", wait=False)  # not healthy without a broker's beat

        async def next_subscription(wanted: bytes) -> None:
            while await rogue.recv() != wanted:
                pass

        await asyncio.wait_for(next_subscription(b"\x01" + CTL_TOPIC), 15.0)
        bad = "xlmate_edge_bad_bus_frames_total"

        async def serving() -> bool:
            return (await http_get_async(f"{edge.http}/metrics"))[0] == 200

        await eventually(serving, 15.0, "the edge to serve /metrics")

        async def hears_the_broker() -> bool:  # (a beat a second, as long as it takes)
            beat = encode(BrokerBeat(epoch="rogue", time_ms=0))
            await rogue.send_multipart([CTL_TOPIC, beat])
            return (await http_get_async(f"{edge.http}/healthz"))[0] == 200

        await eventually(hears_the_broker, 15.0, "the edge to take the rogue's beat")
        before = await metric(edge.http, bad)
        for frame, what in (
            (b"x" * EDGE_INBOUND, "exactly 8 MiB: past libzmq, over the wire format's 1 MiB"),
            (b"x" * (WIRE_MAX_FRAME + 1), "1 MiB and a byte: refused before unpacking"),
        ):
            counted = await metric(edge.http, bad) - before + 1
            await rogue.send_multipart([CTL_TOPIC, frame])

            async def dropped_and_counted(counted: float = counted) -> bool:
                return await metric(edge.http, bad) - before == counted

            await eventually(dropped_and_counted, 10.0, what)
        # One byte over 8 MiB: libzmq hangs up before buffering it (the edge's subscription
        # goes with the connection), and the edge's loop never sees the frame.
        await rogue.send_multipart([CTL_TOPIC, b"x" * (EDGE_INBOUND + 1)])
        await asyncio.wait_for(next_subscription(b"\x00" + CTL_TOPIC), 10.0)
        assert await metric(edge.http, bad) - before == 2
        assert edge.proc.alive()
        # libzmq will not reconnect that socket; the edge, finding the broker silent past
        # BROKER_REOPEN_MS, opens new ones: it subscribes again and hears the broker again.
        await asyncio.wait_for(next_subscription(b"\x01" + CTL_TOPIC), 20.0)
        await eventually(hears_the_broker, 15.0, "the edge to hear the broker again")
    finally:
        ctx.destroy(linger=0)


# --- memory over every attack -----------------------------------------------------------------

# Every attack of this module; the memory test runs them all itself, so it proves its claim
# alone, in any order, with or without the other tests.
ATTACKS = (
    test_malformed_messages_get_their_documented_error_codes,
    test_binary_frames_get_bad_message_and_the_socket_stays_usable,
    test_frames_over_4096_bytes_are_closed_1009,
    test_slow_and_broken_handshakes_are_dropped,
    test_bad_tokens_are_closed_4001_and_tokens_for_another_game_4003,
    test_spectating_unknown_games_is_4004_and_creates_nothing,
    test_a_flood_of_5000_messages_is_rate_limited_then_closed_4008,
    test_a_burst_gets_40_answers_and_rate_limited_errors_then_the_bucket_refills,
    test_rate_limited_commands_still_get_one_error_each_with_their_id,
    test_more_sockets_than_max_per_ip_are_closed_4008,
    test_a_full_edge_closes_1013_and_discovery_stops_offering_it,
    test_a_spectator_that_never_reads_is_closed_4008_and_players_are_not_delayed,
    test_garbage_on_the_brokers_zeromq_ports_is_dropped_and_counted,
    test_oversize_frames_on_the_brokers_zeromq_ports_are_refused,
)


async def test_edge_memory_stayed_flat_over_every_attack(hostile: Hostile) -> None:
    """Every attack of this module, run here one after another: no edge's RSS grows past 32 MiB."""
    edges = hostile.c.edges
    before = {edge.edge_id: rss(edge.proc.pid) for edge in edges}
    for attack in ATTACKS:
        await attack(hostile)
    grown = {edge.edge_id: rss(edge.proc.pid) - before[edge.edge_id] for edge in edges}
    print("edge RSS growth over every attack (MiB):", _mib(grown))
    for edge_id, grew in grown.items():
        assert grew < EDGE_RSS_MODULE_BOUND, f"{edge_id} RSS grew by {grew / MB:.1f} MiB"
