"""CURVE on every internal socket: peers without an authorized key get nothing in or out."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from tests.integration.cluster import XLMATE, Cluster, http_json_async
from tests.integration.games import Played, assert_clean_history, play
from tests.support.chess_games import random_game
from xlmate.client import GameClient
from xlmate.wire import CMD_TOPIC, CommandMsg, encode, game_topic

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@pytest.fixture
def curve_cluster(cluster: Cluster, tmp_path: Path) -> Cluster:
    """A cluster whose processes all run with keys from `xlmate keys`."""
    keys = tmp_path / "keys"
    out = subprocess.run([XLMATE, "keys", str(keys)], capture_output=True, text=True, check=True)
    assert "broker.key_secret" in out.stdout and (keys / "authorized" / "edge.key").exists()
    cluster.curve_dir = keys
    cluster.start_discovery()
    cluster.start_broker()
    cluster.start_edge("eu-west")
    cluster.start_edge("us-east")
    cluster.wait_registered(*cluster.edges)
    return cluster


async def connect_rogue(
    ctx: zmq.asyncio.Context, kind: int, endpoint: str, server_public: bytes | None
) -> tuple[zmq.asyncio.Socket, int]:
    """Connect with no key (plain) or an unauthorized key; return the socket and its handshake."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if server_public is not None:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = server_public
    monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
    sock.connect(endpoint)
    try:
        if not await monitor.poll(5000):
            raise AssertionError(f"no handshake outcome from {endpoint}")
        event = await recv_monitor_message(monitor)
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
    return sock, int(event["event"])


async def test_game_over_curve_and_rogue_peers_are_shut_out(curve_cluster: Cluster) -> None:
    """With CURVE a game plays; keyless or unauthorized peers can't move, read or register."""
    c = curve_cluster
    assert c.curve_dir is not None
    broker_public, _ = zmq.auth.load_certificate(c.curve_dir / "broker.key")
    discovery_public, _ = zmq.auth.load_certificate(c.curve_dir / "discovery.key")
    game = c.new_game()
    gid = game["gameId"]
    white = await GameClient(gid, token=game["white"]["token"], edge_url=c.edges[0].url).connect()
    black = await GameClient(gid, token=game["black"]["token"], edge_url=c.edges[1].url).connect()
    ctx = zmq.asyncio.Context()
    sockets: list[zmq.asyncio.Socket] = []
    try:
        moves = random_game(seed=7, plies=6)
        await play(white, black, moves[:2], Played())
        readers = []
        for broker_key, discovery_key in ((None, None), (broker_public, discovery_public)):
            sub, sub_event = await connect_rogue(
                ctx, zmq.SUB, f"tcp://127.0.0.1:{c.xpub_port}", broker_key
            )
            sub.setsockopt(zmq.SUBSCRIBE, game_topic(gid))
            pub, pub_event = await connect_rogue(
                ctx, zmq.PUB, f"tcp://127.0.0.1:{c.xsub_port}", broker_key
            )
            req, req_event = await connect_rogue(
                ctx, zmq.REQ, f"tcp://127.0.0.1:{c.rep_port}", discovery_key
            )
            sockets += [sub, pub, req]
            readers.append(sub)
            for event in (sub_event, pub_event, req_event):
                assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, "a rogue peer got through"
            forged = CommandMsg(
                game_id=gid,
                edge_id="rogue",
                seat="white",
                command_id=f"x{len(sockets)}",
                command={"t": "resign"},
            )
            await pub.send_multipart([CMD_TOPIC, encode(forged)])
            beat = {
                "id": "rogue-edge",
                "region": "eu-west",
                "url": "ws://127.0.0.1:1",
                "load": 0.0,
                "connections": 0,
                "capacity": 10,
                "draining": False,
                "interval_ms": 1000,
            }
            with contextlib.suppress(zmq.Again):  # never block on a peer that can't handshake
                req.send(msgpack.packb(beat), flags=zmq.NOBLOCK)

        await play(white, black, moves[2:], Played())
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)  # no forged resign landed
        status, sync = await http_json_async(f"{c.edges[0].http}/v1/games/{gid}")
        assert status == 200 and sync["status"] != "over" and sync["moves"] == moves
        for sub in readers:
            assert await sub.poll(100) == 0, "a rogue subscriber received game traffic"
        status, nodes = await http_json_async(f"{c.discovery_url}/v1/nodes")
        assert {n["id"] for n in nodes["nodes"]} == {e.edge_id for e in c.edges}
        assert all(p.alive() for p in c.procs)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()
        await white.close()
        await black.close()
