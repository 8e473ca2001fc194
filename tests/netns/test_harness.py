"""The network-namespace harness, proved on today's single broker per shard.

Each process runs in its own namespace on a test bridge (tests/netns/network.py);
partitions are real (links down, nftables drops).  These tests show that the
harness does what it says (reachability, each partition, cleanup) and that a
cluster behaves across it as on loopback: games cross the bridge, an edge cut
from its broker answers ``unavailable`` and resumes, a SIGKILLed broker comes
back from its journal.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import websockets

from tests.integration.cluster import eventually, http_get, http_json_async
from tests.netns.harness import NetCluster, probe
from tests.netns.load import playing, served_moves, summary
from tests.netns.network import Network, run, sweep
from xlmate.client import GameClient

EDGE = ("--command-timeout-ms", "1500")


def start_cluster(c: NetCluster, *edge_extra: str) -> None:
    """Discovery, a broker and two edges (eu-west, us-east), each on its own node."""
    c.start_discovery(host=c.place("discovery"))
    c.start_broker("--discovery-heartbeat-ms", "200", host=c.place("broker"))
    c.start_edge("eu-west", *edge_extra, host=c.place("edge1"))
    c.start_edge("us-east", *edge_extra, host=c.place("edge2"))
    c.wait_registered(*c.edges)


def names_of(net: Network) -> list[str]:
    """Namespaces, links and nft tables named after ``net``'s run (its pid)."""
    found = [ns.split()[0] for ns in run("ip", "netns", "list").splitlines() if ns.strip()]
    found += [link["ifname"] for link in json.loads(run("ip", "-j", "link", "show"))]
    found += [line.split()[-1] for line in run("nft", "list", "tables").splitlines()]
    return sorted(name for name in found if re.match(rf"{net.tag}(\D|$)", name))


async def healthy(base: str) -> bool:
    """Whether ``base``/healthz answers 200."""
    return (await http_json_async(f"{base}/healthz"))[0] == 200


async def reach(node_name: str, c: NetCluster, url: str) -> int:
    """``probe`` from a node, in a thread (it runs a short process)."""
    return await asyncio.to_thread(probe, c.network.nodes[node_name], url, 0.5)


async def test_nodes_reach_each_other_and_each_partition_cuts_exactly_what_it_names(
    netcluster: NetCluster,
) -> None:
    """Across the bridge every node reaches discovery; cut, isolate and link down each stop
    exactly the traffic they name (the test process keeps its path but for link down),
    and healing restores it."""
    c, net = netcluster, netcluster.network
    disc = c.start_discovery(host=c.place("discovery"))
    c.place("a")
    c.place("b")
    url = f"{c.discovery_url}/healthz"
    assert disc.pid in c.node_of(disc).pids(), "discovery runs in its own namespace"
    assert http_get(f"http://127.0.0.1:{c.discovery_port}/healthz", 0.5)[0] == 0
    assert (await reach("a", c, url), await reach("b", c, url)) == (200, 200)

    net.cut("a", "discovery")
    assert (await reach("a", c, url), await reach("b", c, url)) == (0, 200)
    assert (await http_json_async(url))[0] == 200
    net.heal("a", "discovery")
    assert await reach("a", c, url) == 200

    net.isolate("discovery")
    assert (await reach("a", c, url), await reach("b", c, url)) == (0, 0)
    assert (await http_json_async(url))[0] == 200, "the test process's path stays open"
    net.rejoin("discovery")
    assert (await reach("a", c, url), await reach("b", c, url)) == (200, 200)

    net.link_down("discovery")
    assert (await http_json_async(url, 0.5))[0] == 0
    assert await reach("a", c, url) == 0
    net.heal_all()
    await eventually(lambda: reach("a", c, url), 10, "discovery reachable after link up")
    assert (await http_json_async(url))[0] == 200


