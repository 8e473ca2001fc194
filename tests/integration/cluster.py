"""Real processes for integration tests: the ``xlmate`` commands on free ports.

``Cluster`` starts discovery, the broker and edges as subprocesses (the same
entry point as the Procfile), waits for each to be healthy, and can kill,
SIGTERM or restart any of them.  Nothing here mocks the system under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

XLMATE = str(Path(sys.executable).parent / "xlmate")
SECRET = "integration-test-secret-0123456789abcdef"
POLL = 0.02  # seconds between two checks of a condition


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); connection errors give status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def http_json(url: str) -> tuple[int, Any]:
    """GET ``url`` and decode JSON (None when the body is not JSON)."""
    status, body = http_get(url)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


async def eventually(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (sync or async) until truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL)


@dataclass
class Proc:
    """One running ``xlmate`` subprocess and how to start it again."""

    name: str
    args: list[str]
    cwd: Path
    env: dict[str, str]
    health_url: str
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    def start(self) -> Proc:
        self.starts += 1
        self.log_path = self.cwd / f"{self.name}.{self.starts}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's life
        self.popen = subprocess.Popen(
            [XLMATE, *self.args], cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def wait_healthy(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.popen is not None and self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            return http_get(self.health_url, timeout=1)[0] == 200

        wait_until(ready, timeout, f"{self.name} to be healthy")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@dataclass
class Edge:
    """An edge process and its addresses."""

    proc: Proc
    region: str
    port: int
    edge_id: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Discovery, one broker and any number of edges, on free ports under ``root``."""

    root: Path
    discovery_port: int = field(default_factory=free_port)
    rep_port: int = field(default_factory=free_port)
    xsub_port: int = field(default_factory=free_port)
    xpub_port: int = field(default_factory=free_port)
    catchup_port: int = field(default_factory=free_port)
    broker_http_port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    broker: Proc | None = None
    discovery: Proc | None = None
    curve_dir: Path | None = None  # set before starting processes to run them with CURVE

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XLMATE_SECRET"] = SECRET
        env.pop("XLMATE_CURVE_DIR", None)
        if self.curve_dir is not None:
            env["XLMATE_CURVE_DIR"] = str(self.curve_dir)
        return env

    @property
    def discovery_url(self) -> str:
        return f"http://127.0.0.1:{self.discovery_port}"

    @property
    def broker_http(self) -> str:
        return f"http://127.0.0.1:{self.broker_http_port}"

    def _spawn(self, name: str, args: list[str], health_url: str) -> Proc:
        proc = Proc(name, args, self.root, self.env, health_url).start()
        self.procs.append(proc)
        return proc

    def start_discovery(self, *extra: str) -> Proc:
        self.discovery = self._spawn(
            "discovery",
            [
                "discovery",
                "--port",
                str(self.discovery_port),
                "--rep-port",
                str(self.rep_port),
                *extra,
            ],
            f"{self.discovery_url}/healthz",
        )
        self.discovery.wait_healthy()
        return self.discovery

    def broker_args(self, *extra: str) -> list[str]:
        return [
            "broker",
            "--xsub-port",
            str(self.xsub_port),
            "--xpub-port",
            str(self.xpub_port),
            "--catchup-port",
            str(self.catchup_port),
            "--http-port",
            str(self.broker_http_port),
            "--journal-dir",
            str(self.root / "journal"),
            *extra,
        ]

    def start_broker(self, *extra: str) -> Proc:
        self.broker = self._spawn("broker", self.broker_args(*extra), f"{self.broker_http}/healthz")
        self.broker.wait_healthy()
        return self.broker

    def restart(self, proc: Proc) -> Proc:
        """Start a stopped process again with the same arguments."""
        proc.start()
        proc.wait_healthy()
        return proc

    def start_edge(
        self, region: str, *extra: str, wait: bool = True, port: int | None = None
    ) -> Edge:
        port = port or free_port()  # given: a proxy in front already routes to it
        edge_id = f"{region}-{port}"
        args = [
            "edge",
            "--region",
            region,
            "--port",
            str(port),
            "--id",
            edge_id,
            "--broker-xsub-port",
            str(self.xsub_port),
            "--broker-xpub-port",
            str(self.xpub_port),
            "--broker-catchup-port",
            str(self.catchup_port),
            "--discovery",
            f"tcp://127.0.0.1:{self.rep_port}" if self.discovery else "",
            "--heartbeat-ms",
            "200",
            *extra,
        ]
        proc = self._spawn(f"edge-{edge_id}", args, f"http://127.0.0.1:{port}/healthz")
        edge = Edge(proc, region, port, edge_id)
        self.edges.append(edge)
        if wait:
            proc.wait_healthy()
        return edge

    def wait_registered(self, *edges: Edge, timeout: float = 10.0) -> None:
        """Wait until discovery lists every given edge."""

        def listed() -> bool:
            status, body = http_json(f"{self.discovery_url}/v1/nodes")
            ids = {n["id"] for n in body.get("nodes", [])} if status == 200 and body else set()
            return all(e.edge_id in ids for e in edges)

        wait_until(listed, timeout, "edges to register with discovery")

    def new_game(self, clock: str = "5+3", *extra: str) -> dict[str, Any]:
        """``xlmate game new``: a game id and both seat tokens."""
        out = subprocess.check_output(
            [XLMATE, "game", "new", "--clock", clock, *extra],
            env=self.env,
            stderr=subprocess.DEVNULL,
        )
        game: dict[str, Any] = json.loads(out)
        return game

    def stop(self) -> None:
        """Kill everything that is still running."""
        for proc in self.procs:
            if proc.alive():
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log()[-4000:]}" for p in self.procs)
