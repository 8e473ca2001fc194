/**
 * XLMate realtime client: one seat (or a spectator) of one game, in browsers and Node 20+.
 *
 * Theory of operation.  A `GameClient` owns one connection loop:
 *
 *   pick an edge -> open `{edge}/v1/games/{id}/ws?token=..&v=..` -> read frames -> closed
 *      ^                                                                            |
 *      +---- back-off (full jitter, capped), or at once after 1012 (draining) -----+
 *
 * - The edge comes from discovery (`discoveryUrl`, `GET /v1/nodes/discovery?gameId&region`):
 *   its `node`, else the first of its fallback `nodes` we did not fail to reach in the last
 *   3 s; or from a fixed `edgeUrl` (also the fallback when discovery cannot be reached).
 * - Resume: every reconnect carries `?v=<last v seen>`, so the edge sends the events we
 *   missed (or a full `sync`).  Events with a `v` already seen are ignored; an event
 *   that skips a `v` is not applied: the client asks for a `sync` and takes the next
 *   `sync` as the state.
 * - Commands carry an `id`; until its `ack` (or `error`) arrives, a command is re-sent
 *   on every new connection.  The cluster applies an id at most once and acks it again,
 *   so nothing is lost or doubled.  `unavailable` answers are retried with the same id
 *   until `commandTimeout`.
 * - Close codes 4001 (bad token), 4003 (token for another game) and 4004 (no such game)
 *   end the loop with a `ConnectionError`: retrying cannot help.
 * - A `ping` message goes out every `pingInterval`; a socket that hears nothing for two
 *   intervals is dropped and replaced, so a half-open connection does not hang a game.
 *
 * The client keeps a local view of the game (`client.state`, a `GameState`) and emits
 * events: `sync`, `move`, `game_over`, `draw`, `takeback`, `presence`, `error` (every
 * `error` message), `ack`, `change` (after any state change) and `connection` (the
 * connection state: connecting, connected, reconnecting, offline, failed, closed).
 *
 * No runtime dependency: the WebSocket and fetch implementations are injectable
 * (`WebSocket`, `fetch` options), defaulting to the globals of the browser or of Node.
 */

