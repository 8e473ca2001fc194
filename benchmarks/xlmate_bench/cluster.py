"""A local XLMate cluster of real processes: the ``xlmate`` commands on free loopback ports.

One launcher for everything that needs a cluster on this machine: the
integration tests (``tests/integration/cluster.py`` builds on it) and
``xlmate bench`` (``targets.py`` starts one to drive).  Nothing here mocks the
system: each component is the real ``xlmate`` command, as in the Procfile, run
as a subprocess with its output in ``<root>/<name>.<start>.log``.

Theory of operation:

- Ports are picked free (``free_port``) when a ``Cluster`` is built and kept
  for its life, so a restarted process comes back on the same addresses.  A
  port can still be taken by someone else before our process binds it: the
  process then exits early, and ``wait_healthy`` says so with its log.
- Every process runs on a ``Host``: loopback by default; the network-namespace
  tests (tests/netns) give each process its own host, an address on a test
  bridge and the ``ip netns exec NS`` prefix that runs the command there.  Each
  process binds its host's address and is told the addresses of the hosts of
  the processes it talks to (discovery, broker).
- Readiness is polled with deadlines, never slept on: a process is up when its
  ``/healthz`` answers 200 (an edge only does once it hears the broker's
  beat), an edge is placed once discovery lists it as ready for every shard
  (``wait_registered``).
- With ``isolate`` (the bench) every child runs in its own process group, so a
  Ctrl-C on the caller does not hit it before the caller stops it, and gets
  SIGTERM when the caller dies (Linux ``PR_SET_PDEATHSIG``).  That needs a
  ``preexec_fn``, which is only safe before the caller starts threads; the
  tests start processes from async code with worker threads, so they do not
  ask for it (their children share pytest's process group instead).
- ``stop()`` kills everything at once (tests); ``terminate()`` stops edges
  first so they drain, then the rest, and kills stragglers (the bench).

Errors: ``ClusterError`` (a ``BenchError``) when a process exits early or a
condition does not hold before its deadline.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import secrets
import shutil
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
from typing import Any, Final

from xlmate_bench import BenchError

POLL_S: Final = 0.02  # seconds between two checks of a condition
HEALTHY_TIMEOUT_S: Final = 15.0
REGISTERED_TIMEOUT_S: Final = 10.0
PR_SET_PDEATHSIG: Final = 1


class ClusterError(BenchError):
    """A cluster process exited early, or a condition did not hold in time."""


@dataclass(frozen=True)
class Host:
    """Where a process runs: the address it binds and is reached at, and the command
    prefix that runs it there (e.g. ``ip netns exec NS`` for a network namespace)."""

    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()


LOCAL: Final = Host()


# --- small tools ------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); status 0 when nothing answers.  Blocking."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def http_json(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    """GET ``url`` and decode JSON: (status, value or None when the body is not JSON)."""
    status, body = http_get(url, timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


async def http_get_async(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """``http_get`` for async code: the blocking GET runs in a worker thread."""
    return await asyncio.to_thread(http_get, url, timeout)


async def http_json_async(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    """``http_json`` for async code: the blocking GET runs in a worker thread."""
    return await asyncio.to_thread(http_json, url, timeout)


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when its parent dies, so nothing is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the caller's finally still stops it
        pass


def xlmate_command() -> list[str]:
    """How to run ``xlmate``: the console script beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "xlmate"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("xlmate")
    if found:
        return [found]
    return [sys.executable, "-c", "from xlmate.cli import main; main()"]


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """One ``xlmate`` subprocess (``args`` start with its subcommand) and how to start it again."""

    name: str
    args: list[str]
    cwd: Path
    env: dict[str, str]
    health_url: str
    log_level: str | None = None
    host: Host = LOCAL
    isolate: bool = False  # own process group, SIGTERM when the caller dies
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def role(self) -> str:
        """``broker``, ``edge`` or ``discovery``: the subcommand."""
        return self.args[0]

    def start(self) -> Proc:
        """Start it (again) with its output in ``<cwd>/<name>.<start>.log``."""
        self.starts += 1
        self.log_path = self.cwd / f"{self.name}.{self.starts}.log"
        level = ["--log-level", self.log_level] if self.log_level else []
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen(
                [*self.host.prefix, *xlmate_command(), *level, *self.args],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0 if self.isolate else None,
                preexec_fn=_die_with_parent if self.isolate else None,
            )
        return self

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200; raise ``ClusterError`` if the process exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise ClusterError(f"{self.name} exited early:\n{self.log()[-3000:]}")
        return http_get(self.health_url, timeout=1)[0] == 200

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT_S) -> None:
        """Wait until ``/healthz`` answers 200; fail fast if the process exited."""
        wait_until(self.healthy, timeout, f"{self.name} to be healthy")

    @property
    def pid(self) -> int:
        """The process id of the current start."""
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` if the process is running."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def log(self, start: int | None = None) -> str:
        """The output of start number ``start`` (default: the current one) so far."""
        number = start or self.starts
        try:
            return (self.cwd / f"{self.name}.{number}.log").read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Edge:
    """An edge process and its addresses."""

    proc: Proc
    region: str
    port: int
    edge_id: str
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The WebSocket base URL players connect to."""
        return f"ws://{self.address}:{self.port}"

    @property
    def http(self) -> str:
        """The HTTP base URL (``/healthz``, ``/metrics``)."""
        return f"http://{self.address}:{self.port}"


@dataclass
class BrokerShard:
    """One broker shard (``--shard K/N``) and its ports."""

    proc: Proc
    index: int
    count: int
    xsub_port: int
    xpub_port: int
    catchup_port: int
    http_port: int
    address: str = "127.0.0.1"

    @property
    def http(self) -> str:
        """The broker's HTTP base URL (``/healthz``, ``/metrics``)."""
        return f"http://{self.address}:{self.http_port}"

    @property
    def spec(self) -> str:
        """``K/N``."""
        return f"{self.index}/{self.count}"

    @property
    def broker_option(self) -> str:
        """This shard as an edge's ``--broker`` value (static routing, no discovery)."""
        ports = (self.xsub_port, self.xpub_port, self.catchup_port)
        return f"{self.index}/{self.count}=" + ",".join(f"tcp://{self.address}:{p}" for p in ports)


@dataclass
class Cluster:
    """Discovery, one broker (or N broker shards) and any number of edges, on free ports."""

    root: Path
    secret: str = field(default_factory=lambda: secrets.token_hex(24))
    log_level: str | None = None  # the processes' --log-level (their default when None)
    edge_args: tuple[str, ...] = ()  # given to every edge, before its own extra arguments
    isolate: bool = False  # see the module docstring
    curve_dir: Path | None = None  # set before starting processes to run them with CURVE
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
    shards: dict[int, BrokerShard] = field(default_factory=dict)
    discovery_host: Host = LOCAL  # where discovery runs (start_discovery's ``host``)
    broker_host: Host = LOCAL  # where the broker (or shard 1) runs (start_broker's ``host``)

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process: the cluster's secret, CURVE only if asked for."""
        env = dict(os.environ)
        env["XLMATE_SECRET"] = self.secret
        env.pop("XLMATE_CURVE_DIR", None)
        if self.curve_dir is not None:
            env["XLMATE_CURVE_DIR"] = str(self.curve_dir)
        return env

    @property
    def discovery_url(self) -> str:
        """Discovery's HTTP base URL."""
        return f"http://{self.discovery_host.address}:{self.discovery_port}"

    @property
    def discovery_endpoint(self) -> str:
        """Discovery's heartbeat endpoint as processes are told it ('' before it starts)."""
        if self.discovery is None:
            return ""
        return f"tcp://{self.discovery_host.address}:{self.rep_port}"

    @property
    def broker_http(self) -> str:
        """The broker's HTTP base URL."""
        return f"http://{self.broker_host.address}:{self.broker_http_port}"

    def _spawn(
        self,
        name: str,
        args: list[str],
        health_url: str,
        env: dict[str, str] | None = None,
        host: Host = LOCAL,
    ) -> Proc:
        proc = Proc(
            name,
            args,
            self.root,
            {**self.env, **(env or {})},
            health_url,
            log_level=self.log_level,
            host=host,
            isolate=self.isolate,
        ).start()
        self.procs.append(proc)
        return proc

    def start_discovery(self, *extra: str, wait: bool = True, host: Host | None = None) -> Proc:
        """Start discovery on ``host`` (default: where it ran before, else loopback) and
        wait until it serves, unless ``wait`` is False."""
        self.discovery_host = host or self.discovery_host
        address = self.discovery_host.address
        self.discovery = self._spawn(
            "discovery",
            [
                "discovery",
                *("--host", address, "--port", str(self.discovery_port)),
                *("--rep-host", address, "--rep-port", str(self.rep_port)),
                *extra,
            ],
            f"{self.discovery_url}/healthz",
            host=self.discovery_host,
        )
        if wait:
            self.discovery.wait_healthy()
        return self.discovery

    def broker_args(self, *extra: str) -> list[str]:
        """The broker's command line on this cluster's ports, plus ``extra``."""
        return [
            "broker",
            *("--host", self.broker_host.address),
            *("--xsub-port", str(self.xsub_port)),
            *("--xpub-port", str(self.xpub_port)),
            *("--catchup-port", str(self.catchup_port)),
            *("--http-port", str(self.broker_http_port)),
            *("--journal-dir", str(self.root / "journal")),
            *("--discovery", self.discovery_endpoint),
            *extra,
        ]

    def start_broker(
        self,
        *extra: str,
        wait: bool = True,
        env: dict[str, str] | None = None,
        host: Host | None = None,
    ) -> Proc:
        """Start the broker on ``host`` (default: where it ran before, else loopback) and
        wait until it serves, unless ``wait`` is False; ``env`` adds to its environment
        (e.g. ``XLMATE_FAULT_INJECT``)."""
        self.broker_host = host or self.broker_host
        self.broker = self._spawn(
            "broker",
            self.broker_args(*extra),
            f"{self.broker_http}/healthz",
            env,
            self.broker_host,
        )
        if wait:
            self.broker.wait_healthy()
        return self.broker

    def start_shard(
        self, index: int, count: int, *extra: str, wait: bool = True, host: Host = LOCAL
    ) -> BrokerShard:
        """Start the broker of shard ``index`` of ``count`` on ``host`` with its own ports
        and journal.

        Shard 1 takes the cluster's broker ports (so ``broker`` and ``broker_http``
        name it); the others get free ports.  It registers with discovery when
        discovery runs.
        """
        if index == 1:
            self.broker_host = host
            ports = (self.xsub_port, self.xpub_port, self.catchup_port, self.broker_http_port)
        else:
            ports = (free_port(), free_port(), free_port(), free_port())
        xsub, xpub, catchup, http = ports
        args = [
            "broker",
            *("--shard", f"{index}/{count}"),
            *("--host", host.address),
            *("--xsub-port", str(xsub)),
            *("--xpub-port", str(xpub)),
            *("--catchup-port", str(catchup)),
            *("--http-port", str(http)),
            *("--journal-dir", str(self.root / f"journal-shard-{index}-of-{count}")),
            *("--discovery", self.discovery_endpoint),
            *extra,
        ]
        health = f"http://{host.address}:{http}/healthz"
        proc = self._spawn(f"broker-{index}of{count}", args, health, host=host)
        shard = BrokerShard(proc, index, count, xsub, xpub, catchup, http, host.address)
        self.shards[index] = shard
        if index == 1:
            self.broker = proc
        if wait:
            proc.wait_healthy()
        return shard

    def restart(self, proc: Proc) -> Proc:
        """Start a stopped process again with the same arguments; wait until it serves."""
        proc.start()
        proc.wait_healthy()
        return proc

    def start_edge(
        self,
        region: str,
        *extra: str,
        wait: bool = True,
        port: int | None = None,
        env: dict[str, str] | None = None,
        host: Host = LOCAL,
    ) -> Edge:
        """Start an edge in ``region`` on ``host`` and ``port`` (a proxy in front routes to
        it) or a free port, id ``<region>-<port>``; ``env`` adds to its environment."""
        port = port or free_port()
        edge_id = f"{region}-{port}"
        args = [
            "edge",
            *("--region", region),
            *("--host", host.address, "--port", str(port)),
            *("--id", edge_id),
            *("--broker-host", self.broker_host.address),
            *("--broker-xsub-port", str(self.xsub_port)),
            *("--broker-xpub-port", str(self.xpub_port)),
            *("--broker-catchup-port", str(self.catchup_port)),
            *("--discovery", self.discovery_endpoint),
            *self.edge_args,
            *extra,
        ]
        health = f"http://{host.address}:{port}/healthz"
        proc = self._spawn(f"edge-{edge_id}", args, health, env, host)
        edge = Edge(proc, region, port, edge_id, host.address)
        self.edges.append(edge)
        if wait:
            proc.wait_healthy()
        return edge

    def wait_registered(self, *edges: Edge, timeout: float = REGISTERED_TIMEOUT_S) -> None:
        """Wait until discovery lists every given edge, ready for every shard (placed)."""

        def listed() -> bool:
            status, body = http_json(f"{self.discovery_url}/v1/nodes")
            if status != 200 or not isinstance(body, dict):
                return False
            ready = {node.get("id") for node in body.get("nodes", []) if not node.get("unready")}
            return all(edge.edge_id in ready for edge in edges)

        wait_until(listed, timeout, "edges to register with discovery")

    def wait_routed(self, *edges: Edge, shards: int, timeout: float = REGISTERED_TIMEOUT_S) -> None:
        """Wait until every given edge routes by ``shards`` shards and hears each broker."""

        def routed(edge: Edge) -> bool:
            _, body = http_json(f"{edge.http}/healthz")
            view = body.get("shards", {}) if isinstance(body, dict) else {}
            brokers = view.get("brokers", {})
            return view.get("count") == shards and all(
                brokers.get(str(k), {}).get("up") for k in range(1, shards + 1)
            )

        wait_until(lambda: all(routed(e) for e in edges), timeout, "edges to hear every shard")

    def new_game(self, clock: str = "5+3", *extra: str) -> dict[str, Any]:
        """``xlmate game new``: a game id and both seat tokens."""
        out = subprocess.check_output(
            [*xlmate_command(), "game", "new", "--clock", clock, *extra],
            env=self.env,
            stderr=subprocess.DEVNULL,
        )
        game: dict[str, Any] = json.loads(out)
        return game

    def stop(self) -> None:
        """Kill everything that is still running (SIGKILL; idempotent)."""
        for proc in self.procs:
            if proc.alive():
                proc.kill()

    def terminate(self, timeout: float) -> list[str]:
        """SIGTERM edges first (they drain), then the rest; SIGKILL stragglers; idempotent.

        Returns the names of the processes that had to be killed.
        """
        order = [p for p in self.procs if p.role == "edge"]
        order += [p for p in self.procs if p.role != "edge"]
        for proc in order:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for proc in order:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(proc.name)
                proc.kill()
        return killed

    def logs(self) -> str:
        """The end of every process's log, for a failure report."""
        return "\n".join(f"===== {p.name}\n{p.log()[-4000:]}" for p in self.procs)
