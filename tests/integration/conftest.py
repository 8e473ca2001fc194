"""Fixtures that start real clusters (see ``cluster.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """An empty cluster; tests start the processes they need.  Logs shown on failure."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs())


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One broker and three edges (eu-west, us-east, ap-south) shared by a module's tests."""
    c = Cluster(tmp_path_factory.mktemp("module-cluster"))
    try:
        c.start_broker()
        for region in ("eu-west", "us-east", "ap-south"):
            c.start_edge(region)
        yield c
    finally:
        c.stop()


@pytest.fixture
def shared_cluster(module_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The module's cluster; its logs are printed when the test using it fails."""
    yield module_cluster
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(module_cluster.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember each phase's report on the test item (for log dumps on failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
