"""Fixtures of the network-namespace tests: a test network per test, a cluster on it.

Every test gets a fresh ``Network`` (tests/netns/network.py) and an empty
``NetCluster`` whose processes it places on the network's nodes.  Whatever
happens in the test, its processes are killed and every namespace, veth,
bridge and nftables table it made is removed; leftovers of a dead run are
swept once at the start of the session.  Without root (or ``ip`` / ``nft``)
these tests fail with what to do: they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import pytest_runtest_makereport  # logs on failure
from tests.netns.harness import NetCluster
from tests.netns.network import Network, require_privileges, sweep

__all__ = ["pytest_runtest_makereport"]


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Root and the tools are there; stale leftovers of dead runs are gone."""
    problem = require_privileges()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    sweep()


@pytest.fixture
def network(netns_ready: None) -> Iterator[Network]:
    """A fresh test network (bridge, no nodes yet), removed whole after the test."""
    net = Network().open()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def netcluster(
    network: Network, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[NetCluster]:
    """An empty cluster on ``network``; its processes are killed after the test, and
    their logs printed when it failed."""
    cluster = NetCluster(tmp_path, network=network)
    try:
        yield cluster
    finally:
        cluster.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())
