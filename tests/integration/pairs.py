"""Broker pairs for integration tests: two real ``xlmate broker --peer`` processes of a shard.

``start_pair`` starts both brokers of shard K/N (each its own ports, journal
directory and replication port, each the other's ``--peer``).  The first takes
the cluster's broker ports when K is 1, so edges started by the launcher know it
before discovery tells them; the second gets free ports.  Each runs on its own
``Host`` of the launcher (loopback by default; the network-namespace tests put
them on two hosts of a test network).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.cluster import Cluster, Proc, free_port, http_json, http_json_async
from xlmate_bench.cluster import LOCAL, Host

LEASE_MS = 1000


@dataclass
class PairBroker:
    """One broker of a pair: its process and ports."""

    name: str
    proc: Proc
    xsub_port: int
    xpub_port: int
    catchup_port: int
    http_port: int
    repl_port: int
    journal_dir: Path
    address: str = "127.0.0.1"  # its host's address

    @property
    def http(self) -> str:
        """``/healthz`` and ``/metrics`` base URL."""
        return f"http://{self.address}:{self.http_port}"

    @property
    def journal(self) -> Path:
        """Its journal file."""
        return self.journal_dir / "journal.log"

    def health(self) -> dict[str, Any]:
        """Its ``/healthz`` body (``{}`` when it does not answer)."""
        try:
            status, body = http_json(f"{self.http}/healthz", timeout=1)
        except OSError:
            return {}
        return body if status == 200 and isinstance(body, dict) else {}

    async def health_async(self) -> dict[str, Any]:
        """Its ``/healthz`` body (``{}`` when it does not answer), without blocking the loop."""
        try:
            status, body = await http_json_async(f"{self.http}/healthz", timeout=1)
        except OSError:
            return {}
        return body if status == 200 and isinstance(body, dict) else {}

    async def pair(self) -> dict[str, Any]:
        """The ``pair`` part of its ``/healthz`` (``{}`` when it does not answer)."""
        pair = (await self.health_async()).get("pair")
        return pair if isinstance(pair, dict) else {}


def start_pair(
    cluster: Cluster,
    index: int = 1,
    count: int = 1,
    *extra: str,
    start: tuple[bool, bool] = (True, True),
    hosts: tuple[Host, Host] = (LOCAL, LOCAL),
    discovery: str | None = None,
) -> tuple[PairBroker, PairBroker]:
    """Both brokers of shard ``index``/``count`` on ``hosts``, peered; ``start`` says which
    to start now.  ``discovery`` is the cluster's discovery unless a test plays it."""
    repl = (free_port(), free_port())
    brokers = []
    for n, name in enumerate(("a", "b")):
        host, peer = hosts[n], hosts[1 - n]
        if n == 0 and index == 1:
            cluster.broker_host = host  # it takes the cluster's broker ports (see above)
            ports = (
                cluster.xsub_port,
                cluster.xpub_port,
                cluster.catchup_port,
                cluster.broker_http_port,
            )
        else:
            ports = (free_port(), free_port(), free_port(), free_port())
        xsub, xpub, catchup, http = ports
        journal = cluster.root / f"journal-{index}-of-{count}-{name}"
        args = [
            "broker",
            *("--shard", f"{index}/{count}"),
            *("--host", host.address),
            *("--xsub-port", str(xsub)),
            *("--xpub-port", str(xpub)),
            *("--catchup-port", str(catchup)),
            *("--http-port", str(http)),
            *("--journal-dir", str(journal)),
            *("--discovery", discovery or cluster.discovery_endpoint),
            *("--repl-port", str(repl[n])),
            *("--peer", f"tcp://{peer.address}:{repl[1 - n]}"),
            *("--lease-ms", str(LEASE_MS)),
            *extra,
        ]
        proc = Proc(
            f"broker-{index}of{count}-{name}",
            args,
            cluster.root,
            cluster.env,
            f"http://{host.address}:{http}/healthz",
            log_level=cluster.log_level,
            host=host,
        )
        cluster.procs.append(proc)
        broker = PairBroker(name, proc, xsub, xpub, catchup, http, repl[n], journal, host.address)
        if start[n]:
            proc.start()
        brokers.append(broker)
    for broker, started in zip(brokers, start, strict=True):
        if started:
            broker.proc.wait_healthy()
    return brokers[0], brokers[1]
