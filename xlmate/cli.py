"""The ``xlmate`` command line: one subcommand per process, plus tools.

Each option is also read from ``XLMATE_<COMMAND>_<OPTION>`` (click's
``auto_envvar_prefix``), e.g. ``XLMATE_EDGE_PORT=8102``; the cluster secret is
``XLMATE_SECRET``.  Commands only build a config and run ``main(config)``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import click

from xlmate import eventloop
from xlmate.config import (
    BrokerConfig,
    DiscoveryConfig,
    EdgeConfig,
    cluster_secret,
    default_journal_dir,
)
from xlmate.errors import XLMateError
from xlmate.shards import ShardSpec
from xlmate.tokens import Clock, mint_seat_token, new_game_id

log = logging.getLogger("xlmate.cli")
FC = TypeVar("FC", bound=Callable[..., Any])


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request or WebSocket is noise at INFO; keep their warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.root.level))


def _run(
    coro_main: Coroutine[Any, Any, None], loop: str | None = None, auto: str = "uvloop"
) -> None:
    """Run a component's coroutine (on the loop ``xlmate.eventloop`` picks); XLMateError
    becomes exit 2."""
    try:
        eventloop.run(coro_main, loop, auto=auto)
    except XLMateError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def _warn_dev_secret() -> None:
    secret, is_dev = cluster_secret()
    if is_dev:
        log.warning(
            "XLMATE_SECRET is not set: using the fixed DEVELOPMENT secret; "
            "anyone can mint seat tokens. Set XLMATE_SECRET in production."
        )
    elif len(secret.encode()) < 32:
        log.warning("XLMATE_SECRET is shorter than 32 bytes: HS256 wants at least 32 random bytes")


curve_option = click.option(
    "--curve-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="XLMATE_CURVE_DIR",
    help="encrypt and authenticate the ZeroMQ sockets with the keys of `xlmate keys DIR`",
)


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error")
@click.version_option(package_name="xlmate-realtime")
def cli(log_level: str) -> None:
    """XLMate realtime: live chess over WebSockets, sequenced by a ZeroMQ broker."""
    _setup_logging(log_level)


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--allow-origin`` values (repeated and/or comma-separated), checked."""
    from xlmate.httpd import OriginPolicy

    try:
        return OriginPolicy.parse(values).origins
    except XLMateError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-origin") from exc


def allow_origin_option(help_text: str) -> Callable[[FC], FC]:
    """``--allow-origin``: repeatable or comma-separated origins; default any (``*``)."""
    return click.option(
        "--allow-origin",
        "allow_origins",
        multiple=True,
        help=help_text + " (repeat or comma-separate; default *: any; docs/browser.md)",
    )


@cli.command()
@curve_option
@allow_origin_option("browser origins answered with CORS headers, e.g. https://play.example.com")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP API address")
@click.option("--port", default=8100, show_default=True, help="HTTP API port")
@click.option("--rep-host", default="127.0.0.1", show_default=True, help="heartbeat REP address")
@click.option("--rep-port", default=5570, show_default=True, help="heartbeat REP port")
@click.option(
    "--regions",
    "regions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON region distance table (default: built in, see docs/discovery.md)",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    default=None,
    help="the cluster's broker shard count; brokers with another count are refused "
    "(default: the count of the first broker that registers)",
)
def discovery(
    curve_dir: Path | None,
    allow_origins: tuple[str, ...],
    host: str,
    port: int,
    rep_host: str,
    rep_port: int,
    regions_file: Path | None,
    shards: int | None,
) -> None:
    """Run discovery: edge registry and placement."""
    from xlmate.discovery.server import main as discovery_main

    config = DiscoveryConfig(
        host=host,
        port=port,
        rep_host=rep_host,
        rep_port=rep_port,
        regions_file=regions_file,
        curve_dir=curve_dir,
        allow_origins=_origins(allow_origins),
        shards=shards,
    )
    _run(discovery_main(config))


