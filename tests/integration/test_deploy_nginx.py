"""deploy/nginx/xlmate.conf in front of a real cluster, with Debian's nginx and a real TLS cert.

The shipped config is rendered for the test (free ports, a temporary prefix, a
self-signed certificate made here with the openssl CLI) by replacing its
production values, so what runs is the file an operator installs.  nginx runs
in the foreground as this test's child and is stopped even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.cluster import Cluster, eventually, free_port, wait_until
from xlmate.client import GameClient

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "nginx" / "xlmate.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PING_INTERVAL_S = 20  # edge/server.py: serve(..., ping_interval=20)
SCHOLARS_MATE = ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"]
MAX_PER_IP = 2


@dataclass
class Nginx:
    """A running nginx: its origin, prefix and the files it logs to."""

    port: int
    prefix: Path
    cert: Path
    edge_ports: list[int]

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def edge_url(self, edge_port: int) -> str:
        return f"wss://127.0.0.1:{self.port}/edge/{edge_port}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.prefix / "logs").iterdir())

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def render(conf: str, *, port: int, prefix: Path, cert: Path, key: Path, discovery: int,
           edges: list[int]) -> str:  # fmt: skip
    """The shipped config with the test's ports and paths in place of production values."""
    swaps = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/ssl/xlmate/fullchain.pem": str(cert),
        "/etc/ssl/xlmate/privkey.pem": str(key),
        "/var/log/nginx/": f"{prefix}/logs/",
        "server 127.0.0.1:8100;": f"server 127.0.0.1:{discovery};",
        "(?<xlmate_edge>8101|8102|8103|8104)": f"(?<xlmate_edge>{'|'.join(map(str, edges))})",
    }
    for production, test in swaps.items():
        assert conf.count(production) >= 1, f"the shipped config no longer has {production!r}"
        conf = conf.replace(production, test)
    return conf


def main_conf(prefix: Path) -> str:
    """nginx.conf of the test's own prefix: everything in it, the shipped file included."""
    temp = "".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/main.error.log warn;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {prefix}/logs/main.access.log;\n{temp}"
        f"    include {prefix}/conf/xlmate.conf;\n"
        "}\n"
    )


class PortTaken(Exception):
    """nginx could not bind its port: another process took it after ``free_port``."""


def serves(nginx: Nginx) -> bool:
    """nginx answers discovery's API over TLS with the test's certificate."""
    try:
        get_json(f"{nginx.origin}/v1/nodes", nginx.ssl_context())
    except OSError:
        return False
    return True


@contextlib.contextmanager
def running_nginx(nginx: Nginx) -> Iterator[None]:
    """nginx in the foreground on its prefix's config, serving; stopped (TERM, KILL) on exit."""
    prefix = nginx.prefix
    args = [NGINX, "-p", str(prefix), "-c", str(prefix / "conf" / "nginx.conf")]
    test = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert test.returncode == 0, test.stderr
    with open(prefix / "logs" / "stderr.log", "w") as stderr:
        proc = subprocess.Popen(args, stderr=stderr)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                if "Address already in use" in nginx.logs():
                    raise PortTaken(nginx.port)
                raise AssertionError(f"nginx exited {proc.returncode}:\n{nginx.logs()}")
            return serves(nginx)

        wait_until(up, 15, "nginx to serve discovery over TLS")
        yield
    finally:
        proc.terminate()  # fast shutdown: open WebSockets must not hold it up
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def nginx_cluster(cluster: Cluster) -> Iterator[tuple[Cluster, Nginx]]:
    """discovery, a broker and two edges behind nginx (TLS); nginx stopped whatever happens."""
    cluster.start_discovery()
    cluster.start_broker()
    for attempt in range(3):  # a free port can be taken before nginx binds it
        prefix = Path(tempfile.mkdtemp(prefix="xlmate-nginx-"))
        try:
            prefix.chmod(0o755)  # nginx's workers (user nobody) reach their temp dirs through it
            for sub in ("conf", "logs", "tmp"):
                (prefix / sub).mkdir()
            cert, key = make_cert(prefix / "conf")
            nginx = Nginx(free_port(), prefix, cert, [free_port(), free_port(), free_port()])
            rendered = render(
                CONF.read_text(),
                port=nginx.port,
                prefix=prefix,
                cert=cert,
                key=key,
                discovery=cluster.discovery_port,
                edges=nginx.edge_ports,  # the third never runs (upstream errors)
            )
            (prefix / "conf" / "xlmate.conf").write_text(rendered)
            (prefix / "conf" / "nginx.conf").write_text(main_conf(prefix))
            try:
                with running_nginx(nginx):
                    for edge_port in nginx.edge_ports[:2]:
                        cluster.start_edge(
                            "eu-west",
                            *("--public-url", nginx.edge_url(edge_port)),
                            *("--trusted-proxy", "127.0.0.1"),
                            *("--max-per-ip", str(MAX_PER_IP)),
                            port=edge_port,
                        )
                    cluster.wait_registered(*cluster.edges)
                    yield cluster, nginx
                    return
            except PortTaken:
                if attempt == 2:
                    raise
        finally:
            shutil.rmtree(prefix, ignore_errors=True)


