/**
 * The play / watch page: `/play/{gameId}?token=...` or `/watch/{gameId}`.
 *
 * Everything comes from the page's own URL: the mode and game id from the path, the
 * seat token, and optionally `discovery` (discovery's HTTP URL: ask it for an edge,
 * with fallbacks when one dies) and `region`.  Without `discovery` the page talks to
 * the edge that served it.  The page renders `client.state` after every change; the
 * clocks tick locally from the last clock object; the server is the only judge of moves.
 */

import { GameClient } from "./xlmate-client.js";
import { Board } from "./board.js";

const $ = (id) => document.getElementById(id);
const REASONS = {
  checkmate: "checkmate",
  resign: "resignation",
  timeout: "time",
  stalemate: "stalemate",
  insufficient_material: "insufficient material",
  threefold_repetition: "threefold repetition",
  fifty_moves: "the fifty-move rule",
  draw_agreed: "agreement",
  aborted: "abort (no first move)",
};
const FATAL_TEXT = {
  4001: "This link's seat token is invalid or has expired. Ask for a new link.",
  4003: "This seat token belongs to another game. Check the link.",
  4004: "No such game.",
};

function pageConfig() {
  const url = new URL(window.location.href);
  const match = url.pathname.match(/^(.*)\/(play|watch)\/([A-Za-z0-9_-]{1,64})\/?$/);
  if (!match) return null;
  const [, prefix, mode, gameId] = match;
  const edgeUrl = `${url.protocol === "https:" ? "wss:" : "ws:"}//${url.host}${prefix}`;
  return {
    mode,
    gameId,
    token: mode === "play" ? url.searchParams.get("token") : null,
    discoveryUrl: url.searchParams.get("discovery") || null,
    region: url.searchParams.get("region") || null,
    edgeUrl,
  };
}

function formatClock(ms) {
  if (ms === null || ms === undefined) return "--:--";
  const total = Math.max(0, ms);
  const minutes = Math.floor(total / 60000);
  const seconds = Math.floor((total % 60000) / 1000);
  const text = `${minutes}:${String(seconds).padStart(2, "0")}`;
  return total < 10000 ? `${text}.${Math.floor((total % 1000) / 100)}` : text;
}

function resultText(state) {
  const why = REASONS[state.reason] ?? state.reason ?? "";
  if (state.result === "1-0") return `1-0 · White wins by ${why}`;
  if (state.result === "0-1") return `0-1 · Black wins by ${why}`;
  if (state.result === "1/2-1/2") return `½-½ · Draw by ${why}`;
  return state.reason === "aborted" ? "Game aborted" : "Game over";
}

class Page {
  constructor(config) {
    this.config = config;
    this.selected = null;
    this.pendingPromotion = null;
    this.board = new Board($("board"), (square) => this.onSquare(square));
    this.client = new GameClient({
      gameId: config.gameId,
      token: config.token,
      discoveryUrl: config.discoveryUrl,
      edgeUrl: config.edgeUrl,
      region: config.region,
    });
    window.xlmate = this.client; // for the console (and the browser tests)
    $("app").dataset.mode = config.mode;
    $("game-id").textContent = config.gameId;
    this.client.on("change", () => this.render());
    this.client.on("connection", (event) => this.onConnection(event));
    this.client.on("error", (error) => {
      if (error.id === undefined) this.showMessage(error.message || error.code);
    });
    this.wireButtons();
    this.render();
    setInterval(() => this.renderClocks(), 100);
    this.client.connect().catch(() => {}); // failures arrive as connection events
    window.addEventListener("pagehide", () => this.client.close());
  }

  get you() {
    return this.client.state.you;
  }

  get seated() {
    return this.you === "white" || this.you === "black";
  }

  wireButtons() {
    $("resign").addEventListener("click", () => this.run(this.client.resign()));
    $("draw").addEventListener("click", () => this.run(this.client.draw("offer")));
    $("takeback").addEventListener("click", () => this.run(this.client.takeback("offer")));
    $("offer-accept").addEventListener("click", () => this.answerOffer("accept"));
    $("offer-decline").addEventListener("click", () => this.answerOffer("decline"));
    for (const button of $("promotion").querySelectorAll("button")) {
      button.addEventListener("click", () => this.promote(button.dataset.piece));
    }
  }

  /** Run a command; show the server's message if it is refused. */
  run(promise) {
    this.clearMessage();
    promise.catch((err) => this.showMessage(err.message || err.code || String(err)));
  }

  answerOffer(action) {
    const offers = this.client.state.offers;
    const opponent = this.you === "white" ? "black" : "white";
    if (offers.draw === opponent) this.run(this.client.draw(action));
    else if (offers.takeback === opponent) this.run(this.client.takeback(action));
  }

