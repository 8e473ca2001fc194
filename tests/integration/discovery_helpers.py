"""Helpers of the discovery integration tests: the real ``xlmate discovery`` process,
fake edges that run the real ``DiscoveryClient``, HTTP and polling with deadlines."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq.asyncio

from tests.integration.cluster import (
    Proc,
    eventually,
    free_port,
    http_get,
    http_get_async,
    http_json_async,
    wait_until,
)
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.heartbeat import Heartbeat

__all__ = ["eventually", "free_port", "http_get", "http_get_async", "http_json_async", "wait_until"]

XLMATE = Path(sys.executable).parent / "xlmate"


@dataclass
class DiscoveryProcess:
    """``xlmate discovery`` alone (the shared ``Proc``), on ports kept across restarts."""

    workdir: Path
    port: int = field(default_factory=free_port)
    rep_port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: Proc = field(init=False)

    def __post_init__(self) -> None:
        args = ["discovery", "--port", str(self.port), "--rep-port", str(self.rep_port)]
        self.proc = Proc(
            "discovery",
            [*args, *self.extra],
            self.workdir,
            dict(os.environ),
            f"{self.url}/healthz",
            log_level="debug",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.rep_port}"

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        return self.proc.popen

    def start(self, *, wait: bool = True) -> DiscoveryProcess:
        """Start (again, on the same ports) and wait for ``/healthz``."""
        self.proc.start()
        if wait:
            self.proc.wait_healthy()
        return self

    def kill(self) -> None:
        """SIGKILL and reap (no-op if not running)."""
        self.proc.kill()

    def log(self) -> str:
        """The end of every start's output."""
        return "\n".join(self.proc.log(i)[-6000:] for i in range(1, self.proc.starts + 1))


@dataclass
class FakeEdge:
    """An edge that is only its heartbeat: the real ``DiscoveryClient`` with a status to edit."""

    status: Heartbeat
    client: DiscoveryClient
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.status.id

    def update(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)

    async def stop(self) -> None:
        self.client.close()
        await self.client.wait_closed()
        if self.task is not None:
            await self.task


class FakeEdges:
    """Starts fake edges against one discovery endpoint; ``aclose()`` stops them all."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str) -> None:
        self.context = context
        self.endpoint = endpoint
        self.edges: list[FakeEdge] = []

    def start(
        self,
        edge_id: str,
        region: str,
        *,
        load: float = 0.0,
        interval_ms: int = 100,
        timeout_ms: int = 200,
        max_backoff_ms: int = 300,
        endpoint: str | None = None,
        **fields: Any,
    ) -> FakeEdge:
        url = f"ws://127.0.0.1:{free_port()}"
        status = Heartbeat(
            id=edge_id,
            region=region,
            url=url,
            load=load,
            connections=fields.pop("connections", 0),
            capacity=fields.pop("capacity", 100),
            draining=fields.pop("draining", False),
            interval_ms=interval_ms,
        )
        holder: list[FakeEdge] = []
        client = DiscoveryClient(
            endpoint or self.endpoint,
            lambda: holder[0].status,
            context=self.context,
            interval_ms=interval_ms,
            timeout_ms=timeout_ms,
            max_backoff_ms=max_backoff_ms,
        )
        edge = FakeEdge(status, client)
        holder.append(edge)
        edge.task = asyncio.create_task(client.run(), name=f"fake-edge-{edge_id}")
        self.edges.append(edge)
        return edge

    async def aclose(self) -> None:
        for edge in self.edges:
            await edge.stop()