export const CLOSE_BAD_TOKEN = 4001;
export const CLOSE_WRONG_GAME = 4003;
export const CLOSE_NO_SUCH_GAME = 4004;
export const CLOSE_POLICY = 4008;
export const CLOSE_DRAINING = 1012;
/** Close codes after which reconnecting cannot help. */
export const FATAL_CLOSES = new Set([CLOSE_BAD_TOKEN, CLOSE_WRONG_GAME, CLOSE_NO_SUCH_GAME]);
/** Close codes after which this edge should be passed over for a moment. */
const EDGE_TROUBLE = new Set([1006, 1011, CLOSE_DRAINING, 1013]);
const VERSIONED = new Set(["move", "game_over", "draw", "takeback"]);
const FAILED_FOR_MS = 3000; // an edge we could not reach is passed over this long
const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`
const START_FEN = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1";

/** The root of this client's errors. */
export class XLMateError extends Error {
  constructor(message) {
    super(message);
    this.name = "XLMateError";
  }
}

/** The client cannot go on: a fatal close code (4001/4003/4004), or it was closed. */
export class ConnectionError extends XLMateError {
  /**
   * @param {string} message
   * @param {number | null} code the WebSocket close code, when one caused it
   * @param {string} reason the server's close reason
   */
  constructor(message, code = null, reason = "") {
    super(message);
    this.name = "ConnectionError";
    this.code = code;
    this.reason = reason;
  }
}

/** The cluster answered a command with `error` (`code` is the protocol's error code). */
export class CommandError extends XLMateError {
  /**
   * @param {string} code e.g. "illegal_move", "not_your_turn", "rate_limited"
   * @param {string} message the server's explanation
   * @param {string | number | null} id the command's id
   */
  constructor(code, message, id = null) {
    super(message || code);
    this.name = "CommandError";
    this.code = code;
    this.id = id;
  }
}

/** Full-jitter exponential back-off (ms): uniform in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt, { base = 50, cap = 2000, random = Math.random } = {}) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

function other(color) {
  return color === "white" ? "black" : "white";
}

function turnOf(fen) {
  return fen.split(" ")[1] === "b" ? "black" : "white";
}

/**
 * What the client knows of the game, built from `sync` and events only.
 * `clockAt` is the local time (ms, from the client's `now`) when `clock` arrived, so a
 * page can tick the running side down locally: see `clockLeft`.
 */
export class GameState {
  constructor(gameId) {
    this.gameId = gameId;
    this.v = 0;
    this.synced = false;
    this.you = null;
    this.status = "waiting";
    this.fen = START_FEN;
    this.moves = [];
    this.san = [];
    this.turn = "white";
    this.clock = null;
    this.clockAt = 0;
    this.result = null;
    this.reason = null;
    this.players = { white: { id: null, online: false }, black: { id: null, online: false } };
    this.offers = { draw: null, takeback: null };
    this.spectators = 0;
  }

  /** Replace everything with a full state (whatever its `v`: the server is the authority). */
  applySync(sync, now) {
    this.v = sync.v;
    this.synced = true;
    this.you = sync.you ?? this.you;
    this.status = sync.status ?? this.status;
    this.fen = sync.fen ?? START_FEN;
    this.moves = [...(sync.moves ?? [])];
    this.san = [...(sync.san ?? [])];
    this.turn = sync.turn ?? turnOf(this.fen);
    this.setClock(sync.clock ?? null, now);
    this.result = sync.result ?? null;
    this.reason = sync.reason ?? null;
    if (sync.players) {
      for (const color of ["white", "black"]) {
        const seat = sync.players[color] ?? {};
        this.players[color] = { id: seat.id ?? null, online: Boolean(seat.online) };
      }
    }
    this.offers = { draw: sync.offers?.draw ?? null, takeback: sync.offers?.takeback ?? null };
  }

  /** Advance by one versioned event (`v` is exactly the next one). */
  applyEvent(event, now) {
    this.v = event.v;
    switch (event.type) {
      case "move":
        this.moves.push(event.uci);
        this.san.push(event.san);
        this.fen = event.fen;
        this.turn = turnOf(event.fen);
        this.status = "started";
        if (event.clock) this.setClock(event.clock, now);
        // Offers lapse as on the server: a draw offer when the offerer's opponent
        // moves, a takeback offer when the offerer moves on.
        if (this.offers.draw && this.offers.draw !== event.by) this.offers.draw = null;
        if (this.offers.takeback === event.by) this.offers.takeback = null;
        break;
      case "game_over": {
        // The final clocks: the event's, else ours stopped now (before status says "over").
        const final = event.clock ? { ...event.clock, running: null } : this.clock && this.clockSnapshot(now);
        this.status = "over";
        this.result = event.result;
        this.reason = event.reason;
        if (final) this.setClock(final, now);
        this.offers = { draw: null, takeback: null };
        break;
      }
      case "draw":
      case "takeback":
        this.offers[event.type] = event.action === "offer" ? event.by : null;
        if (event.type === "takeback" && event.action === "accept" && event.moves) {
          this.moves = [...event.moves];
          this.san = this.san.slice(0, this.moves.length);
          this.fen = event.fen;
          this.turn = turnOf(event.fen);
          this.offers = { draw: null, takeback: null };
          if (event.clock) this.setClock(event.clock, now);
        }
        break;
      default:
        break;
    }
  }

  /** Presence is not versioned: it just replaces the online flags and spectator count. */
  applyPresence(presence) {
    this.players.white = { ...this.players.white, online: Boolean(presence.white) };
    this.players.black = { ...this.players.black, online: Boolean(presence.black) };
    this.spectators = Number(presence.spectators) || 0;
  }

  setClock(clock, now) {
    this.clock = clock ? { ...clock } : null;
    this.clockAt = now;
  }

  /** Milliseconds left for `color` at local time `now`, ticking the running side down. */
  clockLeft(color, now) {
    if (!this.clock) return null;
    const left = this.clock[color];
    if (this.status === "over" || this.clock.running !== color) return left;
    return Math.max(0, left - (now - this.clockAt));
  }

  /** The clock at `now` with no side running (what a finished game shows). */
  clockSnapshot(now) {
    return {
      ...this.clock,
      white: this.clockLeft("white", now),
      black: this.clockLeft("black", now),
      running: null,
    };
  }
}

/** A tiny typed event emitter (the same in browsers and Node). */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Call `listener` on every `type` event; returns a function that removes it. */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  once(type, listener) {
    const off = this.on(type, (...args) => {
      off();
      listener(...args);
    });
    return off;
  }

  _emit(type, ...args) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(...args);
      } catch (err) {
        // A broken listener must not break the connection loop; surface it anyway.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** One seat (`token`) or a spectator (no token) of `gameId`; see the module docs. */
export class GameClient extends Emitter {
  /** @param {import("./xlmate-client.js").GameClientOptions} options */
  constructor(options) {
    super();
    const {
      gameId,
      token = null,
      discoveryUrl = null,
      edgeUrl = null,
      region = null,
      WebSocket: WebSocketImpl = globalThis.WebSocket,
      fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
      commandTimeout = 15000,
      openTimeout = 10000,
      baseBackoff = 50,
      maxBackoff = 2000,
      pingInterval = 15000,
      offlineAfter = 3,
      random = Math.random,
      now = () => Date.now(),
    } = options ?? {};
    if (!gameId) throw new XLMateError("gameId is required");
    if (!discoveryUrl && !edgeUrl) throw new XLMateError("give discoveryUrl or edgeUrl");
    if (!WebSocketImpl) throw new XLMateError("no WebSocket implementation: pass one");
    if (discoveryUrl && !fetchImpl) throw new XLMateError("no fetch implementation: pass one");
    this.gameId = gameId;
    this.token = token;
    this.discoveryUrl = discoveryUrl ? discoveryUrl.replace(/\/+$/, "") : null;
    this.edgeUrl = edgeUrl ? edgeUrl.replace(/\/+$/, "") : null;
    this.region = region;
    this.commandTimeout = commandTimeout;
    this.openTimeout = openTimeout;
    this.baseBackoff = baseBackoff;
    this.maxBackoff = maxBackoff;
    this.pingInterval = pingInterval;
    this.offlineAfter = offlineAfter;
    this._WebSocket = WebSocketImpl;
    this._fetch = fetchImpl;
    this._random = random;
    this._now = now;

    this.state = new GameState(gameId);
    /** @type {"idle"|"connecting"|"connected"|"reconnecting"|"offline"|"failed"|"closed"} */
    this.connection = "idle";
    this.connectedTo = null;
    this.connections = 0; // sockets opened so far
    this.rewinds = 0; // syncs older than what we had seen (a server bug if ever > 0)
    /** @type {{code: number, reason: string, edge: string} | null} how the last socket ended */
    this.lastClose = null;
    /** @type {ConnectionError | null} */
    this.fatal = null;

    this._prefix = randomPrefix(); // ids are per seat: two tabs of one seat must not collide
    this._seq = 0;
    this._outgoing = new Map(); // id -> {body, resolve, reject, timer, deadline}
    this._failed = new Map(); // edge URL -> when reaching it last failed (ms)
    this._ws = null;
    this._endSession = null; // resolves the current session's promise
    this._loop = null;
    this._closing = false;
    this._awaitingSync = false;
    this._wake = null; // cuts a back-off sleep short
    this._pinger = null;
    this._lastHeard = 0;
    this._onOnline = () => this._wake?.();
  }

  // --- lifecycle ---------------------------------------------------------------

  /**
   * Start the connection loop (once) and resolve with this client at the first `sync`;
   * reject with the `ConnectionError` if the loop gives up first.  Without `timeout` (ms)
   * it waits as long as the client keeps trying.
   */
  connect({ timeout = Infinity } = {}) {
    if (this._closing) return Promise.reject(new ConnectionError("client closed"));
    if (this._loop === null) {
      globalThis.addEventListener?.("online", this._onOnline);
      this._loop = this._run().catch((err) => this._giveUp(err));
    }
    return this.waitFor(() => this.state.synced, timeout).then(() => this);
  }

  /** Close the socket, stop reconnecting, reject unacked commands; idempotent. */
  async close() {
    if (!this._closing) {
      this._closing = true;
      globalThis.removeEventListener?.("online", this._onOnline);
      this._dropSocket(1000, "client closed");
      this._wake?.();
      this._rejectAll(new ConnectionError("client closed"));
      if (this.connection !== "failed") this._setConnection("closed");
    }
    await this._loop;
  }

  /**
   * Resolve once `predicate()` holds (checked after every change), reject with the fatal
   * error if the client gives up, or with an `XLMateError` after `timeout` ms.
   */
  waitFor(predicate, timeout = Infinity) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const offs = [];
      const done = (err) => {
        for (const off of offs) off();
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (predicate()) done();
        else if (this.fatal) done(this.fatal);
        else if (this._closing) done(new ConnectionError("client closed"));
      };
      offs.push(this.on("change", check), this.on("connection", check));
      if (Number.isFinite(timeout)) {
        timer = setTimeout(() => done(new XLMateError("timed out waiting for a condition")), timeout);
      }
      check();
    });
  }

  // --- commands ------------------------------------------------------------------

  /**
   * Send a command and resolve with the acked `v`, or reject with a `CommandError`
   * (the server's `error`, or `unavailable` when no ack came within `commandTimeout`).
   */
  command(payload, { id } = {}) {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this._closing) return Promise.reject(new ConnectionError("client closed"));
    const cid = id ?? `${this._prefix}-${++this._seq}`;
    const body = { ...payload, id: cid };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._outgoing.delete(cid);
        reject(new CommandError("unavailable", "no ack in time", cid));
      }, this.commandTimeout);
      this._outgoing.set(cid, {
        body,
        resolve,
        reject,
        timer,
        deadline: this._now() + this.commandTimeout,
      });
      this._send(body);
    });
  }

  /** Play a move: `"e2e4"`, `"e7e8q"` or `{from, to, promotion}`. */
  move(move) {
    if (typeof move === "string") return this.command({ type: "move", uci: move });
    const { from, to, promotion } = move;
    return this.command(
      promotion ? { type: "move", from, to, promotion } : { type: "move", from, to },
    );
  }

  resign() {
    return this.command({ type: "resign" });
  }

  /** `action`: "offer", "accept" or "decline". */
  draw(action) {
    return this.command({ type: "draw", action });
  }

  /** `action`: "offer", "accept" or "decline". */
  takeback(action) {
    return this.command({ type: "takeback", action });
  }

  /** Ask the server for a fresh `sync`. */
  requestSync() {
    this._send({ type: "sync" });
  }

  /** Send any frame as is, if connected (tests of bad input). Returns whether it went out. */
  sendRaw(frame) {
    return this._send(frame);
  }

  _send(payload) {
    const ws = this._ws;
    if (ws === null || ws.readyState !== OPEN) return false; // commands go again on reconnect
    try {
      ws.send(typeof payload === "string" ? payload : JSON.stringify(payload));
      return true;
    } catch {
      return false;
    }
  }

  _rejectAll(err) {
    for (const out of this._outgoing.values()) {
      clearTimeout(out.timer);
      out.reject(err);
    }
    this._outgoing.clear();
  }

  // --- the connection loop ---------------------------------------------------------

  async _run() {
    let attempt = 0;
    let failures = 0; // attempts in a row that did not reach an edge
    this._setConnection("connecting");
    while (!this._closing) {
      let url = null;
      let outcome = null;
      try {
        url = await this._pickEdge();
        outcome = await this._session(url);
      } catch (err) {
        if (!(err instanceof RetryableError)) throw err;
      }
      if (this._closing) return;
      if (outcome !== null) this.lastClose = { code: outcome.code, reason: outcome.reason, edge: url };
      if (outcome !== null && FATAL_CLOSES.has(outcome.code)) {
        this._giveUp(
          new ConnectionError(closeMessage(outcome.code, outcome.reason), outcome.code, outcome.reason),
        );
        return;
      }
      if (outcome?.opened) {
        attempt = 0;
        failures = 0;
      } else {
        failures += 1;
      }
      if (url !== null && (outcome === null || !outcome.opened || EDGE_TROUBLE.has(outcome.code))) {
        this._failed.set(url, this._now());
      }
      this._setConnection(failures >= this.offlineAfter || isOffline() ? "offline" : "reconnecting");
      if (outcome?.code === CLOSE_DRAINING) continue; // ask discovery again, at once
      await this._sleep(backoffDelay(attempt, { base: this.baseBackoff, cap: this.maxBackoff, random: this._random }));
      attempt += 1;
    }
  }

  _giveUp(err) {
    if (this.fatal || this._closing) return;
    this.fatal = err instanceof ConnectionError ? err : new ConnectionError(String(err?.message ?? err));
    globalThis.removeEventListener?.("online", this._onOnline);
    this._dropSocket(1000, "giving up");
    this._rejectAll(this.fatal);
    this._setConnection("failed");
  }

  _setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    this._emit("connection", {
      state,
      error: this.fatal,
      edge: this.connectedTo,
      lastClose: this.lastClose,
    });
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._wake = null;
        resolve();
      }, ms);
      this._wake = () => {
        clearTimeout(timer);
        this._wake = null;
        resolve();
      };
    });
  }

  async _pickEdge() {
    if (this.discoveryUrl === null) return this.edgeUrl;
    const query = new URLSearchParams({ gameId: this.gameId });
    if (this.region) query.set("region", this.region);
    let answer;
    try {
      const signal = typeof AbortSignal?.timeout === "function" ? AbortSignal.timeout(3000) : undefined;
      const response = await this._fetch(`${this.discoveryUrl}/v1/nodes/discovery?${query}`, { signal });
      if (!response.ok) throw new RetryableError(`discovery answered ${response.status}`);
      answer = await response.json();
    } catch (err) {
      if (this.edgeUrl) return this.edgeUrl; // discovery is down: the configured edge
      throw err instanceof RetryableError ? err : new RetryableError(String(err?.message ?? err));
    }
    const candidates = [answer.node, ...(answer.nodes ?? [])].filter((n) => n && n.url);
    if (candidates.length === 0) throw new RetryableError("discovery has no edge for us");
    const now = this._now();
    const fresh = candidates.find((n) => now - (this._failed.get(n.url) ?? -Infinity) >= FAILED_FOR_MS);
    return (fresh ?? candidates[0]).url.replace(/\/+$/, "");
  }

  _socketUrl(base) {
    const kind = this.token ? "ws" : "spectate";
    const query = new URLSearchParams();
    if (this.token) query.set("token", this.token);
    if (this.state.synced) query.set("v", String(this.state.v));
    const qs = query.toString();
    const suffix = qs ? `?${qs}` : "";
    return `${base}/v1/games/${encodeURIComponent(this.gameId)}/${kind}${suffix}`;
  }

  /** One socket's life; resolves with {code, reason, opened} when it is over. */
  _session(base) {
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this._WebSocket(this._socketUrl(base));
      } catch (err) {
        resolve({ code: 1006, reason: String(err?.message ?? err), opened: false });
        return;
      }
      this._ws = ws;
      let opened = false;
      let ended = false;
      const openTimer = setTimeout(() => {
        if (!opened) this._dropSocket(1000, "open timeout");
      }, this.openTimeout);
      const end = (code, reason) => {
        if (ended) return;
        ended = true;
        clearTimeout(openTimer);
        clearInterval(this._pinger);
        this._pinger = null;
        ws.onopen = ws.onmessage = ws.onclose = null;
        ws.onerror = () => {}; // (Node's ws throws an error event nobody listens to)
        if (this._ws === ws) this._ws = null;
        this._endSession = null;
        this.connectedTo = null;
        this._awaitingSync = false;
        resolve({ code, reason, opened });
      };
      this._endSession = end;
      ws.onopen = () => {
        opened = true;
        clearTimeout(openTimer);
        this.connectedTo = base;
        this.connections += 1;
        this._lastHeard = this._now();
        this._startPinging(ws);
        this._setConnection("connected");
        for (const out of this._outgoing.values()) this._send(out.body);
      };
      ws.onmessage = (event) => {
        this._lastHeard = this._now();
        if (typeof event.data !== "string") return; // the protocol speaks text frames
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message && typeof message === "object") this._onMessage(message);
      };
      ws.onerror = () => {}; // a close event always follows
      ws.onclose = (event) => end(event.code, event.reason ?? "");
    });
  }

  /** Close the current socket and end its session now (no waiting for a dead peer). */
  _dropSocket(code, reason) {
    const ws = this._ws;
    const end = this._endSession;
    if (ws === null) return;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
    end?.(1006, reason);
  }

  _startPinging(ws) {
    if (!(this.pingInterval > 0)) return;
    this._pinger = setInterval(() => {
      if (this._now() - this._lastHeard > 2 * this.pingInterval) {
        this._dropSocket(1000, "no answer to pings"); // half-open: replace it
      } else if (ws.readyState === OPEN) {
        this._send({ type: "ping" });
      }
    }, this.pingInterval);
  }

  // --- frames ----------------------------------------------------------------------

  _onMessage(message) {
    const now = this._now();
    const kind = message.type;
    if (kind === "sync") {
      if (this.state.synced && message.v < this.state.v) this.rewinds += 1;
      this._awaitingSync = false;
      this.state.applySync(message, now);
      this._emit("sync", message, this.state);
      this._emit("change", this.state);
    } else if (VERSIONED.has(kind)) {
      const v = message.v;
      if (typeof v !== "number" || v <= this.state.v) return; // seen already
      if (v !== this.state.v + 1 || this._awaitingSync) {
        // A gap: ask for the state and take the next sync as it.
        if (!this._awaitingSync) {
          this._awaitingSync = true;
          this.requestSync();
        }
        return;
      }
      this.state.applyEvent(message, now);
      this._emit(kind, message, this.state);
      this._emit("change", this.state);
    } else if (kind === "presence") {
      this.state.applyPresence(message);
      this._emit("presence", message, this.state);
      this._emit("change", this.state);
    } else if (kind === "ack") {
      const out = this._outgoing.get(message.id);
      if (out) {
        clearTimeout(out.timer);
        this._outgoing.delete(message.id);
        out.resolve(message.v);
      }
      this._emit("ack", message);
    } else if (kind === "error") {
      this._onError(message);
    }
  }

  _onError(message) {
    const out = message.id !== undefined ? this._outgoing.get(message.id) : undefined;
    if (out && message.code === "unavailable" && this._now() < out.deadline) {
      setTimeout(() => {
        if (this._outgoing.get(message.id) === out) this._send(out.body);
      }, 200);
    } else if (out) {
      clearTimeout(out.timer);
      this._outgoing.delete(message.id);
      out.reject(new CommandError(message.code, message.message ?? "", message.id));
    }
    this._emit("error", message);
  }
}

/** Something went wrong that a later attempt may not meet (network, discovery 503). */
class RetryableError extends XLMateError {}

/** 12 hex digits from the platform's CSPRNG (Math.random only where there is none). */
function randomPrefix() {
  const bytes = new Uint8Array(6);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function isOffline() {
  return globalThis.navigator?.onLine === false;
}

function closeMessage(code, reason) {
  const what =
    code === CLOSE_BAD_TOKEN
      ? "the seat token is invalid or expired"
      : code === CLOSE_WRONG_GAME
        ? "the seat token is for another game"
        : "no such game";
  return reason ? `${what} (${reason})` : what;
}
