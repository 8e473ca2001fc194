"""Settings of each process, as frozen dataclasses with documented defaults.

The CLI (``xlmate.cli``) only builds one of these from its options (each also
read from an ``XLMATE_<COMMAND>_<OPTION>`` environment variable) and calls the
component's ``main(config)``.  Tests build them directly with free ports.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from xlmate.errors import ConfigError
from xlmate.shards import MAX_SHARDS, ShardSpec

FsyncPolicy = Literal["always", "interval", "never"]

DEFAULT_JOURNAL: Final = Path("var/journal")
DEV_SECRET = "xlmate-development-secret-do-not-use-in-production"


def cluster_secret(explicit: str | None = None) -> tuple[str, bool]:
    """The HS256 secret for seat tokens and whether it is the development default."""
    secret = explicit or os.environ.get("XLMATE_SECRET")
    if secret:
        return secret, False
    return DEV_SECRET, True


def tcp(host: str, port: int) -> str:
    """A ZeroMQ TCP endpoint."""
    return f"tcp://{host}:{port}"


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """``xlmate discovery``: HTTP API on ``host:port``, heartbeats on ``rep_port``."""

    host: str = "127.0.0.1"
    port: int = 8100
    rep_host: str = "127.0.0.1"
    rep_port: int = 5570
    regions_file: Path | None = None  # JSON region distance table; None: the built-in one
    curve_dir: Path | None = None  # CURVE keys (xlmate keys); None: plain TCP
    allow_origins: tuple[str, ...] = ("*",)  # browser origins answered with CORS headers
    shards: int | None = None  # the cluster's broker shard count; None: the first broker's

    def __post_init__(self) -> None:
        if self.shards is not None and not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"shards must be 1 to {MAX_SHARDS}, not {self.shards}")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """``xlmate broker``: the sequencer and its three ZeroMQ sockets."""

    host: str = "127.0.0.1"
    xsub_port: int = 5555  # edges' PUB connect here with commands
    xpub_port: int = 5556  # edges' SUB connect here for events
    catchup_port: int = 5557  # ROUTER: open / fetch / pgn requests
    http_port: int = 8099  # /healthz and /metrics
    # The default means var/journal/shard-K-of-N for a shard of N > 1 (__post_init__).
    journal_dir: Path = DEFAULT_JOURNAL
    fsync: FsyncPolicy = "always"
    fsync_interval_ms: int = 50
    heartbeat_ms: int = 500  # control-topic heartbeat carrying the epoch
    history: int = 128  # recent events kept per game for catch-up
    abort_after_ms: int = 30_000  # a side that never makes its first move aborts the game
    max_games: int = 100_000
    curve_dir: Path | None = None  # CURVE keys (xlmate keys); None: plain TCP
    compact_after: int = 1000  # finished games between two journal compactions
    shard: ShardSpec = field(default_factory=ShardSpec)  # this broker's shard K of N
    discovery: str | None = "tcp://127.0.0.1:5570"  # None: do not register
    discovery_heartbeat_ms: int = 1000
    advertise_host: str | None = None  # the host edges connect to (default: host)
    # Broker pairs (docs/architecture.md "Broker pairs"): None means a lone broker, term 0.
    peer: str | None = None  # the other broker's replication endpoint, tcp://HOST:PORT
    repl_port: int = 5580  # where this broker binds its replication ROUTER (with --peer)
    lease_ms: int = 1000  # the lease; a paired broker heartbeats discovery every lease_ms / 4
    standby_wait_ms: int = 1000  # how long an active broker waits for a lost standby

    @property
    def paired(self) -> bool:
        """Whether this broker is one of a pair (``--peer``)."""
        return bool(self.peer)

    @property
    def broker_id(self) -> str:
        """How this broker is named at discovery (the epoch is added per start)."""
        return f"shard-{self.shard.index}-of-{self.shard.count}"

    @property
    def public_host(self) -> str:
        """The host edges connect to: ``advertise_host``, else ``host`` unless that is a
        wildcard (``0.0.0.0``, ``::``, ``*``), then this machine's name."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("0.0.0.0", "::", "*", ""):
            return socket.gethostname()
        return self.host

    def endpoint(self, port: int) -> str:
        """The ZeroMQ endpoint edges use for one of this broker's ports."""
        return tcp(self.public_host, port)

    def __post_init__(self) -> None:
        if self.journal_dir == DEFAULT_JOURNAL and self.shard.sharded:
            object.__setattr__(self, "journal_dir", default_journal_dir(self.shard))
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigError(f"fsync must be always, interval or never, not {self.fsync!r}")
        if self.history < 1:
            raise ConfigError("history must be at least 1")
        if self.compact_after < 1:
            raise ConfigError("compact-after must be at least 1")
        if self.peer:
            if not self.discovery:
                raise ConfigError(
                    "--peer needs --discovery: discovery is the third vote of a broker pair"
                )
            if not self.peer.startswith("tcp://"):
                raise ConfigError(f"--peer must look like tcp://HOST:PORT, not {self.peer!r}")
            if not 400 <= self.lease_ms <= 60_000:
                raise ConfigError("lease-ms must be from 400 to 60000")
            if self.standby_wait_ms < 1:
                raise ConfigError("standby-wait-ms must be at least 1")


