"""The ``xlmate`` command line: one subcommand per process, plus tools.

Each option is also read from ``XLMATE_<COMMAND>_<OPTION>`` (click's
``auto_envvar_prefix``), e.g. ``XLMATE_EDGE_PORT=8102``; the cluster secret is
``XLMATE_SECRET``.  Commands only build a config and run ``main(config)``.

The process commands (discovery, broker, edge) declare each option once, in a
table of ``Opt`` rows naming a field of the command's config dataclass
(``xlmate.config``): the option's type, default and whether it repeats come
from that field, so the dataclass stays the one place a default lives, and the
command receives the built config.  Ports a process listens on are marked, so a
port in use becomes one line naming the option and its variable (exit 2).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import signal
import socket
import types
import typing
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

import click

from xlmate import eventloop, logs, secret_policy
from xlmate.config import BrokerConfig, DiscoveryConfig, EdgeConfig, cluster_secret
from xlmate.errors import XLMateError
from xlmate.shards import ShardSpec
from xlmate.tokens import Clock, mint_seat_token, new_game_id

log = logging.getLogger("xlmate.cli")

C = TypeVar("C")


class Refusal(click.ClickException):
    """A setting the process cannot start with: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


@dataclass(frozen=True)
class Opt:
    """One option of a process command, bound to the config field ``name``.

    ``flag`` defaults to ``--name-with-dashes``; ``listens_on`` names the host
    field of a port the process binds (for the port-in-use message).
    """

    name: str
    help: str
    flag: str | None = None
    required: bool = False
    hidden: bool = False
    listens_on: str | None = None
    type: Any = None  # the click type, when the field's own type does not say enough
    convert: Callable[[Any], Any] | None = None  # click's value -> the field's value

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _click_type(hint: Any) -> tuple[Any, bool, bool]:
    """(click type, multiple, optional) for a config field's type hint."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)]), False, optional
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True, optional
    if hint is Path:
        return click.Path(file_okay=False, path_type=Path), False, optional
    return hint, False, optional


def _envvars(command: str, opt: Opt) -> list[str]:
    """``XLMATE_<COMMAND>_<OPTION>``, and the field's name where it differs (older releases)."""
    if opt.name == "curve_dir":
        return ["XLMATE_CURVE_DIR"]
    names = [opt.option[2:], opt.name]
    return list(dict.fromkeys(f"XLMATE_{command}_{n}".upper().replace("-", "_") for n in names))


def _params(command: str, config_cls: type[Any], options: Sequence[Opt]) -> list[click.Parameter]:
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    params: list[click.Parameter] = []
    for opt in options:
        spec = fields[opt.name]
        kind, multiple, _ = _click_type(hints[opt.name])
        kind = opt.type or kind
        if spec.default is not dataclasses.MISSING:
            default: Any = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = None
        params.append(
            click.Option(
                [opt.option, opt.name],
                type=kind,
                multiple=multiple,
                default=None if opt.required else (default if default != () else None),
                required=opt.required,
                show_default=default not in (None, ()),
                show_envvar=True,
                hidden=opt.hidden,
                help=opt.help,
                envvar=_envvars(command, opt),
            )
        )
    return params


def _build(config_cls: type[C], kwargs: dict[str, Any], options: Sequence[Opt] = ()) -> C:
    """The config from click's values: ``''`` means None for optional fields."""
    hints = typing.get_type_hints(config_cls)
    converters = {opt.name: opt.convert for opt in options if opt.convert is not None}
    values: dict[str, Any] = {}
    for name, value in kwargs.items():
        _, multiple, optional = _click_type(hints[name])
        if multiple:
            value = tuple(value)
        elif optional and value == "":
            value = None
        if name in converters:
            value = converters[name](value)
        values[name] = value
    try:
        return config_cls(**values)
    except XLMateError as exc:
        raise click.UsageError(str(exc)) from exc


def process_command(
    name: str, config_cls: type[C], options: Sequence[Opt]
) -> Callable[[Callable[[C], None]], click.Command]:
    """Register ``xlmate NAME``: its options from ``options``, its callback gets the config."""

    def decorate(run: Callable[[C], None]) -> click.Command:
        def callback(**kwargs: Any) -> None:
            config = _build(config_cls, kwargs, options)
            try:
                run(config)
            except BaseException as exc:
                port = _port_in_use(exc, config, options)
                if port is None:
                    raise
                env = f"XLMATE_{name.upper()}_{port.name.upper()}"
                value = getattr(config, port.name)
                raise Refusal(
                    f"{name}: port {value} is in use (set {port.option} or {env})"
                ) from None

        command = click.Command(
            name, callback=callback, params=_params(name, config_cls, options), help=run.__doc__
        )
        cli.add_command(command)
        return command

    return decorate