@cli.command()
@curve_option
@click.option("--host", default="127.0.0.1", show_default=True, help="address of all sockets")
@click.option("--xsub-port", default=5555, show_default=True, help="commands in (edges' PUB)")
@click.option("--xpub-port", default=5556, show_default=True, help="events out (edges' SUB)")
@click.option("--catchup-port", default=5557, show_default=True, help="snapshot/catch-up ROUTER")
@click.option("--http-port", default=8099, show_default=True, help="/healthz and /metrics")
@click.option(
    "--journal-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the journal and archive live "
    "[default: var/journal, or var/journal/shard-K-of-N with --shard K/N and N > 1]",
)
@click.option(
    "--shard",
    "shard_text",
    default="1/1",
    show_default=True,
    help="this broker's shard K of the cluster's N, e.g. 1/2 (docs/architecture.md)",
)
@click.option(
    "--discovery",
    "discovery_endpoint",
    default="tcp://127.0.0.1:5570",
    show_default=True,
    help="discovery heartbeat endpoint, where edges learn this shard's addresses "
    "('' to not register)",
)
@click.option("--discovery-heartbeat-ms", default=1000, show_default=True)
@click.option(
    "--advertise-host",
    default=None,
    help="the host edges connect to, given to discovery (default: --host)",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "interval", "never"]),
    default="always",
    show_default=True,
    help="journal durability (docs/reliability.md)",
)
@click.option("--fsync-interval-ms", default=50, show_default=True)
@click.option("--heartbeat-ms", default=500, show_default=True, help="control-topic heartbeat")
@click.option("--history", default=128, show_default=True, help="events kept per game")
@click.option("--abort-after-ms", default=30_000, show_default=True, help="first-move timeout")
@click.option(
    "--compact-after",
    default=1000,
    show_default=True,
    help="finished games between two compactions of the journal",
)
def broker(
    host: str,
    xsub_port: int,
    xpub_port: int,
    catchup_port: int,
    http_port: int,
    journal_dir: Path | None,
    fsync: str,
    fsync_interval_ms: int,
    heartbeat_ms: int,
    history: int,
    abort_after_ms: int,
    compact_after: int,
    curve_dir: Path | None,
    shard_text: str,
    discovery_endpoint: str,
    discovery_heartbeat_ms: int,
    advertise_host: str | None,
) -> None:
    """Run a broker: sequences, checks and journals every game of its shard."""
    from xlmate.broker.server import main as broker_main

    try:
        shard = ShardSpec.parse(shard_text)
    except XLMateError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from exc
    config = BrokerConfig(
        host=host,
        xsub_port=xsub_port,
        xpub_port=xpub_port,
        catchup_port=catchup_port,
        http_port=http_port,
        journal_dir=journal_dir or default_journal_dir(shard),
        fsync=fsync,  # type: ignore[arg-type]
        fsync_interval_ms=fsync_interval_ms,
        heartbeat_ms=heartbeat_ms,
        history=history,
        abort_after_ms=abort_after_ms,
        curve_dir=curve_dir,
        compact_after=compact_after,
        shard=shard,
        discovery=discovery_endpoint or None,
        discovery_heartbeat_ms=discovery_heartbeat_ms,
        advertise_host=advertise_host,
    )
    _run(broker_main(config))


