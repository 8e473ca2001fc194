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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember each phase's report on the test item (for log dumps on failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
