"""CORS, the WebSocket Origin check, the pages and ``game new``'s URLs, on real processes.

Requests are made as curl would make them (``http.client``: any method, any header),
to real ``xlmate discovery`` and ``xlmate edge`` processes.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.integration.cluster import XLMATE, Cluster

SITE = "https://play.example.com"
OTHER = "https://evil.example"
REPO = Path(__file__).resolve().parents[2]


def request(
    base: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request: (status, headers, body)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.fixture
def restricted(cluster: Cluster) -> Cluster:
    """Discovery and one edge allowing only ``SITE`` (comma list and repeat), plus a broker."""
    cluster.start_discovery("--allow-origin", f"{SITE},http://localhost:3000")
    cluster.start_broker()
    cluster.start_edge("eu-west", "--allow-origin", SITE, "--allow-origin", "http://localhost:3000")
    cluster.wait_registered(*cluster.edges)
    return cluster


def test_discovery_answers_cors_for_any_origin_by_default(cluster: Cluster) -> None:
    """Default ``*``: GET and the preflight carry Access-Control-Allow-Origin: *."""
    cluster.start_discovery()
    base = cluster.discovery_url
    status, headers, _ = request(base, "GET", "/v1/nodes", {"Origin": OTHER})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = request(
        base,
        "OPTIONS",
        "/v1/nodes/discovery?region=eu-west",
        {
            "Origin": OTHER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-request-id",
        },
    )
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "x-request-id"
    status, headers, _ = request(base, "GET", "/v1/nodes/discovery", {"Origin": OTHER})
    assert status == 503 and headers["Access-Control-Allow-Origin"] == "*", "errors too"


def test_discovery_refuses_other_methods_with_405_and_allow(cluster: Cluster) -> None:
    """POST, PUT, DELETE, PATCH and HEAD get 405 with ``Allow: GET, OPTIONS``; unknown paths 404."""
    cluster.start_discovery()
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD"):
        status, headers, _ = request(cluster.discovery_url, method, "/v1/nodes/discovery")
        assert status == 405, method
        assert headers["Allow"] == "GET, OPTIONS"
    status, _, body = request(cluster.discovery_url, "GET", "/v1/nope")
    assert status == 404 and json.loads(body) == {"error": "not_found"}


def test_discovery_allow_list_grants_listed_origins_only(restricted: Cluster) -> None:
    """With ``--allow-origin``, a listed origin is echoed (Vary: Origin); another gets no grant."""
    base = restricted.discovery_url
    status, headers, body = request(base, "GET", "/v1/nodes/discovery", {"Origin": SITE})
    assert status == 200 and json.loads(body)["node"]["region"] == "eu-west"
    assert headers["Access-Control-Allow-Origin"] == SITE
    assert headers["Vary"] == "Origin"
    for origin in ("http://localhost:3000",):
        _, headers, _ = request(base, "GET", "/v1/nodes", {"Origin": origin})
        assert headers["Access-Control-Allow-Origin"] == origin
    status, headers, _ = request(base, "GET", "/v1/nodes", {"Origin": OTHER})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(base, "OPTIONS", "/v1/nodes", {"Origin": OTHER})
    assert "Access-Control-Allow-Origin" not in headers
    assert "Access-Control-Allow-Methods" not in headers


def test_edge_game_views_send_cors(restricted: Cluster) -> None:
    """``/v1/games/{id}`` and ``/pgn`` carry CORS for an allowed origin (404s included)."""
    edge = restricted.edges[0]
    game = restricted.new_game()
    with connect(f"{edge.url}/v1/games/{game['gameId']}/ws?token={game['white']['token']}") as ws:
        assert json.loads(ws.recv())["type"] == "sync"
    for path in (f"/v1/games/{game['gameId']}", f"/v1/games/{game['gameId']}/pgn", "/v1/games/x"):
        status, headers, _ = request(edge.http, "GET", path, {"Origin": SITE})
        assert status in (200, 404)
        assert headers["Access-Control-Allow-Origin"] == SITE, path
        _, headers, _ = request(edge.http, "GET", path, {"Origin": OTHER})
        assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(edge.http, "POST", f"/v1/games/{game['gameId']}")
    assert status == 405 and headers["Allow"] == "GET, OPTIONS"


def test_edge_checks_the_websocket_origin(restricted: Cluster) -> None:
    """A foreign Origin is refused (403) before the upgrade; listed, own and missing ones pass."""
    edge = restricted.edges[0]
    game = restricted.new_game()
    url = f"{edge.url}/v1/games/{game['gameId']}/ws?token={game['white']['token']}"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin(OTHER))
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(f"{edge.url}/v1/games/{game['gameId']}/spectate", origin=Origin(OTHER))
    # listed, the edge's own pages, not a browser:
    for origin in (Origin(SITE), Origin(edge.http), None):
        with connect(url, origin=origin) as ws:
            assert json.loads(ws.recv())["type"] == "sync"


def test_edge_accepts_any_origin_by_default(cluster: Cluster) -> None:
    """Without ``--allow-origin`` an edge takes WebSockets from any page and answers CORS ``*``."""
    cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    game = cluster.new_game()
    url = f"{edge.url}/v1/games/{game['gameId']}/ws?token={game['white']['token']}"
    with connect(url, origin=Origin(OTHER)) as ws:
        assert json.loads(ws.recv())["you"] == "white"
    _, headers, _ = request(edge.http, "GET", f"/v1/games/{game['gameId']}", {"Origin": OTHER})
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_edge_serves_the_pages_and_the_client_module(restricted: Cluster) -> None:
    """``/play``, ``/watch`` and ``/static/*`` are served with safe headers; nothing else is."""
    edge = restricted.edges[0]
    for path in ("/play/abc?token=t", "/watch/abc"):
        status, headers, body = request(edge.http, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'src="../static/play.js"' in body
        assert headers["Referrer-Policy"] == "no-referrer"
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and f"frame-ancestors 'self' {SITE}" in csp
    status, headers, body = request(edge.http, "GET", "/static/xlmate-client.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert body == (REPO / "clients" / "js" / "xlmate-client.js").read_bytes()
    for path in ("/static/../pages.py", "/static/pages.py", "/static/", "/play/a.b", "/play/"):
        assert request(edge.http, "GET", path)[0] == 404, path


def test_bad_allow_origin_is_refused_at_start(cluster: Cluster) -> None:
    """``--allow-origin example.com`` (no scheme) stops the process with a clear message."""
    result = subprocess.run(
        [XLMATE, "discovery", "--port", "0", "--allow-origin", "example.com"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "not an origin like https://example.com" in result.stderr


def test_game_new_prints_play_and_watch_urls(cluster: Cluster) -> None:
    """``game new`` keeps gameId and tokens and adds both play URLs and the watch URL."""
    out = subprocess.check_output(
        [XLMATE, "game", "new", "--edge-url", "https://edge.example/", "--discovery-url", ""],
        env=cluster.env,
        stderr=subprocess.DEVNULL,
    )
    game = json.loads(out)
    gid = game["gameId"]
    for color in ("white", "black"):
        url = urlsplit(game[color]["url"])
        assert (url.scheme, url.netloc, url.path) == ("https", "edge.example", f"/play/{gid}")
        assert parse_qs(url.query) == {"token": [game[color]["token"]]}
    assert game["watchUrl"] == f"https://edge.example/watch/{gid}"
    local = json.loads(
        subprocess.check_output([XLMATE, "game", "new"], env=cluster.env, stderr=subprocess.DEVNULL)
    )
    query = parse_qs(urlsplit(local["white"]["url"]).query)
    assert local["white"]["url"].startswith("http://127.0.0.1:8101/play/")
    assert query["discovery"] == ["http://127.0.0.1:8100"]
    assert local["watchUrl"].endswith("?discovery=http%3A%2F%2F127.0.0.1%3A8100")
