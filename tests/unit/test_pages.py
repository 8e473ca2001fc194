"""The edge's page server (``edge/pages.py``) without sockets: its files and its CSP."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlmate.edge.pages import PAGE, STATIC, WEB_DIR, Pages
from xlmate.errors import ConfigError
from xlmate.httpd import OriginPolicy

REPO = Path(__file__).resolve().parents[2]


def test_the_served_client_is_the_package_file() -> None:
    """``/static/xlmate-client.js`` is the very file of clients/js (no copy to drift)."""
    served = WEB_DIR / "xlmate-client.js"
    assert served.read_bytes() == (REPO / "clients" / "js" / "xlmate-client.js").read_bytes()
    assert all((WEB_DIR / name).is_file() for name in [PAGE, *STATIC])


def test_missing_files_stop_the_edge_at_start(tmp_path: Path) -> None:
    """A broken install fails with a clear ConfigError instead of 500s later."""
    with pytest.raises(ConfigError, match="page files are missing"):
        Pages(OriginPolicy(), web_dir=tmp_path)


def test_frame_ancestors_follow_the_allow_list() -> None:
    """The page may be framed by any origin by default, else only by itself and the list."""
    assert Pages(OriginPolicy())._csp.endswith("frame-ancestors *")
    listed = Pages(OriginPolicy(("https://a.example",)))._csp
    assert listed.endswith("frame-ancestors 'self' https://a.example")
    assert "script-src 'self'" in listed