def _port_in_use(exc: BaseException, config: Any, options: Sequence[Opt]) -> Opt | None:
    """The listening option whose port another process holds, if ``exc`` says so."""
    chain: BaseException | None = exc
    while chain is not None and getattr(chain, "errno", None) != errno.EADDRINUSE:
        chain = chain.__cause__ or chain.__context__
    if chain is None:
        return None
    for opt in options:
        if opt.listens_on is None:
            continue
        host, port = getattr(config, opt.listens_on), getattr(config, opt.name)
        if port and not _can_bind(host, port):
            return opt
    return None


def _can_bind(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (as asyncio and libzmq do, SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host if host not in ("*", "") else "0.0.0.0", port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def _stop_cleanly(signum: int, _frame: Any) -> NoReturn:
    """SIGTERM before the event loop takes over (or after it let go) is a clean stop."""
    raise SystemExit(0)


def _run(
    coro_main: Coroutine[Any, Any, None], loop: str | None = None, auto: str = "uvloop"
) -> None:
    """Run a component's coroutine (on the loop ``xlmate.eventloop`` picks); XLMateError
    becomes exit 2, SIGINT and SIGTERM exit 0."""
    try:
        eventloop.run(coro_main, loop, auto=auto)
    except XLMateError as exc:
        if getattr(exc.__cause__, "errno", None) == errno.EADDRINUSE:
            raise
        raise Refusal(f"error: {exc}") from exc
    except KeyboardInterrupt:
        pass


def _announce(component: str, node: str, curve_dir: Path | None, zmq_host: str) -> None:
    """Name the process in every log line and say whether ZeroMQ traffic is encrypted
    (a warning when that traffic leaves the host unencrypted)."""
    logs.set_context(component=component, node=node)
    if curve_dir is not None:
        logs.event(log, "curve", f"{component}: CURVE on (keys in {curve_dir})", curve=True)
        return
    local = secret_policy.is_loopback(zmq_host)
    logs.event(
        log,
        "curve",
        f"{component}: CURVE off: ZeroMQ traffic is plain TCP"
        + ("" if local else " (set --curve-dir or XLMATE_CURVE_DIR, docs/security.md)"),
        logging.INFO if local else logging.WARNING,
        curve=False,
    )


@click.group()
@click.option(
    "--log-level", default="info", show_default=True, show_envvar=True, help="debug, info, ..."
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    show_envvar=True,
    help="text for people; json (one object a line) for log pipelines",
)
@click.option(
    "--log-time",
    type=click.Choice(logs.TIME_CHOICES),
    default="auto",
    show_default=True,
    show_envvar=True,
    help="timestamps in text logs; auto leaves them to honcho or journald when either runs us",
)
@click.version_option(package_name="xlmate-realtime")
def cli(log_level: str, log_format: logs.LogFormat, log_time: logs.LogTime) -> None:
    """XLMate realtime: live chess over WebSockets, sequenced by a ZeroMQ broker."""
    logs.setup(log_level, log_format, log_time)


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--allow-origin`` values (repeated and/or comma-separated), checked."""
    from xlmate.httpd import OriginPolicy

    try:
        return OriginPolicy.parse(values).origins
    except XLMateError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-origin") from exc


def allow_origin(help_text: str) -> Opt:
    """``--allow-origin``: repeatable or comma-separated origins; default any (``*``)."""
    return Opt(
        "allow_origins",
        help_text + " (repeat or comma-separate; default *: any; docs/browser.md)",
        flag="--allow-origin",
        convert=_origins,
    )


CURVE = Opt(
    "curve_dir", "encrypt and authenticate the ZeroMQ sockets with the keys of `xlmate keys DIR`"
)

DISCOVERY_OPTIONS = (
    CURVE,
    allow_origin("browser origins answered with CORS headers, e.g. https://play.example.com"),
    Opt("host", "HTTP API address"),
    Opt("port", "HTTP API port", listens_on="host"),
    Opt("rep_host", "heartbeat REP address"),
    Opt("rep_port", "heartbeat REP port", listens_on="rep_host"),
    Opt(
        "regions_file",
        "JSON region distance table (default: built in, docs/discovery.md)",
        flag="--regions",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    ),
    Opt(
        "shards",
        "the cluster's broker shard count; a broker with another count is refused "
        "(default: the count of the first broker that registers)",
        type=click.IntRange(1, 256),
    ),
)


@process_command("discovery", DiscoveryConfig, DISCOVERY_OPTIONS)
def discovery(config: DiscoveryConfig) -> None:
    """Run discovery: edge registry and placement."""
    from xlmate.discovery.server import main as discovery_main

    node = f"{socket.gethostname()}:{config.port}"
    _announce("discovery", node, config.curve_dir, config.rep_host)
    _run(discovery_main(config))


BROKER_OPTIONS = (
    CURVE,
    Opt("host", "address of all sockets"),
    Opt("xsub_port", "commands in (edges' PUB)", listens_on="host"),
    Opt("xpub_port", "events out (edges' SUB)", listens_on="host"),
    Opt("catchup_port", "snapshot/catch-up ROUTER", listens_on="host"),
    Opt("http_port", "/healthz and /metrics", listens_on="host"),
    Opt("journal_dir", "where the journal and archive live"),
    Opt("fsync", "journal durability (docs/reliability.md)"),
    Opt("fsync_interval_ms", "with --fsync interval: milliseconds between two fsyncs"),
    Opt("heartbeat_ms", "control-topic heartbeat"),
    Opt("history", "events kept per game"),
    Opt("abort_after_ms", "first-move timeout"),
    Opt("compact_after", "finished games between two compactions of the journal"),
    Opt(
        "shard",
        "this broker's shard K of the cluster's N, e.g. 1/2 (docs/architecture.md); "
        "with N > 1 the default journal dir is var/journal/shard-K-of-N",
        type=str,
        convert=lambda text: _shard(text),
    ),
    Opt(
        "discovery",
        "discovery heartbeat endpoint, where edges learn this shard's addresses "
        "('' to not register)",
    ),
    Opt("discovery_heartbeat_ms", "heartbeat to discovery every this many ms"),
    Opt("advertise_host", "the host edges connect to, told to discovery (default: --host)"),
    Opt(
        "peer",
        "the other broker of this shard's pair, tcp://HOST:PORT of its --repl-port "
        "(needs --discovery; docs/architecture.md, Broker pairs)",
    ),
    Opt(
        "repl_port",
        "with --peer: where this broker binds its replication socket",
        listens_on="host",
    ),
    Opt("lease_ms", "with --peer: the lease; heartbeats to discovery every lease/4"),
    Opt("standby_wait_ms", "with --peer: how long to wait for a lost standby before going alone"),
)


def _shard(text: str) -> ShardSpec:
    """``--shard K/N``, checked."""
    try:
        return ShardSpec.parse(str(text))
    except XLMateError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from exc


@process_command("broker", BrokerConfig, BROKER_OPTIONS)
def broker(config: BrokerConfig) -> None:
    """Run the broker: sequences, checks and journals every game."""
    from xlmate.broker.server import main as broker_main

    node = f"{socket.gethostname()}:{config.xsub_port}"
    _announce("broker", node, config.curve_dir, config.host)
    _run(broker_main(config))


EDGE_OPTIONS = (
    CURVE,
    allow_origin(
        "browser origins that may open WebSockets and read the game views; requests "
        "without Origin (not a browser) and this edge's own pages are always allowed"
    ),
    Opt("region", "this edge's region, e.g. eu-west", required=True),
    Opt("host", "WebSocket/HTTP address"),
    Opt("port", "WebSocket/HTTP port", listens_on="host"),
    Opt(
        "public_url",
        "URL clients use, as discovery hands it out (default ws://HOST:PORT); "
        "behind a proxy, e.g. wss://play.example.net/edge/eu-west-8101",
    ),
    Opt("edge_id", "edge identity (default REGION-PORT)", flag="--id"),
    Opt("broker_host", "the broker's address"),
    Opt("broker_xsub_port", "the broker's command port"),
    Opt("broker_xpub_port", "the broker's event port"),
    Opt("broker_catchup_port", "the broker's catch-up port"),
    Opt(
        "brokers",
        "a broker shard by hand, K/N=XSUB,XPUB,CATCHUP (repeat for each shard, twice for a "
        "shard served by a broker pair; discovery's shard map is then not used); without "
        "it: --broker-host and its ports until discovery's map",
        flag="--broker",
    ),
    Opt("discovery", "discovery heartbeat endpoint ('' to not register)"),
    Opt("heartbeat_ms", "heartbeat to discovery every this many ms"),
    Opt("capacity", "sockets on this edge; more are closed 1013 (edge full)"),
    Opt("max_per_ip", "sockets per client address; more are closed 4008"),
    Opt("rate_per_s", "client messages a second per socket; more get `rate_limited`"),
    Opt("rate_burst", "messages a socket may send at once before --rate-per-s applies"),
    Opt("command_timeout_ms", "a command the broker has not confirmed by then gets `unavailable`"),
    Opt(
        "trusted_proxies",
        "a proxy address or CIDR block whose X-Forwarded-For (last hop) names the client, "
        "e.g. 127.0.0.1 behind nginx on the host, the pod network on Kubernetes (repeatable)",
        flag="--trusted-proxy",
    ),
    Opt("open_timeout_s", "seconds to complete a handshake", flag="--open-timeout"),
    Opt(
        "drop_events_every",
        "fault injection for tests: drop every Nth event from the broker",
        hidden=True,
    ),
)


@process_command("edge", EdgeConfig, EDGE_OPTIONS)
def edge(config: EdgeConfig) -> None:
    """Run an edge: terminates players' WebSockets in one region."""
    from xlmate.edge.server import main as edge_main

    secret, is_dev = cluster_secret(config.secret)
    refusal, warning = secret_policy.check(config.host, secret, is_dev)
    if refusal is not None:
        raise Refusal(f"edge: {refusal}")
    _announce("edge", config.id, config.curve_dir, config.broker_host)
    if warning is not None:
        log.warning("edge: %s", warning)
    _run(edge_main(config))  # uvloop, with the GC freezer (xlmate/gcfreeze.py)


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
@click.option(
    "--relay-protocol",
    type=click.Choice(["ws", "socketio"]),
    default="ws",
    show_default=True,
    help="relays: plain WebSocket frames, or Socket.IO 4 (benchmarks/socketio)",
)
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
@click.option(
    "--level-idle",
    default=0.0,
    show_default=True,
    help="scaling: also measure each level this many seconds with no move, to split "
    "idle cost (CPU per socket per second) from move cost",
)
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
    relay_protocol: str,
    edges: int,
    shards: int,
    fsync: str,
    client: str,
    compression: bool,
    idle_connections: int,
    idle_seconds: float,
    scaling: str | None,
    level_idle: float,
    seed: int,
    max_plies: int,
    watch: tuple[str, ...],
    workdir: str | None,
    label: str | None,
    json_output: bool,
    quiet: bool,
) -> None:
    """Load-test a cluster (started here, or --discovery) or a relay (--target-url).

    Rate limit: each edge allows every socket --rate-per-s messages a second
    (default 20) in bursts of --rate-burst (default 40); a message over gets
    `rate_limited` and the bench re-sends it, and 50 strikes net close the
    socket 4008.  Closed loop, a socket sends one move per round trip of its
    game, so on loopback a few games without --think-ms go over it: pass
    --think-ms 50 or more, or open loop keep --rate / (2 x --games) under 20.
    The cluster this command starts uses the edge defaults; to measure past
    them, start your own with XLMATE_EDGE_RATE_PER_S and _RATE_BURST raised
    and point --discovery at it.  Its idle sockets spread over 127.0.0.2, .3 ...
    to stay under --max-per-ip (1000 per address).
    """
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
            relay_protocol=relay_protocol,  # type: ignore[arg-type]
            edges=edges,
            shards=shards,
            fsync=fsync,  # type: ignore[arg-type]
            client=client,  # type: ignore[arg-type]
            compression=compression,
            idle_connections=idle_connections,
            idle_seconds=idle_seconds,
            scaling=parse_levels(scaling),
            level_idle_s=level_idle,
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
    # The load generator stays on asyncio's own loop, whatever XLMATE_LOOP says, as in
    # every run recorded in BENCHMARKS.md (it runs no GC freezer: xlmate/gcfreeze.py).
    _run(bench_main(config), loop="asyncio")


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _stop_cleanly)  # first: a stop during start-up is clean too
    cli(auto_envvar_prefix="XLMATE")
