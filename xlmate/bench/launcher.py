"""Start a local cluster for a benchmark: discovery, one broker, N edges.

Each component is the real ``xlmate`` command (as in the Procfile) run as a
subprocess on free loopback ports, with its log in ``workdir``.  Edges get
regions from a list (the first edge ``eu-west``, the second ``us-east``, ...)
so the two players of a game can sit on edges of different regions.

The benchmark holds thousands of sockets, so the file-descriptor limit is
raised here (``raise_nofile``) and, through ``preexec_fn``, in each child: a
benchmark concern only, the product does not do it.

Readiness is polled with deadlines, never slept on: every ``/healthz`` answers
200 (an edge only does once it hears the broker's beat) and discovery lists
every edge.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from xlmate.bench import BenchError

log = logging.getLogger("xlmate.bench")

POLL_S: Final = 0.05
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
START_ATTEMPTS: Final = 3
# Idle benchmark games must stay live for the whole run (the default aborts a
# game whose first move does not come within 30 s).
ABORT_AFTER_MS: Final = 3_600_000


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


PR_SET_PDEATHSIG: Final = 1


def _child_setup() -> None:
    """``preexec_fn`` of every cluster process: many sockets, own process group, no orphans.

    The child gets SIGTERM when the benchmark dies, so a killed benchmark
    leaves nothing running.
    """
    raise_nofile()
    os.setpgrp()  # a Ctrl-C on the benchmark must not hit the cluster before we stop it
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the benchmark's finally still stops it
        pass


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xlmate_command() -> list[str]:
    """How to run ``xlmate``: the console script beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "xlmate"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("xlmate")
    if found:
        return [found]
    return [sys.executable, "-c", "from xlmate.cli import main; main()"]


def http_status(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    """GET ``url``: (status, decoded JSON or None); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds, or raise ``BenchError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)


@dataclass
class Component:
    """One started process."""

    name: str
    role: str  # broker, discovery, edge
    args: list[str]
    health_url: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None  # an edge's WebSocket base URL
    region: str | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        """The end of its log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


@dataclass
class LocalCluster:
    """Discovery, a broker and ``edges`` edges on free loopback ports (see module docstring)."""

    edges: int = 2
    regions: Sequence[str] = ("eu-west", "us-east")
    fsync: str = "always"
    workdir: Path | None = None
    edge_capacity: int = 20_000
    secret: str = field(default_factory=lambda: secrets.token_hex(24))
    components: list[Component] = field(default_factory=list)
    _own_workdir: bool = False
    _discovery_port: int = 0

    @property
    def discovery_url(self) -> str:
        """Discovery's HTTP base URL."""
        return f"http://127.0.0.1:{self._discovery_port}"

    @property
    def edge_components(self) -> list[Component]:
        """The edges, in start order."""
        return [c for c in self.components if c.role == "edge"]

    def start(self) -> None:
        """Start every process and wait until the cluster serves; stop it all on failure."""
        raise_nofile()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="xlmate-bench-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_all()
                return
            except BenchError as exc:
                self.stop(keep_workdir=True)
                # A free port can be taken by someone else before our process binds it.
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                    self.stop()
                    raise
                log.warning("a port was taken before we could bind it; starting again")
                self.components = []
            except BaseException:
                self.stop()
                raise

    def _start_all(self) -> None:
        """Start discovery and the broker, then the edges; wait until all serve and registered."""
        self._discovery_port, rep_port = free_port(), free_port()
        xsub, xpub, catchup, broker_http = free_port(), free_port(), free_port(), free_port()
        discovery = self._spawn(
            "discovery",
            "discovery",
            ["discovery", "--port", str(self._discovery_port), "--rep-port", str(rep_port)],
            f"{self.discovery_url}/healthz",
        )
        assert self.workdir is not None
        broker = self._spawn(
            "broker",
            "broker",
            [
                "broker",
                "--xsub-port",
                str(xsub),
                "--xpub-port",
                str(xpub),
                "--catchup-port",
                str(catchup),
                "--http-port",
                str(broker_http),
                "--journal-dir",
                str(self.workdir / "journal"),
                "--fsync",
                self.fsync,
                "--abort-after-ms",
                str(ABORT_AFTER_MS),
            ],
            f"http://127.0.0.1:{broker_http}/healthz",
        )
        for component in (discovery, broker):
            self._wait_healthy(component)
        for index in range(self.edges):
            region = self.regions[index % len(self.regions)]
            port = free_port()
            edge_id = f"{region}-{port}"
            edge = self._spawn(
                f"edge-{edge_id}",
                "edge",
                [
                    "edge",
                    "--region",
                    region,
                    "--port",
                    str(port),
                    "--id",
                    edge_id,
                    "--broker-xsub-port",
                    str(xsub),
                    "--broker-xpub-port",
                    str(xpub),
                    "--broker-catchup-port",
                    str(catchup),
                    "--discovery",
                    f"tcp://127.0.0.1:{rep_port}",
                    "--capacity",
                    str(self.edge_capacity),
                ],
                f"http://127.0.0.1:{port}/healthz",
            )
            edge.url, edge.region = f"ws://127.0.0.1:{port}", region
        for edge in self.edge_components:
            self._wait_healthy(edge)
        wanted = {c.name.removeprefix("edge-") for c in self.edge_components}

        def registered() -> bool:
            status, body = http_status(f"{self.discovery_url}/v1/nodes")
            if status != 200 or not isinstance(body, dict):
                return False
            return wanted <= {n.get("id") for n in body.get("nodes", [])}

        wait_until(registered, START_TIMEOUT_S, "the edges to register with discovery")
        log.info("cluster up in %s: %d edges", self.workdir, self.edges)

    def _spawn(self, name: str, role: str, args: list[str], health_url: str) -> Component:
        """Start one ``xlmate`` command with its output in ``<workdir>/<name>.log``."""
        assert self.workdir is not None
        log_path = self.workdir / f"{name}.log"
        env = dict(os.environ, XLMATE_SECRET=self.secret)
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                [*xlmate_command(), "--log-level", "warning", *args],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,  # called before the run starts any thread
            )
        component = Component(name, role, args, health_url, popen, log_path)
        self.components.append(component)
        return component

    def _wait_healthy(self, component: Component) -> None:
        """Wait until the component's ``/healthz`` answers 200; fail fast if it exited."""

        def healthy() -> bool:
            if not component.alive():
                raise BenchError(f"{component.name} exited early:\n{component.log_tail()}")
            return http_status(component.health_url)[0] == 200

        wait_until(healthy, START_TIMEOUT_S, f"{component.name} to be healthy")

    def stop(self, *, keep_workdir: bool = False) -> None:
        """SIGTERM every process (edges first, they drain), SIGKILL stragglers; idempotent."""
        order = [c for c in self.components if c.role == "edge"] + [
            c for c in self.components if c.role != "edge"
        ]
        for component in order:
            if component.alive():
                component.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for component in order:
            try:
                component.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time: SIGKILL", component.name)
                component.popen.kill()
                component.popen.wait(5)
        if self._own_workdir and self.workdir is not None and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False
