// The JS client against a real cluster (discovery, broker, edges: the `xlmate` commands),
// started by this file on free ports.  Run: `node --test clients/js/test/`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { CommandError, ConnectionError, GameClient, backoffDelay } from "../xlmate-client.js";
import { Cluster, waitUntil } from "../testkit/cluster.js";

const FOOLS_MATE = ["f2f3", "e7e5", "g2g4", "d8h4"];
let cluster;

before(async () => {
  cluster = await Cluster.start({ edges: 2 });
});

after(async () => {
  await cluster?.stop();
});

/** Print the cluster's logs when a test fails, then fail. */
async function withLogs(body) {
  try {
    await body();
  } catch (err) {
    console.error(cluster.logs());
    throw err;
  }
}

/** A WebSocket class that counts the sockets a client opens. */
function countingWebSocket() {
  const opened = [];
  class Counting extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      opened.push(url);
    }
  }
  return { Counting, opened };
}

function client(gameId, token, extra = {}) {
  return new GameClient({
    gameId,
    token,
    discoveryUrl: cluster.discoveryUrl,
    region: "eu-west",
    WebSocket,
    maxBackoff: 500,
    ...extra,
  });
}

/** Record every versioned event and sync a client applies; assert v only ever steps by 1. */
function recorder(c) {
  const seen = { events: [], syncs: 0 };
  for (const type of ["move", "game_over", "draw", "takeback"]) {
    c.on(type, (event) => {
      const previous = seen.events.at(-1)?.v ?? event.v - 1;
      seen.events.push(event);
      assert.ok(event.v === previous + 1 || seen.lastSync === event.v - 1, `v jumped to ${event.v}`);
    });
  }
  c.on("sync", (sync) => {
    seen.syncs += 1;
    seen.lastSync = sync.v;
  });
  return seen;
}

async function seat(game, extra = {}) {
  const white = client(game.gameId, game.white.token, extra);
  const black = client(game.gameId, game.black.token, extra);
  await Promise.all([white.connect({ timeout: 10000 }), black.connect({ timeout: 10000 })]);
  return [white, black];
}

test("backoffDelay is full jitter under an exponential cap", () => {
  // Proves: the delay is random * min(cap, base * 2^attempt), so it never exceeds the cap.
  assert.equal(backoffDelay(0, { base: 50, cap: 2000, random: () => 1 }), 50);
  assert.equal(backoffDelay(3, { base: 50, cap: 2000, random: () => 0.5 }), 200);
  assert.equal(backoffDelay(40, { base: 50, cap: 2000, random: () => 1 }), 2000);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
});

test("a whole game: two seats and a spectator see one game to checkmate", () =>
  withLogs(async () => {
    // Proves: discovery placement, commands acked with v, the local state and the events agree.
    const game = await cluster.newGame();
    const [white, black] = await seat(game);
    const watcher = client(game.gameId, null);
    await watcher.connect({ timeout: 10000 });
    const records = [white, black, watcher].map(recorder);
    try {
      assert.equal(white.state.you, "white");
      assert.equal(watcher.state.you, "spectator");
      assert.equal(white.connectedTo, black.connectedTo, "one game, one edge per region");
      await waitUntil(() => watcher.state.players.white.online && watcher.state.players.black.online, 5000, "presence");

      // Offers on the way: a takeback offered and declined, a draw offered and declined.
      assert.equal(await white.move("e2e4"), 1);
      assert.equal(await white.takeback("offer"), 2);
      await waitUntil(() => black.state.offers.takeback === "white", 5000, "takeback offer");
      assert.equal(await black.takeback("accept"), 3);
      await waitUntil(() => watcher.state.v === 3, 5000, "takeback");
      assert.deepEqual(watcher.state.moves, []);
      assert.equal(await white.draw("offer"), 4);
      await black.draw("decline");

      const players = [white, black];
      let v = 5;
      for (const [ply, uci] of FOOLS_MATE.entries()) {
        const acked = await players[ply % 2].move(uci);
        v += 1;
        assert.ok(acked >= v, `move ${uci} acked at ${acked}`);
      }
      const last = v + 1; // the game_over after the mating move
      for (const c of [white, black, watcher]) await c.waitFor(() => c.state.v === last, 5000);
      for (const c of [white, black, watcher]) {
        assert.deepEqual(c.state.moves, FOOLS_MATE);
        assert.deepEqual(c.state.san, ["f3", "e5", "g4", "Qh4#"]);
        assert.equal(c.state.status, "over");
        assert.equal(c.state.result, "0-1");
        assert.equal(c.state.reason, "checkmate");
        assert.equal(c.state.turn, "white");
        assert.equal(c.state.clock.running, null);
      }
      const vs = records[2].events.map((e) => e.v);
      assert.deepEqual(vs, Array.from({ length: vs.length }, (_, i) => i + 1));
      await assert.rejects(black.move("a7a6"), (err) => err instanceof CommandError && err.code === "game_over");
    } finally {
      await Promise.all([white.close(), black.close(), watcher.close()]);
    }
  }));

