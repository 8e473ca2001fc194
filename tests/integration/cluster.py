"""Real processes for integration tests: the ``xlmate`` commands on free ports.

The launcher itself is ``xlmate_bench.cluster`` (shared with ``xlmate bench``):
``Cluster`` starts discovery, the broker and edges as subprocesses (the same
entry point as the Procfile), waits for each to be healthy, and can kill,
SIGTERM or restart any of them.  Nothing here mocks the system under test.
This module adds what only tests want: a fixed secret to mint seats with,
fast edge heartbeats, and ``eventually`` for async tests.

Async tests use ``http_get_async`` / ``http_json_async`` (the GET runs in a
thread); the blocking ``http_get`` / ``http_json`` are for sync code only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlmate_bench import cluster as base
from xlmate_bench.cluster import (
    POLL_S,
    Edge,
    Proc,
    free_port,
    http_get,
    http_get_async,
    http_json,
    http_json_async,
    wait_until,
)

__all__ = [
    "SECRET",
    "XLMATE",
    "Cluster",
    "Edge",
    "Proc",
    "eventually",
    "free_port",
    "http_get",
    "http_get_async",
    "http_json",
    "http_json_async",
    "wait_until",
]

XLMATE = str(Path(sys.executable).parent / "xlmate")  # the console script of this venv
SECRET = "integration-test-secret-0123456789abcdef"


@dataclass
class Cluster(base.Cluster):
    """The shared launcher with the tests' secret and 200 ms edge heartbeats."""

    secret: str = SECRET
    edge_args: tuple[str, ...] = ("--heartbeat-ms", "200")


async def eventually(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (sync or async) until truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_S)