@cli.command()
@curve_option
@allow_origin_option(
    "browser origins that may open WebSockets and read the game views; requests "
    "without Origin (not a browser) and this edge's own pages are always allowed"
)
@click.option("--region", required=True, help="this edge's region, e.g. eu-west")
@click.option("--host", default="127.0.0.1", show_default=True, help="WebSocket/HTTP address")
@click.option("--port", default=8101, show_default=True, help="WebSocket/HTTP port")
@click.option("--public-url", help="URL clients use (default ws://HOST:PORT)")
@click.option("--id", "edge_id", help="edge identity (default REGION-PORT)")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-xsub-port", default=5555, show_default=True)
@click.option("--broker-xpub-port", default=5556, show_default=True)
@click.option("--broker-catchup-port", default=5557, show_default=True)
@click.option(
    "--broker",
    "brokers",
    multiple=True,
    help="a broker shard by hand, K/N=XSUB,XPUB,CATCHUP (repeat for each shard; then "
    "discovery's shard map is not used); without it: --broker-host and its ports until "
    "discovery's map",
)
@click.option(
    "--discovery",
    default="tcp://127.0.0.1:5570",
    show_default=True,
    help="discovery heartbeat endpoint ('' to not register)",
)
@click.option("--heartbeat-ms", default=1000, show_default=True)
@click.option("--capacity", default=10_000, show_default=True, help="max connections (1013 past)")
@click.option("--command-timeout-ms", default=5000, show_default=True)
@click.option("--max-per-ip", default=1000, show_default=True, help="sockets per client address")
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="a proxy address whose X-Forwarded-For names the client (repeatable)",
)
@click.option(
    "--open-timeout", default=10.0, show_default=True, help="seconds to complete a handshake"
)
@click.option(
    "--drop-events-every",
    default=0,
    hidden=True,
    help="fault injection for tests: drop every Nth event received from the broker",
)
def edge(
    region: str,
    host: str,
    port: int,
    public_url: str | None,
    edge_id: str | None,
    broker_host: str,
    broker_xsub_port: int,
    broker_xpub_port: int,
    broker_catchup_port: int,
    brokers: tuple[str, ...],
    discovery: str,
    heartbeat_ms: int,
    capacity: int,
    command_timeout_ms: int,
    max_per_ip: int,
    trusted_proxies: tuple[str, ...],
    open_timeout: float,
    drop_events_every: int,
    curve_dir: Path | None,
    allow_origins: tuple[str, ...],
) -> None:
    """Run an edge: terminates players' WebSockets in one region."""
    from xlmate.edge.server import main as edge_main

    _warn_dev_secret()
    config = EdgeConfig(
        region=region,
        host=host,
        port=port,
        public_url=public_url,
        edge_id=edge_id,
        broker_host=broker_host,
        broker_xsub_port=broker_xsub_port,
        broker_xpub_port=broker_xpub_port,
        broker_catchup_port=broker_catchup_port,
        brokers=brokers,
        discovery=discovery or None,
        heartbeat_ms=heartbeat_ms,
        capacity=capacity,
        command_timeout_ms=command_timeout_ms,
        max_per_ip=max_per_ip,
        trusted_proxies=trusted_proxies,
        open_timeout_s=open_timeout,
        drop_events_every=drop_events_every,
        curve_dir=curve_dir,
        allow_origins=_origins(allow_origins),
    )
    _run(edge_main(config), auto="asyncio")  # (eventloop.py: uvloop stalls with many sockets)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="replace existing keys")
def keys(directory: Path, force: bool) -> None:
    """Generate CURVE key pairs for the broker, discovery and edges into DIRECTORY."""
    from xlmate.curve import generate

    try:
        written = generate(directory, force=force)
    except XLMateError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(str(path))
    click.echo(
        f"start every process with --curve-dir {directory} (or XLMATE_CURVE_DIR); "
        "see docs/security.md for which host needs which file",
        err=True,
    )


@cli.group()
def game() -> None:
    """Games: mint seat tokens for a new game."""


@game.command("new")
@click.option("--clock", default="10+0", show_default=True, help="minutes+increment seconds")
@click.option("--white", "white_id", help="white's player id (token sub)")
@click.option("--black", "black_id", help="black's player id (token sub)")
@click.option("--game-id", help="use this id instead of a random one")
@click.option(
    "--edge-url",
    default="http://127.0.0.1:8101",
    show_default=True,
    help="an edge's HTTP base for the play and watch page URLs",
)
@click.option(
    "--discovery-url",
    default="http://127.0.0.1:8100",
    show_default=True,
    help="discovery's HTTP base the pages ask for an edge ('' to use the page's edge only)",
)
def game_new(
    clock: str,
    white_id: str | None,
    black_id: str | None,
    game_id: str | None,
    edge_url: str,
    discovery_url: str,
) -> None:
    """Print a fresh game id, both seat tokens and the play/watch page URLs as JSON."""
    secret, is_dev = cluster_secret()
    if is_dev:
        click.echo("warning: XLMATE_SECRET is not set; tokens use the development secret", err=True)
    try:
        time_control = Clock.parse(clock)
        gid = game_id or new_game_id()
        seats = {
            "white": {
                "token": mint_seat_token(
                    secret, gid, "white", player_id=white_id, clock=time_control
                )
            },
            "black": {
                "token": mint_seat_token(
                    secret, gid, "black", player_id=black_id, clock=time_control
                )
            },
        }
    except XLMateError as exc:
        raise click.BadParameter(str(exc)) from exc
    base = edge_url.rstrip("/")
    extra = {"discovery": discovery_url.rstrip("/")} if discovery_url else {}
    for seat in seats.values():
        seat["url"] = f"{base}/play/{gid}?{urlencode({'token': seat['token'], **extra})}"
    watch = f"{base}/watch/{gid}" + (f"?{urlencode(extra)}" if extra else "")
    click.echo(json.dumps({"gameId": gid, **seats, "watchUrl": watch}))