  onSquare(square) {
    const state = this.client.state;
    if (!this.seated || state.status === "over" || this.client.fatal) return;
    if (this.selected === null) {
      const piece = this.pieceOn(square);
      if (piece && (piece === piece.toUpperCase()) === (this.you === "white")) {
        this.selected = square;
        this.render();
      }
      return;
    }
    if (square === this.selected) {
      this.selected = null;
      this.render();
      return;
    }
    const own = this.pieceOn(square);
    if (own && (own === own.toUpperCase()) === (this.you === "white")) {
      this.selected = square; // pick another of one's own pieces
      this.render();
      return;
    }
    const from = this.selected;
    this.selected = null;
    const piece = this.pieceOn(from);
    if (piece?.toLowerCase() === "p" && (square[1] === "8" || square[1] === "1")) {
      this.pendingPromotion = { from, to: square };
      $("promotion").hidden = false;
      this.render();
      return;
    }
    this.run(this.client.move({ from, to: square }));
    this.render();
  }

  promote(piece) {
    const pending = this.pendingPromotion;
    this.pendingPromotion = null;
    $("promotion").hidden = true;
    if (pending && piece) this.run(this.client.move({ ...pending, promotion: piece }));
    this.render();
  }

  pieceOn(square) {
    return this.board.svg.querySelector(`text[data-on="${square}"]`)?.dataset.piece ?? null;
  }

  onConnection({ state, error }) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = state === "failed" ? "offline" : state;
    if (state === "failed" && error) {
      this.showMessage(FATAL_TEXT[error.code] ?? error.message, "fatal");
      this.render();
    }
  }

  showMessage(text, kind = "error") {
    const el = $("message");
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
  }

  clearMessage() {
    if ($("message").dataset.kind !== "fatal") $("message").hidden = true;
  }

  render() {
    const state = this.client.state;
    const flipped = this.you === "black";
    this.board.render(state.fen, {
      selected: this.selected,
      lastMove: state.moves.at(-1) ?? null,
      flipped,
    });
    const [top, bottom] = flipped ? ["white", "black"] : ["black", "white"];
    for (const [id, color] of [["player-top", top], ["player-bottom", bottom]]) {
      const el = $(id);
      el.dataset.color = color;
      const player = state.players[color];
      el.querySelector(".dot").dataset.online = String(Boolean(player.online));
      const name = player.id ?? (color === "white" ? "White" : "Black");
      el.querySelector(".name").textContent = color === this.you ? `${name} (you)` : name;
    }
    this.renderClocks();
    this.renderMoves(state);
    this.renderStatus(state);
    this.renderOffers(state);
    $("spectators").textContent = `${state.spectators} watching`;
  }

  renderClocks() {
    const state = this.client.state;
    const now = Date.now();
    for (const id of ["player-top", "player-bottom"]) {
      const el = $(id);
      const color = el.dataset.color;
      if (!color) continue;
      const clock = el.querySelector(".clock");
      clock.textContent = formatClock(state.clockLeft(color, now));
      clock.dataset.running = String(state.status !== "over" && state.clock?.running === color);
    }
  }

  renderMoves(state) {
    const list = $("moves");
    const items = [];
    for (let i = 0; i < state.san.length; i += 2) {
      const li = document.createElement("li");
      const white = document.createElement("span");
      white.className = "san";
      white.textContent = state.san[i];
      li.append(white);
      if (i + 1 < state.san.length) {
        const black = document.createElement("span");
        black.className = "san";
        black.textContent = state.san[i + 1];
        li.append(black);
      }
      items.push(li);
    }
    list.replaceChildren(...items);
    list.scrollTop = list.scrollHeight;
  }

  renderStatus(state) {
    const over = state.status === "over";
    const result = $("result");
    result.hidden = !over;
    result.textContent = over ? resultText(state) : "";
    let status = "";
    if (!state.synced) status = "";
    else if (over) status = "Game over";
    else if (this.seated) status = state.turn === this.you ? "Your move" : "Waiting for your opponent";
    else status = `${state.turn === "white" ? "White" : "Black"} to move`;
    $("status").textContent = status;
    const playing = this.seated && !over && !this.client.fatal;
    $("controls").hidden = !this.seated;
    for (const id of ["resign", "draw", "takeback"]) $(id).disabled = !playing;
    $("draw").textContent = state.offers.draw === this.you ? "Draw offered" : "Offer draw";
    $("takeback").textContent = state.offers.takeback === this.you ? "Takeback offered" : "Takeback";
    if (state.offers.draw === this.you) $("draw").disabled = true;
    if (state.offers.takeback === this.you) $("takeback").disabled = true;
    if (state.moves.length === 0) $("takeback").disabled = true;
  }

  renderOffers(state) {
    const opponent = this.you === "white" ? "black" : "white";
    const box = $("offer");
    const kind = state.offers.draw === opponent ? "draw" : state.offers.takeback === opponent ? "takeback" : null;
    box.hidden = !(this.seated && kind && state.status !== "over");
    if (!box.hidden) {
      box.dataset.kind = kind;
      $("offer-text").textContent = kind === "draw" ? "Your opponent offers a draw" : "Your opponent asks for a takeback";
    }
  }
}

const config = pageConfig();
if (config === null) {
  document.getElementById("message").textContent = "This page needs /play/{gameId}?token=... or /watch/{gameId}.";
  document.getElementById("message").hidden = false;
} else if (config.mode === "play" && !config.token) {
  document.getElementById("message").textContent = "This play link has no seat token. Use /watch/ to watch.";
  document.getElementById("message").hidden = false;
  document.getElementById("connection").textContent = "offline";
} else {
  new Page(config);
}
