// Baseline 3: Socket.IO 4 with the Redis adapter, one process of a pair (or more).
//
// The Socket.IO counterpart of benchmarks/relay_redis.py: every socket joins the
// room of its game (the `game` query parameter of its Socket.IO handshake); each
// "m" event it emits is broadcast to the other sockets of that room with
// `socket.to(game).emit("m", frame)`, which the Redis adapter
// (@socket.io/redis-adapter over node-redis) publishes so that every process of the
// pair delivers it to its own sockets of the room.  On joining, a socket gets
// `{"type":"hello"}` as an "m" event (the cluster's `sync` plays that part).  No
// validation, no ordering beyond Redis's, no durability.
//
// Server settings match the edge's where Socket.IO has them: WebSocket transport
// only (no long-polling), 20 s ping interval and timeout, 4 KiB largest message,
// no permessage-deflate.
//
// GET /metrics answers the loop-lag metrics every XLMate process exposes
// (xlmate/looplag.py, same names and buckets): a timer sleeps 10 ms again and
// again and records how late it woke.
//
// benchmarks/compare.py installs the pinned package.json / package-lock.json
// into a temporary directory (npm ci) and runs:
//
//     node server.js --port 9003 --redis-url redis://127.0.0.1:6390
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const HELLO = { type: "hello" };
const LAG_INTERVAL_MS = 10;
const STALL_S = 0.05;
const WINDOW_MS = 10000;
const BUCKETS_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

// The loop-lag recorder of xlmate/looplag.py: histogram, stalls, recent max.
const lag = {
  counts: new Array(BUCKETS_S.length + 1).fill(0),
  count: 0,
  sum: 0,
  stalls: 0,
  currentMax: 0,
  previousMax: 0,
  windowStart: performance.now(),
  roll(now) {
    const elapsed = now - this.windowStart;
    if (elapsed < WINDOW_MS) return;
    this.previousMax = elapsed < 2 * WINDOW_MS ? this.currentMax : 0;
    this.currentMax = 0;
    this.windowStart = now - (elapsed % WINDOW_MS);
  },
  record(seconds, now) {
    const value = Math.max(0, seconds);
    this.roll(now);
    this.count += 1;
    this.sum += value;
    let bucket = BUCKETS_S.findIndex((bound) => value <= bound);
    if (bucket < 0) bucket = BUCKETS_S.length;
    this.counts[bucket] += 1;
    if (value >= STALL_S) this.stalls += 1;
    if (value > this.currentMax) this.currentMax = value;
  },
  metrics() {
    const now = performance.now();
    this.roll(now);
    const lines = [
      "# HELP xlmate_loop_lag_seconds how late the event loop ran a due wake-up",
      "# TYPE xlmate_loop_lag_seconds histogram",
    ];
    let total = 0;
    BUCKETS_S.forEach((bound, i) => {
      total += this.counts[i];
      lines.push(`xlmate_loop_lag_seconds_bucket{le="${bound.toFixed(3)}"} ${total}`);
    });
    total += this.counts[BUCKETS_S.length];
    lines.push(`xlmate_loop_lag_seconds_bucket{le="+Inf"} ${total}`);
    lines.push(`xlmate_loop_lag_seconds_count ${this.count}`);
    lines.push(`xlmate_loop_lag_seconds_sum ${this.sum}`);
    lines.push("# HELP xlmate_loop_lag_max_seconds largest event-loop lag over the last 10-20 s");
    lines.push("# TYPE xlmate_loop_lag_max_seconds gauge");
    lines.push(`xlmate_loop_lag_max_seconds ${Math.max(this.currentMax, this.previousMax)}`);
    lines.push("# HELP xlmate_loop_stalls_total event-loop lags of 50 ms or more");
    lines.push("# TYPE xlmate_loop_stalls_total counter");
    lines.push(`xlmate_loop_stalls_total ${this.stalls}`);
    return lines.join("\n") + "\n";
  },
};

function probe() {
  const asked = performance.now();
  setTimeout(() => {
    const woke = performance.now();
    lag.record((woke - asked - LAG_INTERVAL_MS) / 1000, woke);
    probe();
  }, LAG_INTERVAL_MS);
}

async function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "9003" },
      "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
    },
  });
  const pub = createClient({ url: values["redis-url"] });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on("error", (err) => {
      console.error("redis:", err.message);
      process.exit(1);
    });
  }
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/metrics") {
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4" });
      res.end(lag.metrics());
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(httpServer, {
    transports: ["websocket"],
    pingInterval: 20000,
    pingTimeout: 20000,
    maxHttpBufferSize: 4096,
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });
  io.on("connection", (socket) => {
    const game = String(socket.handshake.query.game || "");
    socket.join(game);
    socket.emit("m", HELLO);
    socket.on("m", (frame) => {
      socket.to(game).emit("m", frame);
    });
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  httpServer.listen(Number(values.port), values.host, () => {
    console.log(`socket.io relay on ${values.host}:${values.port}`);
  });
  probe();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
