"""ZeroMQ CURVE: encryption and authentication of every internal socket.

``xlmate keys DIR`` writes one key pair per role and an ``authorized/``
folder of the public keys allowed to connect::

    DIR/broker.key  DIR/broker.key_secret        the broker's sockets (servers)
    DIR/discovery.key  DIR/discovery.key_secret  discovery's REP socket (server)
    DIR/edge.key  DIR/edge.key_secret            the edges' sockets (clients)
    DIR/authorized/edge.key                      clients the servers accept
    DIR/authorized/broker.key                    (brokers heartbeat to discovery)

A process started with ``--curve-dir DIR`` (or ``XLMATE_CURVE_DIR``) reads
what its role needs: servers their own pair and ``authorized/``; edges their
own pair and the servers' public keys.  A peer whose key is not authorized
cannot complete the handshake, so it can neither publish a command or a
heartbeat nor read a game (docs/security.md).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from xlmate.errors import ConfigError

ROLES = ("broker", "discovery", "edge")
AUTHORIZED = "authorized"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair (Z85-encoded bytes)."""

    public: bytes
    secret: bytes


def generate(directory: Path, *, force: bool = False) -> list[Path]:
    """Create the key pairs of every role and the ``authorized`` folder; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for role in ROLES:
        secret_file = directory / f"{role}.key_secret"
        if secret_file.exists() and not force:
            raise ConfigError(f"{secret_file} exists; use --force to replace the keys")
        public, secret = zmq.auth.create_certificates(directory, role)
        secret_file.chmod(0o600)
        written += [Path(public), Path(secret)]
    authorized = directory / AUTHORIZED
    authorized.mkdir(exist_ok=True)
    for client in ("edge", "broker"):  # brokers are discovery's clients too
        shutil.copy(directory / f"{client}.key", authorized / f"{client}.key")
        written.append(authorized / f"{client}.key")
    return written


def load_pair(directory: Path, role: str) -> KeyPair:
    """The key pair of ``role`` from ``DIR/<role>.key_secret``."""
    path = directory / f"{role}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key pair {path}: {exc}") from exc
    if secret is None:
        raise ConfigError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public(directory: Path, role: str) -> bytes:
    """The public key of ``role`` from ``DIR/<role>.key``."""
    path = directory / f"{role}.key"
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE public key {path}: {exc}") from exc
    return public


def start_authenticator(context: zmq.asyncio.Context, directory: Path) -> AsyncioAuthenticator:
    """Accept only clients whose public key is in ``DIR/authorized``."""
    authorized = directory / AUTHORIZED
    if not authorized.is_dir():
        raise ConfigError(f"{authorized} is missing: run `xlmate keys {directory}`")
    auth = AsyncioAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized))
    return auth


def make_server(sock: zmq.Socket[Any], pair: KeyPair) -> None:
    """Turn ``sock`` into a CURVE server (call before bind)."""
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_server = True


def make_client(sock: zmq.Socket[Any], pair: KeyPair, server_public: bytes) -> None:
    """Turn ``sock`` into a CURVE client of the server with ``server_public`` (before connect)."""
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_serverkey = server_public
