"""A broker pair on the test network, and what discovery and the brokers say of it.

``start_pair`` starts discovery, the pair (tests/integration/pairs.py on two
hosts: broker1 active, then broker2 until it is a standby in sync) and two
edges, each process on its own node.  The
pair's state is read from discovery's ``GET /v1/brokers`` (role, term,
in_sync, per broker, identified by the address in its ``xsub`` endpoint),
which is what edges and operators see; ``health`` reads one broker's own
``/healthz`` through the test process's path, which a partition between
nodes never cuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cluster import http_get, http_json, wait_until
from tests.integration.pairs import start_pair as start_brokers
from tests.netns.harness import NetCluster

PAIR_TIMEOUT_S: Final = 20.0  # a pair forms, a standby catches up, a failover completes
EDGE_ARGS: Final = ("--command-timeout-ms", "30000")  # clients retry; nothing times out


@dataclass(frozen=True)
class BrokerView:
    """One broker of the pair as discovery lists it."""

    node: str
    role: str
    term: int
    in_sync: bool
    entry: dict[str, Any]


def pair_view(c: NetCluster) -> dict[str, BrokerView]:
    """The brokers discovery lists for shard 1, by node name ({} when it does not answer)."""
    status, body = http_json(f"{c.discovery_url}/v1/brokers", timeout=1)
    if status != 200 or not isinstance(body, dict) or not body.get("shards"):
        return {}
    views = {}
    for entry in body["shards"][0].get("brokers", []):
        address = str(entry.get("xsub", "")).removeprefix("tcp://").rsplit(":", 1)[0]
        try:
            node = c.network.node_of(address).name
        except Exception:
            continue
        views[node] = BrokerView(
            node,
            str(entry.get("role")),
            int(entry.get("term", 0)),
            bool(entry.get("in_sync", False)),
            entry,
        )
    return views


def pair_is(c: NetCluster, active: str, standby: str | None, min_term: int = 1) -> int | None:
    """The term when ``active`` is active at ``min_term`` or later and ``standby`` (unless
    None) is its standby, both in sync; None otherwise."""
    view = pair_view(c)
    lead = view.get(active)
    if lead is None or lead.role != "active" or lead.term < min_term:
        return None
    if standby is not None:
        follower = view.get(standby)
        if follower is None or follower.role != "standby" or not follower.in_sync:
            return None
        if not lead.in_sync:
            return None
    return lead.term


def wait_pair(
    c: NetCluster, active: str, standby: str | None, min_term: int = 1, what: str = ""
) -> int:
    """Wait until ``pair_is``; the term."""
    term: int = wait_until(
        lambda: pair_is(c, active, standby, min_term),
        PAIR_TIMEOUT_S,
        what or f"{active} active (term >= {min_term}) with {standby} standby in sync",
    )
    return term


def metric(base: str, name: str, **labels: str) -> float:
    """One sample of a process's ``/metrics`` (0 when absent or unreachable)."""
    status, body = http_get(f"{base}/metrics", timeout=1)
    if status != 200:
        return 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def refused_claims(c: NetCluster) -> float:
    """Lease claims discovery has refused so far (a standby that claimed too early)."""
    return metric(c.discovery_url, "xlmate_discovery_lease_claims_total", result="refused")


def health(c: NetCluster, name: str) -> dict[str, Any]:
    """The pair fields of broker ``name``'s own ``/healthz`` (role, term, in_sync,
    accepting, ...; {} when it does not answer)."""
    pair = c.pair[name].health().get("pair")
    return pair if isinstance(pair, dict) else {}


def start_pair(c: NetCluster, *broker_extra: str) -> int:
    """Discovery, broker1 (active) and broker2 (standby in sync), edge1 (eu-west) and edge2
    (us-east), each on its own node; the pair's term."""
    c.start_discovery(host=c.place("discovery"))
    hosts = (c.place("broker1"), c.place("broker2"))
    first, second = start_brokers(c, 1, 1, *broker_extra, start=(True, False), hosts=hosts)
    c.pair = {"broker1": first, "broker2": second}
    wait_pair(c, "broker1", None)
    second.proc.start()
    term = wait_pair(c, "broker1", "broker2")
    c.start_edge("eu-west", *EDGE_ARGS, host=c.place("edge1"))
    c.start_edge("us-east", *EDGE_ARGS, host=c.place("edge2"))
    c.wait_registered(*c.edges)
    return term