def nginx_dump(nginx: Nginx) -> str:
    """``nginx -T``: the configuration nginx actually loaded."""
    args = [NGINX, "-p", str(nginx.prefix), "-c", str(nginx.prefix / "conf" / "nginx.conf"), "-T"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def get_json(url: str, context: ssl.SSLContext) -> object:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return json.loads(response.read())


async def test_a_whole_game_over_wss_through_the_url_discovery_hands_out(
    nginx_cluster: tuple[Cluster, Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery over https gives each edge's public wss URL; a game to mate works through it."""
    c, nginx = nginx_cluster
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.cert))  # the client's default TLS context
    placed = await asyncio.to_thread(
        get_json, f"{nginx.origin}/v1/nodes/discovery?region=eu-west", nginx.ssl_context()
    )
    assert isinstance(placed, dict)
    urls = {node["url"] for node in [placed["node"], *placed["nodes"]]}
    assert urls == {nginx.edge_url(p) for p in nginx.edge_ports[:2]}

    game = c.new_game("5+3")
    gid = game["gameId"]
    white = GameClient(gid, token=game["white"]["token"], discovery_url=nginx.origin)
    black = GameClient(gid, token=game["black"]["token"], discovery_url=nginx.origin)
    await white.connect()
    await black.connect()
    try:
        assert white.connected_to is not None and white.connected_to.startswith("wss://")
        for ply, uci in enumerate(SCHOLARS_MATE):
            await [white, black][ply % 2].move(uci)
        await black.wait_for_v(len(SCHOLARS_MATE) + 1)
        assert black.events[-1]["type"] == "game_over"
        assert black.events[-1]["result"] == "1-0"
    finally:
        await white.close()
        await black.close()
    tokens = [game["white"]["token"], game["black"]["token"]]
    await eventually(lambda: "/v1/games/" in nginx.logs(), 5, "nginx to log the sockets")
    assert_no_token(tokens, nginx.logs(), c.logs())


def assert_no_token(tokens: list[str], *logs: str) -> None:
    for text in logs:
        for token in tokens:
            for part in token.split("."):
                assert part not in text, "a seat token reached a log line"


async def open_socket(url: str, source: str, context: ssl.SSLContext) -> ClientConnection:
    """A WebSocket whose TCP connection leaves from the address ``source``."""
    return await connect(url, ssl=context, local_addr=(source, 0), open_timeout=5)


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int | None:
    """The close code of ``ws`` once the server closed it (None if still open)."""
    try:
        await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None
    return None


async def test_per_ip_limit_counts_real_clients_behind_nginx(
    nginx_cluster: tuple[Cluster, Nginx],
) -> None:
    """Behind nginx, --max-per-ip counts 127.0.0.2 and .3 apart; no token logged, even on a 502."""
    c, nginx = nginx_cluster
    context = nginx.ssl_context()
    edge_port = nginx.edge_ports[0]
    game = c.new_game("5+3")
    gid = game["gameId"]
    token = game["white"]["token"]
    base = nginx.edge_url(edge_port)
    white = await open_socket(f"{base}/v1/games/{gid}/ws?token={token}", "127.0.0.4", context)
    spectate = f"{base}/v1/games/{gid}/spectate"
    held = [white]
    try:
        assert json.loads(await white.recv())["type"] == "sync"
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(MAX_PER_IP):
                ws = await open_socket(spectate, source, context)
                held.append(ws)
                assert json.loads(await ws.recv())["type"] == "sync", source
        extra = await open_socket(spectate, "127.0.0.2", context)
        held.append(extra)
        assert await closed_with(extra) == 4008
        for ws in held[1:-1]:
            assert await closed_with(ws, timeout=0.2) is None, "a counted socket was closed"
        # An upstream error (an edge that is not running) logs nothing with the token either.
        dead = nginx.edge_url(nginx.edge_ports[2])
        with pytest.raises(Exception, match="502"):
            await open_socket(f"{dead}/v1/games/{gid}/ws?token={token}", "127.0.0.5", context)
    finally:
        for ws in held:
            await ws.close()
    edge_log = c.edges[0].proc.log()
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert f"remote={source}" in edge_log, f"the edge never saw {source}"
    assert "remote=127.0.0.1" not in edge_log, "a client was counted as the proxy"
    await eventually(lambda: " 502 " in nginx.logs(), 5, "nginx to log the 502")
    assert_no_token([token], nginx.logs(), c.logs())


def test_proxy_timeouts_outlast_the_edge_ping(nginx_cluster: tuple[Cluster, Nginx]) -> None:
    """nginx -T: edge timeouts outlast two 20 s pings; one X-Forwarded-For hop; no query logged."""
    _, nginx = nginx_cluster
    dump = re.sub(r"#.*", "", nginx_dump(nginx))  # directives only
    edge_block = dump[dump.index("location ~ ^/edge/") :]
    edge_block = edge_block[: edge_block.index("}")]
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"{directive}\s+(\d+)s;", edge_block)
        assert match is not None, directive
        assert int(match.group(1)) > 2 * PING_INTERVAL_S, directive
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in edge_block
    assert "$request " not in dump and "$request_uri" not in dump and "$args " not in dump


def test_no_open_proxy_to_other_local_ports(nginx_cluster: tuple[Cluster, Nginx]) -> None:
    """Only the listed edge ports are proxied: /edge/<broker http port>/ is a 404."""
    c, nginx = nginx_cluster
    request = f"{nginx.origin}/edge/{c.broker_http_port}/healthz"
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=5, context=nginx.ssl_context())
    assert failure.value.code == 404