def default_journal_dir(shard: ShardSpec) -> Path:
    """``var/journal`` for a lone broker, ``var/journal/shard-K-of-N`` for a shard of N > 1."""
    return (
        DEFAULT_JOURNAL / f"shard-{shard.index}-of-{shard.count}"
        if shard.sharded
        else DEFAULT_JOURNAL
    )


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """``xlmate edge``: one WebSocket server in one region."""

    region: str = "local"
    host: str = "127.0.0.1"
    port: int = 8101
    public_url: str | None = None  # default ws://host:port
    edge_id: str | None = None  # default <region>-<port>
    broker_host: str = "127.0.0.1"
    broker_xsub_port: int = 5555
    broker_xpub_port: int = 5556
    broker_catchup_port: int = 5557
    # Broker shards by hand, "K/N=XSUB,XPUB,CATCHUP" each (edge/shardmap.py); empty: the
    # broker above until discovery's shard map (docs/architecture.md, "Broker shards").
    brokers: tuple[str, ...] = ()
    discovery: str | None = "tcp://127.0.0.1:5570"  # None: do not register
    heartbeat_ms: int = 1000
    capacity: int = 10_000  # connections; more are closed 1013
    max_per_ip: int = 1000  # connections per client address; more are closed 4008
    rate_per_s: float = 20.0  # client messages a second, per socket (token bucket)
    rate_burst: float = 40.0  # messages a socket may send at once before the rate applies
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For names the client
    open_timeout_s: float = 10.0  # a WebSocket handshake must complete within this
    secret: str | None = None  # default XLMATE_SECRET or the development secret
    command_timeout_ms: int = 5000  # pending commands get `unavailable` after this
    request_timeout_ms: int = 2000  # open/fetch/pgn requests to the broker
    drop_events_every: int = 0  # fault injection for tests: drop every Nth bus event
    resend_ms: int = 400  # re-send an unacked command this often
    drain_timeout_ms: int = 5000
    curve_dir: Path | None = None  # CURVE keys (xlmate keys); None: plain TCP
    # Browser origins that may open WebSockets and read the game views ("*": any; a
    # missing Origin, i.e. not a browser, and the edge's own pages are always allowed).
    allow_origins: tuple[str, ...] = ("*",)

    @property
    def url(self) -> str:
        """The WebSocket base URL clients use."""
        return self.public_url or f"ws://{self.host}:{self.port}"

    @property
    def id(self) -> str:
        """This edge's identity on the bus and at discovery."""
        return self.edge_id or f"{self.region}-{self.port}"

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.rate_burst < 1:
            raise ConfigError("rate-per-s must be above 0 and rate-burst at least 1")
        if self.capacity < 1 or self.max_per_ip < 1:
            raise ConfigError("capacity and max-per-ip must be at least 1")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"trusted-proxy must be an IP address or a CIDR block, not {proxy!r}"
                ) from None
