// Pure parts of the client, without a cluster: the game state and the reaction to frames
// a real cluster never sends on purpose (a gap in v, a sync that goes back).  A scripted
// WebSocket stands in for the edge here; the cluster tests are in client.test.js.

import assert from "node:assert/strict";
import { test } from "node:test";

import { GameClient, GameState } from "../xlmate-client.js";

const START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1";
const AFTER_E4 = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1";
const CLOCK = { white: 300000, black: 300000, increment: 3000, running: null };

function sync(v, extra = {}) {
  return {
    type: "sync",
    gameId: "g",
    v,
    you: "white",
    status: "waiting",
    fen: START,
    moves: [],
    san: [],
    turn: "white",
    clock: CLOCK,
    result: null,
    reason: null,
    players: { white: { id: "w", online: true }, black: { id: null, online: false } },
    offers: { draw: null, takeback: null },
    ...extra,
  };
}

function move(v, uci, san, fen, by, running = null) {
  return { type: "move", gameId: "g", v, uci, san, fen, by, clock: { ...CLOCK, running } };
}

/** A WebSocket that opens at once, records what the client sends, and lets the test push frames. */
class ScriptedSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    ScriptedSocket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  push(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  close(code = 1000, reason = "") {
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }
}

test("GameState follows moves, offers as the server lapses them, takebacks and the end", () => {
  // Proves: the local view mirrors the server's rules for san, turn, offers and results.
  const state = new GameState("g");
  state.applySync(sync(3, { offers: { draw: "black", takeback: null } }), 0);
  state.applyEvent(move(4, "e2e4", "e4", AFTER_E4, "white", "black"), 1000);
  assert.deepEqual([state.moves, state.san, state.turn, state.status], [["e2e4"], ["e4"], "black", "started"]);
  assert.equal(state.offers.draw, null, "a draw offer lapses when the offerer's opponent moves");
  state.applyEvent({ type: "takeback", v: 5, action: "offer", by: "white" }, 1000);
  assert.equal(state.offers.takeback, "white");
  state.applyEvent(
    { type: "takeback", v: 6, action: "accept", by: "black", fen: START, moves: [], clock: CLOCK },
    1000,
  );
  assert.deepEqual([state.moves, state.san, state.turn, state.offers.takeback], [[], [], "white", null]);
  state.applyEvent({ type: "draw", v: 7, action: "offer", by: "white" }, 1000);
  state.applyEvent({ type: "draw", v: 8, action: "accept", by: "black" }, 1000);
  state.applyEvent({ type: "game_over", v: 9, result: "1/2-1/2", reason: "draw_agreed" }, 1000);
  assert.deepEqual([state.status, state.result, state.reason, state.offers.draw], ["over", "1/2-1/2", "draw_agreed", null]);
  assert.equal(state.v, 9);
});

test("clockLeft ticks the running side down from the last clock object only", () => {
  // Proves: a page's clocks tick locally: running side minus local time elapsed, floored at 0.
  const state = new GameState("g");
  state.applySync(sync(2, { status: "started", clock: { ...CLOCK, running: "white" } }), 10000);
  assert.equal(state.clockLeft("white", 12500), 297500);
  assert.equal(state.clockLeft("black", 12500), 300000);
  assert.equal(state.clockLeft("white", 10000 + 400000), 0);
  state.applyEvent({ type: "game_over", v: 3, result: "0-1", reason: "resign" }, 13000);
  assert.equal(state.clockLeft("white", 99999), 297000, "stopped at the end");
});

test("a gap in v is not applied: the client asks for a sync and takes it as the state", async () => {
  // Proves: events after a gap are ignored until the next sync, which replaces the state.
  const client = new GameClient({ gameId: "g", token: "t", edgeUrl: "ws://edge", WebSocket: ScriptedSocket, pingInterval: 0 });
  const moves = [];
  client.on("move", (m) => moves.push(m.v));
  const connected = client.connect();
  await client.waitFor(() => client.connection === "connected", 1000);
  const ws = ScriptedSocket.last;
  ws.push(sync(0));
  await connected;
  ws.push(move(1, "e2e4", "e4", AFTER_E4, "white"));
  ws.push(move(3, "g1f3", "Nf3", START, "white")); // v 2 never came
  ws.push(move(4, "g8f6", "Nf6", START, "black"));
  assert.deepEqual(moves, [1]);
  assert.deepEqual(ws.sent.filter((m) => m.type === "sync").length, 1, "one sync asked for");
  ws.push(sync(4, { moves: ["e2e4", "e7e5", "g1f3", "g8f6"], san: ["e4", "e5", "Nf3", "Nf6"] }));
  assert.equal(client.state.v, 4);
  assert.deepEqual(client.state.san, ["e4", "e5", "Nf3", "Nf6"]);
  ws.push(move(5, "f1c4", "Bc4", START, "white"));
  assert.deepEqual(moves, [1, 5], "events apply again after the sync");
  ws.push(move(5, "f1c4", "Bc4", START, "white"));
  assert.deepEqual(moves, [1, 5], "a v seen already is ignored");
  await client.close();
});

test("a sync with a lower v still replaces the state (and is counted)", async () => {
  // Proves: contract 1.1: a mid-game sync replaces the client's state whatever its v.
  const client = new GameClient({ gameId: "g", token: "t", edgeUrl: "ws://edge", WebSocket: ScriptedSocket, pingInterval: 0 });
  const connected = client.connect();
  await client.waitFor(() => client.connection === "connected", 1000);
  ScriptedSocket.last.push(sync(6, { moves: ["e2e4"], san: ["e4"] }));
  await connected;
  ScriptedSocket.last.push(sync(5, { moves: [], san: [] }));
  assert.equal(client.state.v, 5);
  assert.deepEqual(client.state.moves, []);
  assert.equal(client.rewinds, 1);
  await client.close();
});

test("a reconnect resumes with ?v= and re-sends the unacked command with the same id", async () => {
  // Proves: resume and command ids on the client side, frame by frame.
  const client = new GameClient({
    gameId: "g", token: "t", edgeUrl: "ws://edge", WebSocket: ScriptedSocket, pingInterval: 0, baseBackoff: 1, maxBackoff: 1,
  });
  const connected = client.connect();
  await client.waitFor(() => client.connection === "connected", 1000);
  const first = ScriptedSocket.last;
  first.push(sync(2));
  await connected;
  const acked = client.move("e2e4");
  const [sent] = first.sent.filter((m) => m.type === "move");
  first.close(1006, "");
  await client.waitFor(() => client.connection === "connected" && ScriptedSocket.last !== first, 2000);
  const second = ScriptedSocket.last;
  assert.match(second.url, /\/v1\/games\/g\/ws\?token=t&v=2$/);
  const resent = second.sent.filter((m) => m.type === "move");
  assert.deepEqual(resent, [sent], "the same command, the same id");
  second.push({ type: "ack", id: sent.id, v: 3 });
  assert.equal(await acked, 3);
  await client.close();
});
