"""The play and watch pages in a real Chromium, against a real cluster (issue: browsers).

Players act only by clicking the page (squares, buttons); assertions read what the
page shows.  ``window.xlmate`` (the page's client) is read only to find which edge a
page is on and to compare the final move lists.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import WAIT_MS, Pages
from tests.integration.cluster import SECRET, XLMATE, Cluster, Edge
from xlmate.tokens import mint_seat_token

FOOLS_MATE = ["f2f3", "e7e5", "g2g4", "d8h4"]
SCHOLARS_MATE = ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"]

# Records every text the connection badge shows, so a short "reconnecting" is not missed.
WATCH_CONNECTION = """() => {
  window.connectionLog = [document.getElementById("connection").textContent];
  new MutationObserver(() => {
    window.connectionLog.push(document.getElementById("connection").textContent);
  }).observe(document.getElementById("connection"),
             {childList: true, characterData: true, subtree: true});
}"""


def new_game(cluster: Cluster, edge: Edge) -> dict[str, Any]:
    """``xlmate game new`` with page URLs for this cluster (edge + discovery)."""
    out = subprocess.check_output(
        [
            XLMATE,
            "game",
            "new",
            "--clock",
            "5+3",
            "--edge-url",
            edge.http,
            "--discovery-url",
            cluster.discovery_url,
        ],
        env=cluster.env,
        stderr=subprocess.DEVNULL,
    )
    game: dict[str, Any] = json.loads(out)
    return game


def click_move(page: Page, uci: str) -> None:
    """Play ``uci`` by clicking its two squares, once the page says it is our move."""
    expect(page.locator("#status")).to_have_text("Your move")
    origin = page.locator(f'#board rect[data-square="{uci[:2]}"]')
    origin.click()
    expect(origin).to_have_class(re.compile("selected"))
    page.click(f'#board rect[data-square="{uci[2:4]}"]')


def play(pages: list[Page], ucis: list[str], start: int = 0) -> None:
    """White's page plays the even plies, black's the odd ones; wait for each to land."""
    for ply, uci in enumerate(ucis, start):
        click_move(pages[ply % 2], uci)
        for page in pages:
            expect(page.locator("#moves .san")).to_have_count(ply + 1)


def live_edge(cluster: Cluster) -> Edge:
    """An edge that is still running (another test of the module may have killed one)."""
    return next(e for e in cluster.edges if e.proc.alive())


def san_list(page: Page) -> list[str]:
    return [s.strip() for s in page.locator("#moves .san").all_inner_texts()]


def test_two_players_play_to_checkmate_while_a_third_watches(
    web_cluster: Cluster, pages: Pages
) -> None:
    """Clicks on two pages play a game to mate; every page shows moves, offers, clocks, result."""
    edge = live_edge(web_cluster)
    game = new_game(web_cluster, edge)
    assert game["white"]["url"].startswith(f"{edge.http}/play/{game['gameId']}?token=")
    white = pages.open("white", game["white"]["url"])
    black = pages.open("black", game["black"]["url"])
    watcher = pages.open("watcher", game["watchUrl"])
    players = [white, black]
    for page in (white, black, watcher):
        expect(page.locator("#connection")).to_have_text("connected")
    expect(white.locator("#player-bottom .name")).to_have_text("White (you)")
    expect(black.locator("#player-bottom .name")).to_have_text("Black (you)")  # board flipped
    expect(watcher.locator("#controls")).to_be_hidden()
    for page in (white, watcher):  # presence: both seats online, one spectator
        expect(page.locator('#player-top .dot[data-online="true"]')).to_have_count(1)
        expect(page.locator('#player-bottom .dot[data-online="true"]')).to_have_count(1)
    expect(white.locator("#spectators")).to_have_text("1 watching")

    play(players, FOOLS_MATE[:2])
    # The clocks run from the second move: white's ticks down on every page.
    clock = watcher.locator('#player-bottom .clock[data-running="true"]')
    first = clock.inner_text()
    watcher.wait_for_function(
        "(first) => document.querySelector('#player-bottom .clock').textContent !== first",
        arg=first,
    )

    # A draw offered with the button, seen and declined on the other page.
    white.click("#draw")
    expect(white.locator("#draw")).to_have_text("Draw offered")
    expect(black.locator("#offer-text")).to_have_text("Your opponent offers a draw")
    black.click("#offer-decline")
    expect(black.locator("#offer")).to_be_hidden()
    expect(white.locator("#draw")).to_have_text("Offer draw")
    if os.environ.get("XLMATE_DOCS_SCREENSHOT"):  # docs/img/play.png: a game in progress
        play(players, FOOLS_MATE[2:3], start=2)
        white.screenshot(path=os.environ["XLMATE_DOCS_SCREENSHOT"], full_page=True)
        play(players, FOOLS_MATE[3:], start=3)
    else:
        play(players, FOOLS_MATE[2:], start=2)

    for page in (white, black, watcher):
        expect(page.locator("#result")).to_have_text("0-1 · Black wins by checkmate")
        assert san_list(page) == ["f3", "e5", "g4", "Qh4#"]
        assert page.evaluate("window.xlmate.state.moves") == FOOLS_MATE
    for button in ("#resign", "#draw", "#takeback"):
        expect(white.locator(button)).to_be_disabled()


def test_white_edge_killed_mid_game_the_pages_reconnect_and_finish(
    web_cluster: Cluster, pages: Pages
) -> None:
    """SIGKILL of white's edge: the page shows reconnecting, and all three views end identical."""
    while sum(e.proc.alive() for e in web_cluster.edges) < 2:
        web_cluster.wait_registered(web_cluster.start_edge("eu-west"))
    page_edge = live_edge(web_cluster)
    game = new_game(web_cluster, page_edge)
    white = pages.open("white", game["white"]["url"])
    black = pages.open("black", game["black"]["url"])
    watcher = pages.open("watcher", game["watchUrl"])
    for page in (white, black, watcher):
        expect(page.locator("#connection")).to_have_text("connected")
    play([white, black], SCHOLARS_MATE[:4])

    white.evaluate(WATCH_CONNECTION)
    url = white.evaluate("window.xlmate.connectedTo")
    doomed = next(e for e in web_cluster.edges if e.url == url)
    doomed.proc.kill()
    white.wait_for_function("() => window.connectionLog.includes('reconnecting')")
    for page in (white, black, watcher):
        expect(page.locator("#connection")).to_have_text("connected")
    assert white.evaluate("window.xlmate.connectedTo") != url

    play([white, black], SCHOLARS_MATE[4:], start=4)
    for page in (white, black, watcher):
        expect(page.locator("#result")).to_have_text("1-0 · White wins by checkmate")
        assert san_list(page) == ["e4", "e5", "Bc4", "Nc6", "Qh5", "Nf6", "Qxf7#"]
        assert page.evaluate("window.xlmate.state.moves") == SCHOLARS_MATE
        assert page.evaluate("window.xlmate.state.v") == len(SCHOLARS_MATE) + 1


