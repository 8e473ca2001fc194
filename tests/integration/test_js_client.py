"""The JavaScript client's own suite (``node --test clients/js/test/``) as part of this one.

The Node tests start their own real cluster with this virtualenv's ``xlmate``
(``clients/js/testkit/cluster.js``).  Their development dependencies (``ws``, a
WebSocket for Node, and ``typescript``, to check the declarations) are installed from
the committed lock file with ``npm ci`` when the lock file is newer than what is
installed (``scripts/setup`` does the same when npm is there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.integration.cluster import XLMATE

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "clients" / "js"


def ensure_node_modules() -> None:
    """``npm ci`` in clients/js unless what is installed is newer than the lock file."""
    installed = JS / "node_modules" / ".package-lock.json"
    if (
        installed.exists()
        and installed.stat().st_mtime >= (JS / "package-lock.json").stat().st_mtime
    ):
        return
    npm = shutil.which("npm")
    assert npm, "npm is missing: run scripts/system-deps (scripts/debian-packages.d/browser.txt)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)


def test_js_client_node_suite_passes() -> None:
    """Every ``node --test`` test of the JS client passes against a real cluster."""
    node = shutil.which("node")
    assert node, "node is missing: run scripts/system-deps (scripts/debian-packages.d/browser.txt)"
    ensure_node_modules()
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", "clients/js/test/"],
        cwd=REPO,
        env={**os.environ, "XLMATE_BIN": XLMATE},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) >= 7, output
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), output
