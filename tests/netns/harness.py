"""A cluster of real ``xlmate`` processes, each on its own host of a test network.

``NetCluster`` is the tests' launcher (tests/integration/cluster.py, itself the
shared one of xlmate_bench) with a ``Network``: ``place(name)`` gives the
``Host`` of node ``name`` (created on first use), and every ``start_*`` of the
launcher takes ``host=``.  The process binds that node's address and is told
the addresses of the others; the test process reaches it across the bridge.
Pair brokers (``start_pair_broker``) run two brokers of one shard on two
nodes with the same ports, each with its own journal and the other as peer.

``probe`` asks for a URL from inside a node's namespace, so a test can check
what one host can reach during a partition.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.integration.cluster import Cluster, Proc, free_port, http_json
from tests.netns.network import Network, Node
from xlmate_bench.cluster import Host

PROBE: Final = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
"""


@dataclass
class NetCluster(Cluster):
    """The tests' cluster with each process on a node of ``network``."""

    network: Network = field(kw_only=True)
    repl_port: int = field(default_factory=free_port)  # pair brokers' replication port
    pair: dict[str, Proc] = field(default_factory=dict)  # pair brokers by node name

    def place(self, name: str) -> Host:
        """The host of node ``name`` (created on first use)."""
        node = self.network.nodes.get(name) or self.network.add(name)
        return node.host

    def node_of(self, proc: Proc) -> Node:
        """The node ``proc`` runs on."""
        return self.network.node_of(proc.host.address)

    def start_pair_broker(self, name: str, peer: str, *extra: str) -> Proc:
        """One broker of a pair (shard 1/1) on node ``name``, its peer on node ``peer``.

        Both brokers of the pair use the cluster's broker ports on their own
        addresses and keep their journal in ``<root>/journal-<name>``.  It does not
        wait: a standby's health is the pair's business (see the tests' waits).
        """
        host, peer_host = self.place(name), self.place(peer)
        args = self.broker_args(
            *("--peer", f"tcp://{peer_host.address}:{self.repl_port}"),
            *("--repl-port", str(self.repl_port)),
            *extra,
            host=host,
            journal=self.root / f"journal-{name}",
        )
        health = f"http://{host.address}:{self.broker_http_port}/healthz"
        proc = self._spawn(name, args, health, host=host)
        self.pair[name] = proc
        return proc

    def broker_http_of(self, proc: Proc) -> str:
        """A broker's HTTP base URL on its own host."""
        return f"http://{proc.host.address}:{self.broker_http_port}"

    def health(self, proc: Proc) -> dict[str, Any]:
        """A process's ``/healthz`` body ({} when it does not answer JSON)."""
        _, body = http_json(proc.health_url, timeout=1)
        return body if isinstance(body, dict) else {}


def probe(node: Node, url: str, timeout: float = 1.0) -> int:
    """GET ``url`` from inside ``node``'s namespace: the HTTP status, 0 if unreachable."""
    done = subprocess.run(
        ["ip", "netns", "exec", node.netns, sys.executable, "-c", PROBE, url, str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=True,
    )
    return int(done.stdout.strip() or 0)


def journal_of(cluster: NetCluster, name: str) -> Path:
    """The journal directory of pair broker ``name``."""
    return cluster.root / f"journal-{name}"
