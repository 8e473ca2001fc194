"""A cluster of real ``xlmate`` processes, each on its own host of a test network.

``NetCluster`` is the tests' launcher (tests/integration/cluster.py, itself the
shared one of xlmate_bench) with a ``Network``: ``place(name)`` gives the
``Host`` of node ``name`` (created on first use), and every ``start_*`` of the
launcher takes ``host=``.  The process binds that node's address and is told
the addresses of the others; the test process reaches it across the bridge.
A broker pair (tests/integration/pairs.py's ``start_pair`` with two hosts,
see tests/netns/pair.py) is kept in ``pair`` by node name.

``probe`` asks for a URL from inside a node's namespace, so a test can check
what one host can reach during a partition.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Final

from tests.integration.cluster import Cluster, Proc
from tests.integration.pairs import PairBroker
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
    pair: dict[str, PairBroker] = field(default_factory=dict)  # a broker pair, by node name

    def place(self, name: str) -> Host:
        """The host of node ``name`` (created on first use)."""
        node = self.network.nodes.get(name) or self.network.add(name)
        return node.host

    def node_of(self, proc: Proc) -> Node:
        """The node ``proc`` runs on."""
        return self.network.node_of(proc.host.address)


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