def test_close_removes_everything_and_sweep_clears_a_dead_runs_leftovers(
    network: Network,
) -> None:
    """``close()`` leaves no namespace, link or table of this run; ``sweep()`` removes those
    a dead run left (its pid in their names) and nothing of a live run."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    leftover = Network(tag=f"xlm{int(dead.stdout)}").open()
    leftover.add("broker1")
    network.add("edge1")
    network.isolate("edge1")
    ours = names_of(network)
    assert len(names_of(leftover)) == len(ours) == 4  # namespace, bridge, veth, table
    removed = sweep()
    assert f"{leftover.tag}-broker1" in removed and f"nft bridge {leftover.tag}" in removed
    assert names_of(leftover) == [], "the dead run's leftovers are gone"
    assert names_of(network) == ours, "the live run's network is untouched"
    network.close()
    assert names_of(network) == []


async def test_a_game_crosses_the_bridge_between_four_hosts(netcluster: NetCluster) -> None:
    """Discovery, broker and two edges on four hosts: players placed by discovery on both
    edges play a whole game with a clean history."""
    c = netcluster
    start_cluster(c)
    for proc in c.procs:
        assert proc.pid in c.node_of(proc).pids(), f"{proc.name} runs in its namespace"
    async with playing(c, 2, pace_s=0.05) as load:
        await eventually(lambda: all(n >= 20 for n in load.counts()), 30, "20 plies a game")
        assert {load.games[0].white.connected_to, load.games[0].black.connected_to} == {
            e.url for e in c.edges
        }
        await load.stop()
        await load.check(c)


async def raw_command(ws: Any, uci: str, command_id: str) -> tuple[str, Any]:
    """Send a move with ``command_id``; ("ack", v) or ("error", code) of the answer to it."""
    await ws.send(json.dumps({"type": "move", "uci": uci, "id": command_id}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if message.get("id") == command_id and message["type"] in ("ack", "error"):
            return message["type"], message.get("v", message.get("code"))


async def test_an_edge_cut_from_the_broker_answers_unavailable_and_resumes_on_heal(
    netcluster: NetCluster,
) -> None:
    """nftables cuts edge1 from the broker: edge1's players get ``unavailable`` and its
    /healthz says broker_unreachable, discovery and edge2 still answer; after healing the
    same command id is acked once and the game ends with every acked move, once."""
    c, net = netcluster, netcluster.network
    start_cluster(c, *EDGE)
    edge1, edge2 = c.edges
    game = c.new_game("10+0")
    gid = game["gameId"]
    black = await GameClient(gid, token=game["black"]["token"], edge_url=edge2.url).connect()
    url = f"{edge1.url}/v1/games/{gid}/ws?token={game['white']['token']}"
    try:
        async with websockets.connect(url) as white:
            assert await raw_command(white, "e2e4", "w1") == ("ack", 1)
            assert await black.move("e7e5") == 2
            net.cut("edge1", "broker")
            assert await raw_command(white, "g1f3", "w2") == ("error", "unavailable")

            async def unreachable() -> bool:
                status, body = await http_json_async(f"{edge1.http}/healthz")
                return status == 503 and body["status"] == "broker_unreachable"

            await eventually(unreachable, 10, "edge1 to report its broker unreachable")
            assert (await http_json_async(f"{edge2.http}/healthz"))[0] == 200
            status, answer = await http_json_async(
                f"{c.discovery_url}/v1/nodes/discovery?gameId={gid}&region=us-east"
            )
            assert status == 200 and answer["node"]["url"] == edge2.url
            net.heal("edge1", "broker")
            await eventually(lambda: healthy(edge1.http), 15, "edge1 to hear the broker again")
            assert await raw_command(white, "g1f3", "w2") == ("ack", 3)  # the same id, once
            assert await black.move("b8c6") == 4
            assert await raw_command(white, "f1b5", "w3") == ("ack", 5)
        moves = ["e2e4", "e7e5", "g1f3", "b8c6", "f1b5"]
        await black.wait_for_v(5)
        assert black.model.moves == moves and [e["v"] for e in black.events] == [1, 2, 3, 4, 5]
        assert await served_moves(c, gid) == moves
    finally:
        await black.close()


async def test_a_sigkilled_broker_restarts_from_its_journal_in_its_namespace(
    netcluster: NetCluster,
) -> None:
    """SIGKILL the broker on its host while 8 games play; restarted there, it replays its
    journal and every game moves on with 0 acked moves lost or doubled."""
    c = netcluster
    start_cluster(c)
    assert c.broker is not None
    async with playing(c, 8, pace_s=0.1, seed=5) as load:
        await eventually(lambda: all(n >= 4 for n in load.counts()), 20, "games to start")
        c.broker.kill()
        killed = time.monotonic()
        counts = load.counts()
        c.restart(c.broker)
        await eventually(lambda: load.moved_since(counts, 3), 30, "games to move again")
        print(f"\nbroker SIGKILL + restart: stall per game {summary(load.stalls(killed))}")
        await load.stop()
        await load.check(c)