@cli.command()
@click.option("--games", default=100, show_default=True, help="concurrent games driven")
@click.option("--rate", type=float, help="open loop: moves/s offered across all games")
@click.option("--duration", default=10.0, show_default=True, help="seconds measured")
@click.option("--warmup", default=2.0, show_default=True, help="seconds of load before measuring")
@click.option("--think-ms", default=0.0, show_default=True, help="closed loop: pause per move")
@click.option("--discovery", "discovery_url", help="drive a running cluster (XLMATE_SECRET)")
@click.option("--target-url", "target_urls", multiple=True, help="drive a plain relay (repeat)")
@click.option("--edges", default=2, show_default=True, help="edges of the cluster it starts")
@click.option(
    "--shards", default=1, show_default=True, help="broker shards of the cluster it starts"
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "interval", "never"]),
    default="always",
    show_default=True,
    help="journal durability of the broker it starts",
)
@click.option(
    "--client",
    type=click.Choice(["thin", "gameclient"]),
    default="thin",
    show_default=True,
    help="raw websockets, or xlmate.client.GameClient",
)
@click.option(
    "--compression/--no-compression",
    default=True,
    show_default=True,
    help="offer permessage-deflate, as browsers do",
)
@click.option("--idle-connections", default=0, show_default=True, help="extra idle sockets")
@click.option("--idle-seconds", default=3.0, show_default=True, help="idle-CPU window")
@click.option("--scaling", help="CPU per move at these live-game levels, e.g. 100,1000,5000")
@click.option("--seed", default=1, show_default=True, help="seed of the scripted games")
@click.option("--max-plies", default=160, show_default=True, help="resign after this many")
@click.option(
    "--watch",
    multiple=True,
    help="also report process NAME=PID[@WS_URL] (the URL ties it to a relay's sockets)",
)
@click.option("--workdir", help="keep the started cluster's logs and journal here")
@click.option("--label", help="name of the target in the report")
@click.option("--json", "json_output", is_flag=True, help="print JSON instead of the table")
@click.option("--quiet", is_flag=True, help="no progress line on stderr")
def bench(
    games: int,
    rate: float | None,
    duration: float,
    warmup: float,
    think_ms: float,
    discovery_url: str | None,
    target_urls: tuple[str, ...],
    edges: int,
    shards: int,
    fsync: str,
    client: str,
    compression: bool,
    idle_connections: int,
    idle_seconds: float,
    scaling: str | None,
    seed: int,
    max_plies: int,
    watch: tuple[str, ...],
    workdir: str | None,
    label: str | None,
    json_output: bool,
    quiet: bool,
) -> None:
    """Load-test a cluster (started here, or --discovery) or a relay (--target-url)."""
    try:
        from xlmate_bench.config import BenchConfig, parse_levels, parse_watch
        from xlmate_bench.runner import main as bench_main
    except ImportError as exc:  # the load generator's dependencies are an optional extra
        raise click.ClickException(
            f"xlmate bench needs the bench extra ({exc.name} is missing): pip install -e '.[bench]'"
        ) from exc
    try:
        config = BenchConfig(
            games=games,
            rate=rate,
            duration=duration,
            warmup=warmup,
            think_ms=think_ms,
            discovery_url=discovery_url,
            target_urls=target_urls,
            edges=edges,
            shards=shards,
            fsync=fsync,  # type: ignore[arg-type]
            client=client,  # type: ignore[arg-type]
            compression=compression,
            idle_connections=idle_connections,
            idle_seconds=idle_seconds,
            scaling=parse_levels(scaling),
            seed=seed,
            max_plies=max_plies,
            watch=parse_watch(watch),
            workdir=workdir,
            label=label,
            json_output=json_output,
            progress=not quiet,
        )
    except XLMateError as exc:
        raise click.ClickException(str(exc)) from exc
    # The load generator stays on asyncio's own loop, whatever XLMATE_LOOP says: with
    # 10,000 sockets uvloop stalls (xlmate/eventloop.py), which would be charged to the
    # target's latency.
    _run(bench_main(config), loop="asyncio")


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="XLMATE")
