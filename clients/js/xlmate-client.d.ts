// Type declarations for xlmate-client.js (hand-written; the module has no build step).

export type Color = "white" | "black";
export type Seat = Color | "spectator";
export type OfferAction = "offer" | "accept" | "decline";
export type GameStatus = "waiting" | "started" | "over";
export type Result = "1-0" | "0-1" | "1/2-1/2";
export type ConnectionState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "offline"
  | "failed"
  | "closed";

export declare const CLOSE_BAD_TOKEN: 4001;
export declare const CLOSE_WRONG_GAME: 4003;
export declare const CLOSE_NO_SUCH_GAME: 4004;
export declare const CLOSE_POLICY: 4008;
export declare const CLOSE_DRAINING: 1012;
export declare const FATAL_CLOSES: ReadonlySet<number>;

/** Milliseconds left per side; `running` is the side whose clock runs, if any. */
export interface Clock {
  white: number;
  black: number;
  increment: number;
  running: Color | null;
}

export interface PlayerInfo {
  id: string | null;
  online: boolean;
}

export interface Offers {
  draw: Color | null;
  takeback: Color | null;
}

export interface SyncMessage {
  type: "sync";
  gameId: string;
  v: number;
  you: Seat;
  status: GameStatus;
  fen: string;
  moves: string[];
  san: string[];
  turn: Color;
  clock: Clock;
  result: Result | null;
  reason: string | null;
  players: { white: PlayerInfo; black: PlayerInfo };
  offers: Offers;
}

export interface MoveEvent {
  type: "move";
  gameId: string;
  v: number;
  uci: string;
  san: string;
  from: string;
  to: string;
  promotion: string | null;
  fen: string;
  by: Color;
  clock: Clock;
}

export interface GameOverEvent {
  type: "game_over";
  gameId: string;
  v: number;
  result: Result | null;
  reason: string;
  clock?: Clock;
}

export interface OfferEvent {
  type: "draw" | "takeback";
  gameId: string;
  v: number;
  action: OfferAction;
  by: Color;
  /** An accepted takeback carries the position after it. */
  fen?: string;
  moves?: string[];
  clock?: Clock;
}

export interface PresenceMessage {
  type: "presence";
  white: boolean;
  black: boolean;
  spectators: number;
}

export interface ErrorMessage {
  type: "error";
  id?: string | number;
  code: string;
  message: string;
}

export interface AckMessage {
  type: "ack";
  id: string | number;
  v: number;
}

export interface ConnectionEvent {
  state: ConnectionState;
  error: ConnectionError | null;
  edge: string | null;
  lastClose: { code: number; reason: string; edge: string } | null;
}

export declare class XLMateError extends Error {}

/** Fatal close (4001 bad/expired token, 4003 token for another game, 4004 no such game), or closed. */
export declare class ConnectionError extends XLMateError {
  readonly code: number | null;
  readonly reason: string;
}

/** The server refused a command: `code` is e.g. "illegal_move", "rate_limited", "unavailable". */
export declare class CommandError extends XLMateError {
  readonly code: string;
  readonly id: string | number | null;
}

export declare function backoffDelay(
  attempt: number,
  options?: { base?: number; cap?: number; random?: () => number },
): number;

/** The local view of the game, built from `sync` and events. */
export declare class GameState {
  readonly gameId: string;
  v: number;
  synced: boolean;
  you: Seat | null;
  status: GameStatus;
  fen: string;
  moves: string[];
  san: string[];
  turn: Color;
  clock: Clock | null;
  /** Local time (ms) when `clock` arrived. */
  clockAt: number;
  result: Result | null;
  reason: string | null;
  players: { white: PlayerInfo; black: PlayerInfo };
  offers: Offers;
  spectators: number;
  /** Milliseconds left for `color` at local time `now`, the running side ticking down. */
  clockLeft(color: Color, now: number): number | null;
}

/** A WebSocket constructor: the browser's, Node 22's global, or `ws`'s. */
export type WebSocketLike = new (url: string) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
};

export interface GameClientOptions {
  gameId: string;
  /** A seat token; without one the client is a spectator. */
  token?: string | null;
  /** Discovery's HTTP base, e.g. "https://xlmate.example.com". */
  discoveryUrl?: string | null;
  /** An edge's WebSocket base, e.g. "wss://edge1.example.com"; the fallback when discovery fails. */
  edgeUrl?: string | null;
  region?: string | null;
  WebSocket?: WebSocketLike;
  fetch?: typeof fetch;
  /** ms before an unacked command rejects with CommandError("unavailable"). Default 15000. */
  commandTimeout?: number;
  /** ms to open a socket. Default 10000. */
  openTimeout?: number;
  /** Back-off base and cap (ms), full jitter. Defaults 50 and 2000. */
  baseBackoff?: number;
  maxBackoff?: number;
  /** ms between `ping` messages; silence for two intervals drops the socket. 0 disables. Default 15000. */
  pingInterval?: number;
  /** Failed attempts in a row before the state says "offline". Default 3. */
  offlineAfter?: number;
  random?: () => number;
  now?: () => number;
}

export interface GameClientEvents {
  sync: (message: SyncMessage, state: GameState) => void;
  move: (event: MoveEvent, state: GameState) => void;
  game_over: (event: GameOverEvent, state: GameState) => void;
  draw: (event: OfferEvent, state: GameState) => void;
  takeback: (event: OfferEvent, state: GameState) => void;
  presence: (message: PresenceMessage, state: GameState) => void;
  error: (message: ErrorMessage) => void;
  ack: (message: AckMessage) => void;
  change: (state: GameState) => void;
  connection: (event: ConnectionEvent) => void;
}

export declare class GameClient {
  constructor(options: GameClientOptions);
  readonly gameId: string;
  readonly token: string | null;
  readonly state: GameState;
  readonly connection: ConnectionState;
  /** The edge the socket is open to, if any. */
  readonly connectedTo: string | null;
  readonly connections: number;
  readonly rewinds: number;
  readonly lastClose: { code: number; reason: string; edge: string } | null;
  /** Set when the client gave up (fatal close code). */
  readonly fatal: ConnectionError | null;

  on<K extends keyof GameClientEvents>(type: K, listener: GameClientEvents[K]): () => void;
  off<K extends keyof GameClientEvents>(type: K, listener: GameClientEvents[K]): void;
  once<K extends keyof GameClientEvents>(type: K, listener: GameClientEvents[K]): () => void;

  /** Resolves at the first `sync`; rejects with the ConnectionError if the client gives up. */
  connect(options?: { timeout?: number }): Promise<this>;
  /** Close and stop reconnecting; unacked commands reject. Idempotent. */
  close(): Promise<void>;
  waitFor(predicate: () => boolean, timeout?: number): Promise<void>;

  /** Each resolves with the acked `v` or rejects with a CommandError (or the ConnectionError). */
  command(payload: Record<string, unknown>, options?: { id?: string }): Promise<number>;
  move(move: string | { from: string; to: string; promotion?: "q" | "r" | "b" | "n" }): Promise<number>;
  resign(): Promise<number>;
  draw(action: OfferAction): Promise<number>;
  takeback(action: OfferAction): Promise<number>;
  requestSync(): void;
  sendRaw(frame: string | Record<string, unknown>): boolean;
}
