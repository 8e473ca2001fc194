"""The CORS / Origin rules of ``xlmate.httpd.OriginPolicy`` and the router's path patterns."""

from __future__ import annotations

import pytest

from xlmate.errors import ConfigError
from xlmate.httpd import OriginPolicy, Router

SITE = "https://play.example.com"


def test_parse_takes_repeated_and_comma_separated_values() -> None:
    """``--allow-origin a,b --allow-origin c`` gives three origins; trailing slashes go."""
    policy = OriginPolicy.parse([f"{SITE}/, http://localhost:3000", "https://b.example"])
    assert policy.origins == (SITE, "http://localhost:3000", "https://b.example")
    assert not policy.any


def test_parse_defaults_to_any_and_refuses_non_origins() -> None:
    """No value means ``*``; a path or a bare host is refused with a clear error."""
    assert OriginPolicy.parse([]).any
    assert OriginPolicy.parse(["", " , "]).origins == ("*",)
    for bad in ("example.com", "https://example.com/path", "https://"):
        with pytest.raises(ConfigError, match="not an origin"):
            OriginPolicy.parse([bad])


def test_origins_are_compared_as_browsers_send_them() -> None:
    """Case and a default port in ``--allow-origin`` do not matter; another port does."""
    policy = OriginPolicy.parse(["https://Play.Example.COM:443", "HTTP://localhost:3000"])
    assert policy.origins == (SITE, "http://localhost:3000")
    assert policy.allows(SITE) and policy.allows("http://localhost:3000")
    assert not policy.allows("https://play.example.com:8443")
    assert OriginPolicy.parse(["http://[::1]:80"]).origins == ("http://[::1]",)


def test_allows_listed_missing_and_same_origin_only() -> None:
    """Listed origins, no Origin (not a browser) and the server's own host pass; others don't."""
    policy = OriginPolicy((SITE,))
    assert policy.allows(SITE)
    assert policy.allows(None)
    assert policy.allows("http://127.0.0.1:8101", host="127.0.0.1:8101")
    assert not policy.allows("https://evil.example")
    assert not policy.allows("https://evil.example", host="127.0.0.1:8101")
    assert OriginPolicy().allows("https://anything.example")


def test_cors_headers_echo_an_allowed_origin_and_vary() -> None:
    """``*`` answers ``*``; a list echoes the allowed origin with ``Vary: Origin``, else none."""
    assert OriginPolicy().cors_headers("https://x.example") == [
        ("Access-Control-Allow-Origin", "*")
    ]
    policy = OriginPolicy((SITE,))
    assert policy.cors_headers(SITE) == [
        ("Access-Control-Allow-Origin", SITE),
        ("Vary", "Origin"),
    ]
    assert policy.cors_headers("https://evil.example") == [("Vary", "Origin")]


def test_preflight_names_methods_and_echoes_requested_headers() -> None:
    """A preflight from an allowed origin lists GET, OPTIONS; a refused one gets no grant."""
    headers = dict(OriginPolicy((SITE,)).preflight_headers(SITE, None, "content-type"))
    assert headers["Access-Control-Allow-Origin"] == SITE
    assert headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "content-type"
    assert int(headers["Access-Control-Max-Age"]) > 0
    refused = dict(OriginPolicy((SITE,)).preflight_headers("https://evil.example", None, None))
    assert "Access-Control-Allow-Origin" not in refused
    assert "Access-Control-Allow-Methods" not in refused


def test_route_patterns_escape_literals_and_match_whole_paths() -> None:
    """``.`` in a route is a dot, ``{name}`` one safe segment, and a trailing newline fails."""
    static = Router._compile("/static/play.js")
    assert static.match("/static/play.js")
    assert not static.match("/static/playXjs")
    game = Router._compile("/v1/games/{gameId}/pgn")
    match = game.match("/v1/games/ab_C-1/pgn")
    assert match is not None and match["gameId"] == "ab_C-1"
    assert not game.match("/v1/games/a.b/pgn")
    assert not game.match("/v1/games/ab/pgn\n")