def test_refused_move_promotion_and_takeback_on_the_page(
    web_cluster: Cluster, pages: Pages
) -> None:
    """A refused click shows the server's error; promotion asks for a piece; takeback undoes it."""
    edge = live_edge(web_cluster)
    game = new_game(web_cluster, edge)
    white = pages.open("white", game["white"]["url"])
    black = pages.open("black", game["black"]["url"])
    expect(white.locator("#connection")).to_have_text("connected")
    expect(black.locator("#connection")).to_have_text("connected")

    click_move(white, "e2e5")
    expect(white.locator("#message")).to_have_text("e2e5 is not a legal move")

    play([white, black], ["e2e4", "d7d5", "e4d5", "c7c6", "d5c6", "g8f6", "c6b7", "b8d7"])
    click_move(white, "b7a8")
    expect(white.locator("#promotion")).to_be_visible()
    white.click('#promotion button[data-piece="n"]')
    expect(black.locator("#moves .san")).to_have_count(9)
    assert san_list(black)[-1] == "bxa8=N"
    expect(black.locator('#board text[data-on="a8"]')).to_have_attribute("data-piece", "N")

    # A takeback asked with the button and accepted on the other page: the knight goes back.
    white.click("#takeback")
    expect(white.locator("#takeback")).to_have_text("Takeback offered")
    expect(black.locator("#offer-text")).to_have_text("Your opponent asks for a takeback")
    black.click("#offer-accept")
    for page in (white, black):
        expect(page.locator("#moves .san")).to_have_count(8)
        expect(page.locator('#board text[data-on="b7"]')).to_have_attribute("data-piece", "P")
    expect(black.locator('#board text[data-on="a8"]')).to_have_attribute("data-piece", "r")


def opened_sockets(page: Page) -> list[Any]:
    """Start recording the WebSockets ``page`` opens (call before it loads)."""
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    return sockets


def open_and_record(pages: Pages, name: str, url: str) -> tuple[Page, list[Any]]:
    context = pages.browser.new_context()
    pages.contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    pages.pages[name] = page
    sockets = opened_sockets(page)
    page.goto(url)
    return page, sockets


def test_bad_links_show_a_clear_message_and_leave_no_socket_open(
    web_cluster: Cluster, pages: Pages
) -> None:
    """Expired token, foreign token, unknown game: a message, one socket, closed, no retry."""
    edge = live_edge(web_cluster)
    game = new_game(web_cluster, edge)
    other = new_game(web_cluster, edge)
    gid = game["gameId"]
    expired = mint_seat_token(SECRET, gid, "white", expires_at=int(time.time()) - 60)
    cases = {
        "expired": (
            f"{edge.http}/play/{gid}?token={expired}",
            "This link's seat token is invalid or has expired. Ask for a new link.",
        ),
        "foreign": (
            f"{edge.http}/play/{gid}?token={other['black']['token']}",
            "This seat token belongs to another game. Check the link.",
        ),
        "unknown": (f"{edge.http}/watch/no-such-game-anywhere", "No such game."),
    }
    for name, (url, text) in cases.items():
        page, sockets = open_and_record(pages, name, url)
        expect(page.locator("#message")).to_have_text(text)
        expect(page.locator("#connection")).to_have_text("offline")
        assert page.evaluate("window.xlmate.connection") == "failed"
        assert len(sockets) == 1, f"{name}: one socket, no reconnect loop"
        page.wait_for_function("() => true")  # one more turn of the page's loop
        assert sockets[0].is_closed(), f"{name}: the socket is closed"
        assert len(sockets) == 1
