"""Helpers of the discovery integration tests: the real ``xlmate discovery`` process,
fake edges that run the real ``DiscoveryClient``, HTTP and polling with deadlines."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq.asyncio

from tests.integration.cluster import eventually, free_port, http_get, wait_until
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.heartbeat import Heartbeat

__all__ = ["eventually", "free_port", "get_json", "http_get", "wait_until"]

XLMATE = Path(sys.executable).parent / "xlmate"
POLL_S = 0.02


async def get_json(url: str) -> tuple[int, Any]:
    """GET ``url`` in a thread and decode the JSON body (None if it is not JSON)."""
    status, body = await asyncio.to_thread(http_get, url)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@dataclass
class DiscoveryProcess:
    """``xlmate discovery`` as a subprocess on fixed-for-its-life free ports."""

    workdir: Path
    port: int = field(default_factory=free_port)
    rep_port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.rep_port}"

    def log_path(self, start: int | None = None) -> Path:
        return self.workdir / f"discovery.{start or self.starts}.log"

    def start(self, *, wait: bool = True) -> DiscoveryProcess:
        """Start (again, on the same ports) and wait for ``/healthz``."""
        self.starts += 1
        with open(self.log_path(), "wb") as log:
            self.popen = subprocess.Popen(
                [
                    str(XLMATE),
                    "--log-level",
                    "debug",
                    "discovery",
                    "--port",
                    str(self.port),
                    "--rep-port",
                    str(self.rep_port),
                    *self.extra,
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            wait_until(self.healthy, 15.0, "discovery to answer /healthz")
        return self

    def healthy(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(f"discovery exited with {self.popen.returncode}:\n{self.log()}")
        return http_get(f"{self.url}/healthz", timeout=1.0)[0] == 200

    def kill(self) -> None:
        """SIGKILL and reap (no-op if not running)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def log(self) -> str:
        return "\n".join(
            self.log_path(i).read_text(errors="replace")[-6000:]
            for i in range(1, self.starts + 1)
            if self.log_path(i).exists()
        )


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
