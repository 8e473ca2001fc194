"""The target of a run: what it drives, which processes it reports, and starting it.

``setup(config, stats)`` turns a ``BenchConfig`` into a ``Target``: its planner,
the processes whose CPU and RSS the report shows (this process first), which
edge or relay URL belongs to which of them (for memory per connection), and
the description the report prints.  For ``launch`` it first starts a local
cluster with the shared launcher (``cluster.Cluster``); ``Target.close`` stops
it again.

A benchmark cluster differs from a test cluster in four ways, all set here:
its processes log only warnings (the run measures them, not their logs), they
run isolated (own process group, stopped if the bench dies), the broker never
aborts a game for want of a first move (idle games must stay live for the
whole run), and each edge takes ``EDGE_CAPACITY`` sockets.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from xlmate.config import cluster_secret
from xlmate_bench import BenchError
from xlmate_bench.cluster import Cluster, ClusterError, http_json, raise_nofile
from xlmate_bench.config import BenchConfig
from xlmate_bench.planners import ClusterPlanner, Planner, RelayPlanner
from xlmate_bench.report import Watched, myself
from xlmate_bench.stats import Stats

log = logging.getLogger("xlmate.bench")

START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
START_ATTEMPTS: Final = 3
# Idle benchmark games must stay live for the whole run (the default aborts a
# game whose first move does not come within 30 s).
ABORT_AFTER_MS: Final = 3_600_000
EDGE_CAPACITY: Final = 20_000


@dataclass
class Target:
    """What a run drives: its planner, the processes to report, edge URLs to names."""

    planner: Planner
    watched: list[Watched]
    edge_urls: dict[str, str]  # WebSocket base URL -> watched process name
    description: dict[str, Any]
    cluster: Cluster | None = None
    own_workdir: Path | None = None  # a temporary directory to remove on close

    def close(self) -> None:
        """Stop the cluster this run started, if any (edges first); idempotent."""
        if self.cluster is not None:
            for name in self.cluster.terminate(STOP_TIMEOUT_S):
                log.warning("%s did not stop in time: SIGKILL", name)
            self.cluster = None
        if self.own_workdir is not None:
            shutil.rmtree(self.own_workdir, ignore_errors=True)
            self.own_workdir = None


def setup(config: BenchConfig, stats: Stats) -> Target:
    """Set up the target of ``config`` (starting a cluster if asked to)."""
    watched, urls = _watched(config)
    watched.insert(0, myself())
    if config.target == "relay":
        return Target(
            RelayPlanner(config, stats),
            watched,
            urls,
            {"kind": "relay", "urls": list(config.target_urls)},
        )
    if config.target == "discovery":
        assert config.discovery_url is not None
        regions = _regions_of(config.discovery_url, config.regions)
        secret, _ = cluster_secret()
        return Target(
            ClusterPlanner(config, stats, config.discovery_url, secret, regions),
            watched,
            urls,
            {"kind": "cluster", "discovery": config.discovery_url, "regions": regions},
        )
    regions = list(config.regions[: config.edges])
    own = Path(tempfile.mkdtemp(prefix="xlmate-bench-")) if config.workdir is None else None
    workdir = own or Path(str(config.workdir))
    try:
        cluster = start_cluster(workdir, config.edges, regions, config.fsync, config.shards)
    except BaseException:
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
        raise
    for proc in cluster.procs:
        metrics = proc.health_url.removesuffix("/healthz") + "/metrics"
        watched.append(Watched(proc.name, proc.role, proc.pid, metrics))
    for edge in cluster.edges:
        urls[edge.url] = edge.proc.name
    return Target(
        ClusterPlanner(config, stats, cluster.discovery_url, cluster.secret, regions),
        watched,
        urls,
        {
            "kind": "cluster",
            "launched": True,
            "edges": config.edges,
            "shards": config.shards,
            "regions": regions,
            "fsync": config.fsync,
        },
        cluster,
        own,
    )


def start_cluster(
    workdir: Path, edges: int, regions: Sequence[str], fsync: str, shards: int = 1
) -> Cluster:
    """Discovery, a broker (or ``shards`` broker shards) and ``edges`` edges (regions in
    turn), serving and registered; with shards, every edge routes by all of them.

    A free port can be taken by someone else before our process binds it: then
    the cluster is stopped and started again on new ports, up to
    ``START_ATTEMPTS`` times.  Anything else stops it and is raised.
    """
    raise_nofile()  # children inherit it: the benchmark holds thousands of sockets
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = Cluster(workdir / f"start-{attempt}", log_level="warning", isolate=True)
        cluster.root.mkdir(exist_ok=True)
        try:
            _start_all(cluster, edges, regions, fsync, shards)
            log.info("cluster up in %s: %d edges", cluster.root, edges)
            return cluster
        except ClusterError as exc:
            cluster.terminate(STOP_TIMEOUT_S)
            taken = re.search(r"address already in use|port \d+ is in use", str(exc).lower())
            if taken is None or attempt == START_ATTEMPTS:  # (the CLI's one line, or a traceback)
                raise
            log.warning("a port was taken before we could bind it; starting again")
        except BaseException:
            cluster.terminate(STOP_TIMEOUT_S)
            raise
    raise AssertionError("unreachable: the last attempt raises")


def _start_all(
    cluster: Cluster, edges: int, regions: Sequence[str], fsync: str, shards: int
) -> None:
    """Start discovery and the brokers, then the edges; wait until all serve and registered."""
    broker_args = ("--fsync", fsync, "--abort-after-ms", str(ABORT_AFTER_MS))
    if shards == 1:
        cluster.start_discovery(wait=False)
        cluster.start_broker(*broker_args, wait=False)
    else:
        cluster.start_discovery("--shards", str(shards))
        for index in range(1, shards + 1):
            cluster.start_shard(index, shards, *broker_args, wait=False)
    for proc in cluster.procs:
        proc.wait_healthy(START_TIMEOUT_S)
    for index in range(edges):
        region = regions[index % len(regions)]
        cluster.start_edge(region, "--capacity", str(EDGE_CAPACITY), wait=False)
    for edge in cluster.edges:
        edge.proc.wait_healthy(START_TIMEOUT_S)
    cluster.wait_registered(*cluster.edges, timeout=START_TIMEOUT_S)
    if shards > 1:
        cluster.wait_routed(*cluster.edges, shards=shards, timeout=START_TIMEOUT_S)


def _watched(config: BenchConfig) -> tuple[list[Watched], dict[str, str]]:
    """``--watch`` entries as watched processes, and relay URLs to their names.

    A relay with a URL serves its loop-lag metrics on the same port: ``ws://host:port``
    -> ``http://host:port/metrics``.
    """
    watched, urls = [], {}
    for name, pid in config.watch:
        base, _, url = name.partition("@")
        role = base.split("-")[0]
        metrics = re.sub(r"^ws", "http", url.rstrip("/")) + "/metrics" if url else None
        watched.append(Watched(base, role, pid, metrics))
        if url:
            urls[url] = base
    return watched, urls


def _regions_of(discovery_url: str, fallback: Sequence[str]) -> list[str]:
    """The distinct regions discovery knows, in listing order."""
    status, body = http_json(f"{discovery_url.rstrip('/')}/v1/nodes", 3.0)
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"discovery at {discovery_url} answered {status}")
    regions: list[str] = []
    for node in body.get("nodes", []):
        region = node.get("region")
        if isinstance(region, str) and region not in regions and not node.get("draining"):
            regions.append(region)
    return regions or list(fallback)
