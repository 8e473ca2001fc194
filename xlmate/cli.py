"""The ``xlmate`` command line: one subcommand per process, plus tools.

Each option is also read from ``XLMATE_<COMMAND>_<OPTION>`` (click's
``auto_envvar_prefix``), e.g. ``XLMATE_EDGE_PORT=8102``; the cluster secret is
``XLMATE_SECRET``.  Commands only build a config and run ``main(config)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click

from xlmate.config import BrokerConfig, DiscoveryConfig, EdgeConfig, cluster_secret
from xlmate.errors import XLMateError
from xlmate.tokens import Clock, mint_seat_token, new_game_id

log = logging.getLogger("xlmate.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request or WebSocket is noise at INFO; keep their warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.root.level))


def _run(coro_main: object) -> None:
    """Run a component's coroutine; XLMateError becomes a clean exit 2."""
    try:
        asyncio.run(coro_main)  # type: ignore[arg-type]
    except XLMateError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def _warn_dev_secret() -> None:
    _, is_dev = cluster_secret()
    if is_dev:
        log.warning(
            "XLMATE_SECRET is not set: using the fixed DEVELOPMENT secret; "
            "anyone can mint seat tokens. Set XLMATE_SECRET in production."
        )


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error")
@click.version_option(package_name="xlmate-realtime")
def cli(log_level: str) -> None:
    """XLMate realtime: live chess over WebSockets, sequenced by a ZeroMQ broker."""
    _setup_logging(log_level)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP API address")
@click.option("--port", default=8100, show_default=True, help="HTTP API port")
@click.option("--rep-host", default="127.0.0.1", show_default=True, help="heartbeat REP address")
@click.option("--rep-port", default=5570, show_default=True, help="heartbeat REP port")
@click.option(
    "--regions",
    "regions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON region distance table (default: built in, see docs/operations.md)",
)
def discovery(
    host: str, port: int, rep_host: str, rep_port: int, regions_file: Path | None
) -> None:
    """Run discovery: edge registry and placement."""
    from discovery.server import main as discovery_main

    config = DiscoveryConfig(
        host=host, port=port, rep_host=rep_host, rep_port=rep_port, regions_file=regions_file
    )
    _run(discovery_main(config))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address of all sockets")
@click.option("--xsub-port", default=5555, show_default=True, help="commands in (edges' PUB)")
@click.option("--xpub-port", default=5556, show_default=True, help="events out (edges' SUB)")
@click.option("--catchup-port", default=5557, show_default=True, help="snapshot/catch-up ROUTER")
@click.option("--http-port", default=8099, show_default=True, help="/healthz and /metrics")
@click.option(
    "--journal-dir",
    default="var/journal",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the journal and archive live",
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
@click.option("--history", default=256, show_default=True, help="events kept per game")
@click.option("--abort-after-ms", default=30_000, show_default=True, help="first-move timeout")
def broker(
    host: str,
    xsub_port: int,
    xpub_port: int,
    catchup_port: int,
    http_port: int,
    journal_dir: Path,
    fsync: str,
    fsync_interval_ms: int,
    heartbeat_ms: int,
    history: int,
    abort_after_ms: int,
) -> None:
    """Run the broker: sequences, checks and journals every game."""
    from broker.server import main as broker_main

    config = BrokerConfig(
        host=host,
        xsub_port=xsub_port,
        xpub_port=xpub_port,
        catchup_port=catchup_port,
        http_port=http_port,
        journal_dir=journal_dir,
        fsync=fsync,  # type: ignore[arg-type]
        fsync_interval_ms=fsync_interval_ms,
        heartbeat_ms=heartbeat_ms,
        history=history,
        abort_after_ms=abort_after_ms,
    )
    _run(broker_main(config))


@cli.command()
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
    "--discovery",
    default="tcp://127.0.0.1:5570",
    show_default=True,
    help="discovery heartbeat endpoint ('' to not register)",
)
@click.option("--heartbeat-ms", default=1000, show_default=True)
@click.option("--capacity", default=10_000, show_default=True, help="max connections (1013 past)")
@click.option("--command-timeout-ms", default=5000, show_default=True)
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
    discovery: str,
    heartbeat_ms: int,
    capacity: int,
    command_timeout_ms: int,
) -> None:
    """Run an edge: terminates players' WebSockets in one region."""
    from edge.server import main as edge_main

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
        discovery=discovery or None,
        heartbeat_ms=heartbeat_ms,
        capacity=capacity,
        command_timeout_ms=command_timeout_ms,
    )
    _run(edge_main(config))


@cli.group()
def game() -> None:
    """Games: mint seat tokens for a new game."""


@game.command("new")
@click.option("--clock", default="10+0", show_default=True, help="minutes+increment seconds")
@click.option("--white", "white_id", help="white's player id (token sub)")
@click.option("--black", "black_id", help="black's player id (token sub)")
@click.option("--game-id", help="use this id instead of a random one")
def game_new(clock: str, white_id: str | None, black_id: str | None, game_id: str | None) -> None:
    """Print a fresh game id and both seat tokens as JSON."""
    secret, is_dev = cluster_secret()
    if is_dev:
        click.echo("warning: XLMATE_SECRET is not set; tokens use the development secret", err=True)
    try:
        time_control = Clock.parse(clock)
        gid = game_id or new_game_id()
        seats = {
            color: {"token": mint_seat_token(secret, gid, color, player_id=pid, clock=time_control)}
            for color, pid in (("white", white_id), ("black", black_id))
        }
    except XLMateError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(json.dumps({"gameId": gid, **seats}))


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="XLMATE")
