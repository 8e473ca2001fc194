"""A test network of Linux network namespaces: one host per process, real partitions.

Theory of operation.  ``Network`` builds, in the root namespace, one Linux
bridge holding the first address of a private /24 of 10.213.0.0/16 (chosen
so that it overlaps no route or address of this machine), and one network
namespace per ``Node``, joined to the bridge by a veth pair, with the next
address of the subnet and its loopback up.  Each node is a separate host as
far as the network goes: processes started with ``node.host`` (the launcher's
``Host``: its address and ``ip netns exec NS``) bind its address and reach the
others only across the bridge.  The pytest process stays in the root
namespace and reaches every node through the bridge's address, as an
operator's management network would; that path is never cut except by
``link_down``.

Partitions are real:

- ``link_down`` / ``link_up``: the node's veth is brought down in its
  namespace, so nothing reaches it or leaves it (the test process included).
- ``cut(a, b)`` / ``heal(a, b)``: nftables drops every IPv4 packet between
  the two nodes (a ``bridge`` family table in the root namespace, hook
  ``forward``: the packets cross the bridge from port to port).
- ``isolate(a)`` / ``rejoin(a)``: the same for the node against every other
  node, the test process's path excepted (it is not forwarded traffic).

No packet is rejected, only dropped: TCP connections stall as on a real
partition and resume when it heals.  The rules live in one table, rewritten
whole in one ``nft -f`` transaction at every change.

Names: everything made carries the prefix ``xlm<pid>`` of the pytest process
(namespaces ``xlm<pid>-<node>``, bridge ``xlm<pid>br``, veths ``xlm<pid>v<i>``,
table ``bridge xlm<pid>``).  One network lives at a time per process; it is
removed whole by ``close()`` (processes still running in its namespaces are
SIGKILLed by pid first), and ``sweep()`` removes what a dead run left behind
(the pid in the name is not a live pytest), so a crashed run never breaks the
next one and two runs on one machine never touch each other's.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables): ``require_privileges``
says what is missing.  Errors: ``NetworkError`` with the failing command and
its output.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from xlmate_bench.cluster import ClusterError, Host, wait_until

PREFIX: Final = "xlm"
SUPERNET: Final = ipaddress.IPv4Network("10.213.0.0/16")
COMMAND_TIMEOUT_S: Final = 15.0
_NAME = re.compile(rf"^{PREFIX}(\d+)")


class NetworkError(Exception):
    """A command that builds or changes the test network failed."""


def run(*command: str, check: bool = True, stdin: str | None = None) -> str:
    """Run one ``ip`` / ``nft`` command; its stdout.  ``NetworkError`` when it fails."""
    try:
        done = subprocess.run(
            list(command),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{' '.join(command)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetworkError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}"
            + (f"\ninput:\n{stdin}" if stdin else "")
        )
    return done.stdout


def require_privileges() -> str | None:
    """What prevents building a test network here (None when nothing does)."""
    if os.geteuid() != 0:
        return (
            "tests/netns build network namespaces, veth links, a bridge and nftables "
            "rules: they need root (CI runs as root); run them as root"
        )
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return (
            f"tests/netns need {' and '.join(missing)}: as root, scripts/system-deps "
            "installs them (scripts/debian-packages.d/netns.txt)"
        )
    return None


def _pytest_alive(pid: int) -> bool:
    """Whether ``pid`` is a live pytest (the owner of names carrying it)."""
    try:
        return b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _owner(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def sweep(only_pid: int | None = None) -> list[str]:
    """Remove namespaces, links and nft tables a dead run left (or, with ``only_pid``,
    those of that pid, live or not); the names removed."""

    def stale(name: str) -> bool:
        pid = _owner(name)
        if pid is None:
            return False
        return pid == only_pid if only_pid is not None else not _pytest_alive(pid)

    removed: list[str] = []
    for line in run("ip", "netns", "list").splitlines():
        ns = line.split()[0] if line.strip() else ""
        if stale(ns):
            _kill_inside(ns)
            run("ip", "netns", "delete", ns, check=False)
            removed.append(ns)
    for link in json.loads(run("ip", "-j", "link", "show") or "[]"):
        name = str(link.get("ifname", ""))
        if stale(name):
            run("ip", "link", "delete", name, check=False)
            removed.append(name)
    for line in run("nft", "list", "tables").splitlines():
        parts = line.split()  # "table bridge xlm123"
        if len(parts) == 3 and stale(parts[2]):
            run("nft", "delete", "table", parts[1], parts[2], check=False)
            removed.append(f"nft {parts[1]} {parts[2]}")
    return removed


def _kill_inside(ns: str) -> None:
    """SIGKILL every process still running in namespace ``ns`` (ours: we started them)."""
    for pid in run("ip", "netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that overlaps no route or address of this machine, picked
    from the pid so that two runs at once usually start on different ones."""
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(run("ip", "-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = str(route.get("dst", ""))
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    for iface in json.loads(run("ip", "-j", "-4", "addr", "show") or "[]"):
        for info in iface.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    subnets = list(SUPERNET.subnets(new_prefix=24))
    start = os.getpid() % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if candidate.network_address.packed[2] in (0, 255):
            continue
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetworkError(f"no free /24 in {SUPERNET}: every one overlaps a route here")


@dataclass
class Node:
    """One host of the test network: a namespace, its veth and its address."""

    name: str  # short name in the test, e.g. "broker1"
    netns: str  # xlm<pid>-<name>
    veth: str  # the root namespace's end, on the bridge
    address: str

    @property
    def host(self) -> Host:
        """The launcher's ``Host``: processes started with it run here."""
        return Host(self.address, ("ip", "netns", "exec", self.netns))

    def pids(self) -> list[int]:
        """Processes running in this namespace now."""
        return [int(p) for p in run("ip", "netns", "pids", self.netns, check=False).split()]


@dataclass
class Network:
    """A bridge and namespaces on a private subnet, and the partitions between them."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    subnet: ipaddress.IPv4Network = field(default_factory=free_subnet)
    nodes: dict[str, Node] = field(default_factory=dict)
    cuts: set[frozenset[str]] = field(default_factory=set)
    isolated: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    _open: bool = False

    @property
    def bridge(self) -> str:
        """The bridge's interface name (at most 15 characters: ``xlm<pid>br``)."""
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        """The bridge's address: how the test process (root namespace) reaches the nodes."""
        return str(self.subnet.network_address + 1)

    def open(self) -> Network:
        """Create the bridge (after removing anything this pid left) and the empty table."""
        sweep(only_pid=int(self.tag[len(PREFIX) :]))
        self._open = True
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        self._apply_rules()
        return self

    def add(self, name: str) -> Node:
        """A new namespace joined to the bridge, with the next address and loopback up."""
        if name in self.nodes:
            raise NetworkError(f"node {name} exists")
        index = len(self.nodes) + 2
        node = Node(name, f"{self.tag}-{name}", f"{self.tag}v{index}", str(self.subnet[index]))
        self.nodes[name] = node
        run("ip", "netns", "add", node.netns)
        run(
            "ip", "link", "add", node.veth, "type", "veth",
            "peer", "name", "eth0", "netns", node.netns,
        )  # fmt: skip
        run("ip", "link", "set", node.veth, "master", self.bridge, "up")
        inside = ("ip", "-n", node.netns)
        run(*inside, "addr", "add", f"{node.address}/{self.subnet.prefixlen}", "dev", "eth0")
        run(*inside, "link", "set", "eth0", "up")
        run(*inside, "link", "set", "lo", "up")
        return node

    def node_of(self, address: str) -> Node:
        """The node that has ``address``."""
        for node in self.nodes.values():
            if node.address == address:
                return node
        raise NetworkError(f"no node has {address}")

    # --- partitions -------------------------------------------------------------------

    def link_down(self, name: str) -> None:
        """Bring the node's link down: it reaches nobody and nobody reaches it."""
        run("ip", "-n", self.nodes[name].netns, "link", "set", "eth0", "down")
        self.down.add(name)

    def link_up(self, name: str) -> None:
        """Bring the node's link back up."""
        run("ip", "-n", self.nodes[name].netns, "link", "set", "eth0", "up")
        self.down.discard(name)

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between nodes ``a`` and ``b`` (both ways)."""
        self.cuts.add(frozenset((self.nodes[a].name, self.nodes[b].name)))
        self._apply_rules()

    def heal(self, a: str, b: str) -> None:
        """Undo ``cut(a, b)``."""
        self.cuts.discard(frozenset((a, b)))
        self._apply_rules()

    def isolate(self, name: str) -> None:
        """Drop every packet between node ``name`` and every other node."""
        self.isolated.add(self.nodes[name].name)
        self._apply_rules()

    def rejoin(self, name: str) -> None:
        """Undo ``isolate(name)``."""
        self.isolated.discard(name)
        self._apply_rules()

    def heal_all(self) -> None:
        """Every cut and isolation undone, every link up."""
        self.cuts.clear()
        self.isolated.clear()
        self._apply_rules()
        for name in list(self.down):
            self.link_up(name)

    def rules(self) -> str:
        """The nft script for the current partitions (the whole table, replaced at once)."""
        lines = []
        for pair in sorted(sorted(p) for p in self.cuts):
            a, b = (self.nodes[n].address for n in pair)
            lines += [f"ip saddr {a} ip daddr {b} drop", f"ip saddr {b} ip daddr {a} drop"]
        for name in sorted(self.isolated):
            address = self.nodes[name].address
            # Forwarded packets only: node to node.  The test process's path (the
            # bridge's own address, hooks input/output) stays open.
            lines += [f"ip saddr {address} drop", f"ip daddr {address} drop"]
        body = "\n".join(f"    {line}" for line in lines)
        return (
            f"table bridge {self.tag}\n"
            f"delete table bridge {self.tag}\n"
            f"table bridge {self.tag} {{\n"
            "  chain partitions {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f"{body}\n"
            "  }\n"
            "}\n"
        )

    def _apply_rules(self) -> None:
        run("nft", "-f", "-", stdin=self.rules())

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this network made: processes left in its namespaces are
        SIGKILLed, then namespaces, veths, the bridge and the nft table go; idempotent."""
        if not self._open:
            return
        for node in self.nodes.values():
            _kill_inside(node.netns)
        with contextlib.suppress(ClusterError):  # (what outlives this is reported below)
            wait_until(
                lambda: not any(node.pids() for node in self.nodes.values()),
                5,
                "the processes of the test's namespaces to exit",
            )
        for node in self.nodes.values():
            run("ip", "link", "delete", node.veth, check=False)
            run("ip", "netns", "delete", node.netns, check=False)
        run("ip", "link", "delete", self.bridge, check=False)
        run("nft", "delete", "table", "bridge", self.tag, check=False)
        self._open = False
        left = sweep(only_pid=int(self.tag[len(PREFIX) :]))
        if left:
            raise NetworkError(f"still there after close(): {left}")
