"""What one ``xlmate bench`` run does, as a frozen dataclass validated when built.

Three kinds of target:

- ``launch``: start a local cluster (``targets.start_cluster``) and drive it;
- ``discovery``: drive a running cluster; seats are minted with
  ``XLMATE_SECRET`` (like ``xlmate game new``) and placed by discovery;
- ``relay``: connect players straight to ``{url}/v1/games/{id}/ws`` of plain
  relays (the baselines in ``benchmarks/``), or to Socket.IO servers
  (``relay_protocol="socketio"``); relays do not ack, so a move "lands" when
  the opponent receives it, exactly as for the cluster.

Two load shapes: closed loop (``rate is None``: each game has exactly one move
in flight, the next is sent when the opponent received the last) and open loop
(``rate`` moves/s offered across all games, each game still one move at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from xlmate_bench import BenchError

ClientKind = Literal["thin", "gameclient"]
RelayProtocol = Literal["ws", "socketio"]
FsyncPolicy = Literal["always", "interval", "never"]

DEFAULT_REGIONS: Final = ("eu-west", "us-east", "ap-south", "sa-east", "af-south", "oc-east")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One benchmark run; see the module docstring."""

    games: int = 100
    rate: float | None = None  # moves/s across all games (open loop); None: closed loop
    duration: float = 10.0  # seconds measured
    warmup: float = 2.0  # seconds of load before measuring
    think_ms: float = 0.0  # pause before each move (closed loop)
    # targets: at most one of discovery_url / target_urls; neither means "launch"
    discovery_url: str | None = None
    target_urls: tuple[str, ...] = ()
    relay_protocol: RelayProtocol = "ws"  # relays: plain WebSocket frames, or Socket.IO 4
    edges: int = 2
    shards: int = 1  # broker shards of the launched cluster
    regions: tuple[str, ...] = DEFAULT_REGIONS
    fsync: FsyncPolicy = "always"
    client: ClientKind = "thin"
    compression: bool = True  # offer permessage-deflate, as browsers do
    idle_connections: int = 0
    idle_seconds: float = 3.0  # idle-CPU window with only idle connections open
    scaling: tuple[int, ...] = ()  # live-game levels for the CPU-per-move scenario
    level_idle_s: float = 0.0  # scaling: an idle window per level too (idle vs move cost)
    seed: int = 1
    pool: int = 64  # distinct scripted games, reused round-robin
    max_plies: int = 160
    move_timeout: float = 10.0  # a move not received by then is an error
    clock: str = "60+0"  # time control of minted seats (minutes+increment)
    watch: tuple[tuple[str, int], ...] = ()  # extra processes to report: (name, pid)
    workdir: str | None = None  # cluster logs/journal; default: a temp dir, removed
    json_output: bool = False
    progress: bool = True
    per_address: int = 900  # connections per (source address, edge): under max_per_ip=1000
    label: str | None = None  # names the target in the report (benchmarks/run sets it)

    def __post_init__(self) -> None:
        if self.games < 1:
            raise BenchError("--games must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise BenchError("--rate must be positive")
        if self.duration <= 0 or self.warmup < 0:
            raise BenchError("--duration must be positive and --warmup not negative")
        if self.discovery_url and self.target_urls:
            raise BenchError("give --discovery or --target-url, not both")
        if self.edges < 1:
            raise BenchError("--edges must be at least 1")
        if not 1 <= self.shards <= 256:
            raise BenchError("--shards must be 1 to 256")
        if self.shards > 1 and self.target != "launch":
            raise BenchError("--shards sets up the cluster it starts: not with --discovery")
        if self.scaling and self.rate is None:
            raise BenchError("--scaling needs --rate: CPU per move is measured at a fixed rate")
        if self.scaling and self.target_urls:
            raise BenchError("--scaling measures the cluster, not relays")
        if self.level_idle_s < 0 or (self.level_idle_s and not self.scaling):
            raise BenchError("--level-idle is a positive number of seconds, with --scaling")
        if self.relay_protocol != "ws" and not self.target_urls:
            raise BenchError("--relay-protocol is for relays (--target-url)")
        if self.client == "gameclient" and self.target_urls:
            raise BenchError("--client gameclient speaks to the cluster only (relays send no sync)")
        if self.idle_connections < 0:
            raise BenchError("--idle-connections must not be negative")
        if not 0 < self.per_address <= 1000:
            raise BenchError("per_address must be in 1..1000 (the edges' per-IP limit)")
        if len(self.regions) < 1:
            raise BenchError("at least one region")

    @property
    def target(self) -> Literal["launch", "discovery", "relay"]:
        """Which kind of target this run drives."""
        if self.target_urls:
            return "relay"
        if self.discovery_url:
            return "discovery"
        return "launch"

    @property
    def mode(self) -> str:
        """``closed`` or ``open`` loop."""
        return "closed" if self.rate is None else "open"


def parse_levels(text: str | None) -> tuple[int, ...]:
    """``"100,1000,5000"`` -> ``(100, 1000, 5000)``; None or empty -> ``()``."""
    if not text:
        return ()
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise BenchError(f"--scaling takes numbers like 100,1000,5000, not {text!r}") from exc
    if any(level < 1 for level in levels):
        raise BenchError("--scaling levels must be positive")
    return levels


def parse_watch(items: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``("relay=123@ws://127.0.0.1:9000",)`` -> ``(("relay@ws://127.0.0.1:9000", 123),)``."""
    out = []
    for item in items:
        name, sep, rest = item.partition("=")
        pid, _, url = rest.partition("@")
        if not sep or not name or not pid.isdigit():
            raise BenchError(f"--watch takes NAME=PID[@WS_URL], not {item!r}")
        out.append((f"{name}@{url}" if url else name, int(pid)))
    return tuple(out)