test("an illegal move, a move out of turn and a spectator's move reject with their codes", () =>
  withLogs(async () => {
    // Proves: command promises reject with a CommandError carrying the server's code and message.
    const game = await cluster.newGame();
    const [white, black] = await seat(game);
    const watcher = client(game.gameId, null);
    await watcher.connect({ timeout: 10000 });
    const errors = [];
    white.on("error", (e) => errors.push(e.code));
    try {
      await assert.rejects(white.move("e2e5"), (err) => {
        assert.ok(err instanceof CommandError);
        assert.equal(err.code, "illegal_move");
        assert.ok(err.message.length > 0);
        return true;
      });
      await assert.rejects(black.move("e7e5"), (err) => err.code === "not_your_turn");
      await assert.rejects(watcher.move("e2e4"), (err) => err.code === "not_a_player");
      await assert.rejects(black.draw("accept"), (err) => err.code === "no_offer");
      assert.deepEqual(errors, ["illegal_move"]);
      assert.equal(await white.move({ from: "e2", to: "e4" }), 1, "the game goes on");
    } finally {
      await Promise.all([white.close(), black.close(), watcher.close()]);
    }
  }));

test("a bad token, a token for another game and an unknown game give up with 4001/4003/4004", () =>
  withLogs(async () => {
    // Proves: fatal close codes reject connect() with a ConnectionError and stop the loop (one socket).
    const game = await cluster.newGame();
    const other = await cluster.newGame();
    const cases = [
      [game.gameId, "not-a-token", 4001],
      [game.gameId, other.white.token, 4003],
      ["no-such-game-here", null, 4004],
    ];
    for (const [gameId, token, code] of cases) {
      const { Counting, opened } = countingWebSocket();
      const c = client(gameId, token, { WebSocket: Counting });
      await assert.rejects(c.connect(), (err) => err instanceof ConnectionError && err.code === code);
      assert.equal(c.connection, "failed");
      await assert.rejects(c.move("e2e4"), (err) => err instanceof ConnectionError && err.code === code);
      await c.close(); // returns at once: the loop has ended
      assert.equal(opened.length, 1, `no reconnect loop after ${code}`);
      assert.equal(c.connection, "failed");
    }
  }));

