"""The Socket.IO baseline's Node app (``benchmarks/socketio``): installing it for a run.

The baseline is no part of the product: ``package.json`` and ``package-lock.json``
pin Socket.IO, its Redis adapter and the Redis client, and ``install`` copies them
with ``server.js`` into a directory of the caller's (a run's temporary directory)
and runs ``npm ci`` there, which installs exactly the locked versions.
``benchmarks/run`` and the bench's tests use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

APP: Final = Path(__file__).resolve().parent.parent / "socketio"
FILES: Final = ("package.json", "package-lock.json", "server.js")
NPM_TIMEOUT_S: Final = 300.0


def install(into: Path) -> Path:
    """``benchmarks/socketio`` installed into ``into`` (``npm ci``); returns ``into``.

    Node and npm come from Debian (``nodejs``, ``npm``) when missing, as root.
    """
    if not (shutil.which("node") and shutil.which("npm")):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "nodejs", "npm"], env=env, check=True)
    into.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(APP / name, into / name)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
        cwd=into,
        check=True,
        timeout=NPM_TIMEOUT_S,
    )
    return into
