"""The command line an operator meets: ports in use, the secrets policy, option wiring (issue 12).

Every test runs the real ``xlmate`` command as a subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import XLMATE, free_port, http_json, wait_until

GOOD_SECRET = "0123456789abcdef0123456789abcdef-deploy"


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    """Run ``xlmate ARGS`` to its end: (exit code, stderr)."""
    done = subprocess.run(
        [XLMATE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stderr


def env_without_secret(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLMATE_")}
    env.update(extra)
    return env


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another socket listens on, the way a second copy of a process would."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


ZERO_PORTS = {
    "discovery": ["--port", "0", "--rep-port", "0"],
    "broker": ["--xsub-port", "0", "--xpub-port", "0", "--catchup-port", "0", "--http-port", "0"],
    "edge": ["--region", "eu", "--port", "0", "--discovery", ""],
}
LISTENING = [
    ("discovery", "--port"),
    ("discovery", "--rep-port"),
    ("broker", "--xsub-port"),
    ("broker", "--xpub-port"),
    ("broker", "--catchup-port"),
    ("broker", "--http-port"),
    ("broker", "--repl-port"),
    ("edge", "--port"),
]


@pytest.mark.parametrize(("command", "option"), LISTENING)
def test_port_in_use_is_one_line_and_exit_2(
    command: str, option: str, held_port: int, tmp_path: Path
) -> None:
    """Any listening port of any process in use: one line naming its option, exit 2."""
    args = list(ZERO_PORTS[command])
    if option == "--repl-port":  # a broker of a pair (its peer and discovery need not be up)
        args += [option, "0", "--peer", f"tcp://127.0.0.1:{free_port()}"]
        args += ["--discovery", f"tcp://127.0.0.1:{free_port()}"]
    args[args.index(option) + 1] = str(held_port)
    if command == "broker":
        args += ["--journal-dir", str(tmp_path / "journal")]
    code, stderr = run(["--log-level", "error", command, *args], env_without_secret())
    env = f"XLMATE_{command.upper()}_{option[2:].upper().replace('-', '_')}"
    assert code == 2, stderr
    assert stderr == f"{command}: port {held_port} is in use (set {option} or {env})\n"
    # At the default level the one line is still the only error, with no traceback.
    code, stderr = run([command, *args], env_without_secret())
    assert code == 2 and "Traceback" not in stderr, stderr
    assert stderr.endswith(f"{command}: port {held_port} is in use (set {option} or {env})\n")


def test_a_broker_with_a_peer_but_no_discovery_is_refused_with_exit_2(tmp_path: Path) -> None:
    """--peer needs --discovery (the third vote): refused at start, exit 2, saying so."""
    args = [*ZERO_PORTS["broker"], "--journal-dir", str(tmp_path / "journal")]
    code, stderr = run(
        ["broker", *args, "--peer", "tcp://127.0.0.1:5580", "--discovery", ""],
        env_without_secret(),
    )
    assert code == 2, stderr
    assert "--peer needs --discovery" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "XLMATE_SECRET is not set"),
        ("short-but-not-a-placeholder", "it must be at least 32"),
        ("change-me-to-32-or-more-random-bytes", "placeholder"),
    ],
)
def test_edge_on_a_public_address_refuses_a_weak_secret(secret: str | None, problem: str) -> None:
    """An edge on 0.0.0.0 with no, a short or the placeholder secret exits 2 saying what to set."""
    env = env_without_secret(**({"XLMATE_SECRET": secret} if secret else {}))
    args = ["edge", "--region", "eu", "--host", "0.0.0.0", "--port", str(free_port())]
    code, stderr = run([*args, "--discovery", ""], env)
    assert code == 2, stderr
    assert problem in stderr and "refusing to listen on 0.0.0.0" in stderr
    assert "openssl rand -base64 48" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    if secret:
        assert secret not in stderr, "the refusal must not print the secret"


def free_public_port() -> int:
    """A port free on every address (an edge on 0.0.0.0 also collides with 127.0.0.1:P)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def start_edge(env: dict[str, str], host: str, port: int, tmp_path: Path) -> subprocess.Popen[str]:
    log = open(tmp_path / f"edge-{port}.log", "w")  # noqa: SIM115 - the child keeps it
    args = ["edge", "--region", "eu", "--host", host, "--port", str(port), "--discovery", ""]
    return subprocess.Popen([XLMATE, *args], env=env, stderr=log, stdout=log, text=True)


def wait_listening(proc: subprocess.Popen[str], port: int) -> None:
    def up() -> bool:
        assert proc.poll() is None, "the edge exited"
        return http_json(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503)

    wait_until(up, 15, "the edge to answer /healthz")


def test_public_edge_with_a_strong_secret_starts(tmp_path: Path) -> None:
    """With 32+ random bytes an edge listens on 0.0.0.0, and SIGTERM ends it with exit code 0."""
    port = free_public_port()
    proc = start_edge(env_without_secret(XLMATE_SECRET=GOOD_SECRET), "0.0.0.0", port, tmp_path)
    try:
        wait_listening(proc, port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()


def test_loopback_keeps_the_loud_warning(tmp_path: Path) -> None:
    """On loopback the development secret still starts, with a warning that says what to set."""
    port = free_port()
    proc = start_edge(env_without_secret(), "127.0.0.1", port, tmp_path)
    try:
        wait_listening(proc, port)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    log = (tmp_path / f"edge-{port}.log").read_text()
    assert re.search(r"WARNING xlmate.cli: edge: XLMATE_SECRET is not set.*openssl rand", log), log


def test_limits_are_options_with_env_vars(tmp_path: Path) -> None:
    """--rate-per-s, --rate-burst, --max-per-ip, --capacity exist, each with XLMATE_EDGE_*."""
    out = subprocess.run([XLMATE, "edge", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())
    for option in ("--rate-per-s", "--rate-burst", "--max-per-ip", "--capacity"):
        env = "XLMATE_EDGE_" + option[2:].upper().replace("-", "_")
        assert option in text and env in text, option
    # A variable reaches the config: a nonsensical value is refused by the config's own check.
    code, stderr = run(
        ["edge", "--region", "eu", "--port", "0", "--discovery", ""],
        env_without_secret(XLMATE_EDGE_RATE_PER_S="0"),
    )
    assert code == 2 and "rate-per-s must be above 0" in stderr, stderr


def test_bench_help_explains_the_rate_limit() -> None:
    """`xlmate bench --help` says how its load meets the edges' per-socket rate limit."""
    out = subprocess.run([XLMATE, "bench", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())
    assert "--rate-per-s" in text and "rate_limited" in text and "--think-ms" in text