test("flooding is rate limited: rate_limited errors (and 4008 past the limit)", () =>
  withLogs(async () => {
    // Proves: the edge's rate limit reaches the caller as CommandError("rate_limited").
    const game = await cluster.newGame();
    const [white, black] = await seat(game);
    const closes = [];
    white.on("connection", (e) => e.lastClose && closes.push(e.lastClose.code));
    try {
      const results = await Promise.allSettled(
        Array.from({ length: 80 }, () => white.draw("decline")),
      );
      const codes = results.map((r) => (r.status === "rejected" ? r.reason.code : "acked"));
      assert.ok(codes.includes("rate_limited") || closes.includes(4008), `codes: ${codes}`);
      assert.ok(codes.includes("no_offer"), "the first ones went through");
      // The client recovers: after the flood a command works again.
      await white.connect({ timeout: 10000 });
      const answer = await waitUntil(
        async () => {
          const result = await white.move("d2d4").catch((e) => e.code);
          return result === "rate_limited" ? null : result;
        },
        10000,
        "the limit to let a command through",
      );
      assert.equal(answer, 1, "the move after the flood is acked");
    } finally {
      await Promise.all([white.close(), black.close()]);
    }
  }));

test("an edge SIGKILLed mid-game: the game goes on on another edge, no move lost or doubled", () =>
  withLogs(async () => {
    // Proves: reconnect through discovery's fallbacks, resume with ?v=, unacked commands re-sent.
    while (cluster.liveEdges.length < 2) await cluster.startEdge();
    const game = await cluster.newGame();
    const [white, black] = await seat(game);
    const records = [white, black].map(recorder);
    const script = ["e2e4", "e7e5", "g1f3", "b8c6", "f1b5", "a7a6", "b5a4", "g8f6"];
    try {
      const players = [white, black];
      for (const uci of script.slice(0, 4)) await players[script.indexOf(uci) % 2].move(uci);
      const doomed = cluster.edgeAt(white.connectedTo);
      assert.ok(doomed, `white is on a known edge (${white.connectedTo})`);
      await doomed.proc.stop("SIGKILL");
      // A move sent while white is cut off: queued, re-sent after the reconnect, applied once.
      const inFlight = white.move(script[4]);
      assert.equal(await inFlight, 5);
      for (const uci of script.slice(5)) await players[script.indexOf(uci) % 2].move(uci);
      for (const c of players) await c.waitFor(() => c.state.v === script.length, 10000);
      for (const [i, c] of players.entries()) {
        assert.notEqual(c.connectedTo, doomed.url);
        assert.deepEqual(c.state.moves, script);
        const applied = records[i].events.map((e) => e.uci);
        assert.equal(new Set(records[i].events.map((e) => e.v)).size, records[i].events.length, "no v twice");
        assert.ok(applied.every((uci, k) => uci === script[script.length - applied.length + k]), "events in order");
      }
      const state = await (await fetch(`${cluster.liveEdges[0].http}/v1/games/${game.gameId}`)).json();
      assert.deepEqual(state.moves, script, "the broker holds each move exactly once");
    } finally {
      await Promise.all([white.close(), black.close()]);
    }
  }));

test("a draining edge (SIGTERM -> 1012): the client asks discovery again and goes on", () =>
  withLogs(async () => {
    // Proves: on close 1012 the client re-asks discovery at once and resumes on another edge.
    while (cluster.liveEdges.length < 2) await cluster.startEdge();
    const game = await cluster.newGame();
    const [white, black] = await seat(game);
    const closes = [];
    for (const c of [white, black]) c.on("connection", (e) => e.lastClose && closes.push(e.lastClose.code));
    try {
      await white.move("d2d4");
      await black.move("d7d5");
      const draining = cluster.edgeAt(white.connectedTo);
      await draining.proc.stop("SIGTERM");
      await white.waitFor(() => white.connection === "connected" && white.connectedTo !== draining.url, 10000);
      assert.ok(closes.includes(1012), `closes seen: ${closes}`);
      assert.equal(await white.move("c2c4"), 3);
      await black.waitFor(() => black.state.v === 3, 10000);
      assert.deepEqual(black.state.moves, ["d2d4", "d7d5", "c2c4"]);
      assert.notEqual(black.connectedTo, draining.url);
    } finally {
      await Promise.all([white.close(), black.close()]);
    }
  }));
