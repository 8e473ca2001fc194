/**
 * A real XLMate cluster for the Node tests: the `xlmate` commands of the repository's
 * virtualenv (discovery, one broker, edges) on free ports, in a temporary directory.
 *
 * Nothing is mocked.  Readiness is polled (`/healthz` answers 200, discovery lists the
 * edge), never waited for with a fixed sleep.  `stop()` SIGKILLs whatever still runs;
 * `logs()` returns the tail of every process's output, for failure messages.
 */

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..", "..", "..");
/** The `xlmate` command: $XLMATE_BIN, else the repository's .venv. */
export const XLMATE = process.env.XLMATE_BIN ?? join(REPO, ".venv", "bin", "xlmate");
export const SECRET = "node-test-secret-0123456789abcdef0123";
const POLL_MS = 20;

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Poll `condition` (sync or async) until it returns something truthy, or throw after `timeoutMs`. */
export async function waitUntil(condition, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await condition();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function httpStatus(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

/** One `xlmate` subprocess. */
class Proc {
  constructor(name, args, cluster, healthUrl) {
    this.name = name;
    this.args = args;
    this.cluster = cluster;
    this.healthUrl = healthUrl;
    this.starts = 0;
    this.child = null;
    this.exitCode = null;
  }

  start() {
    this.starts += 1;
    this.logPath = join(this.cluster.root, `${this.name}.${this.starts}.log`);
    const out = openSync(this.logPath, "w");
    this.exited = false;
    this.child = spawn(XLMATE, this.args, {
      cwd: this.cluster.root,
      env: { ...process.env, XLMATE_SECRET: SECRET },
      stdio: ["ignore", out, out],
    });
    this.child.on("exit", (code, signal) => {
      this.exited = true;
      this.exitCode = code ?? signal;
    });
    return this;
  }

  async waitHealthy(timeoutMs = 20000) {
    await waitUntil(
      async () => {
        if (this.exited) throw new Error(`${this.name} exited early:\n${this.log()}`);
        return (await httpStatus(this.healthUrl)) === 200;
      },
      timeoutMs,
      `${this.name} to be healthy`,
    );
  }

  get alive() {
    return this.child !== null && !this.exited;
  }

  /** Send `signal`; resolves when the process has exited. */
  async stop(signal = "SIGKILL", timeoutMs = 15000) {
    if (!this.alive) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill(signal);
    await Promise.race([
      exited,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`${this.name} did not exit after ${signal}`)), timeoutMs).unref(),
      ),
    ]);
  }

  log() {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }
}

/** Discovery, one broker and edges on free ports under a temporary directory. */
export class Cluster {
  static async start({ edges = 2, region = "eu-west" } = {}) {
    const cluster = new Cluster();
    try {
      await cluster._start(edges, region);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  constructor() {
    this.root = mkdtempSync(join(tmpdir(), "xlmate-node-"));
    this.procs = [];
    this.edges = [];
  }

  async _start(edges, region) {
    const [http, rep, xsub, xpub, catchup, brokerHttp] = await Promise.all(
      Array.from({ length: 6 }, freePort),
    );
    this.ports = { xsub, xpub, catchup, rep };
    this.discoveryUrl = `http://127.0.0.1:${http}`;
    this.discovery = this._spawn(
      "discovery",
      ["discovery", "--port", String(http), "--rep-port", String(rep)],
      `${this.discoveryUrl}/healthz`,
    );
    this.broker = this._spawn(
      "broker",
      [
        "broker",
        ...["--xsub-port", String(xsub), "--xpub-port", String(xpub)],
        ...["--catchup-port", String(catchup), "--http-port", String(brokerHttp)],
        ...["--journal-dir", join(this.root, "journal")],
      ],
      `http://127.0.0.1:${brokerHttp}/healthz`,
    );
    await Promise.all([this.discovery.waitHealthy(), this.broker.waitHealthy()]);
    for (let i = 0; i < edges; i += 1) await this.startEdge(region, { register: false });
    await this.waitRegistered(this.edges);
  }

  _spawn(name, args, healthUrl) {
    const proc = new Proc(name, args, this, healthUrl).start();
    this.procs.push(proc);
    return proc;
  }

  /** Start one more edge and wait until it is healthy (and, by default, registered). */
  async startEdge(region = "eu-west", { register = true, extra = [] } = {}) {
    const port = await freePort();
    const id = `${region}-${port}`;
    const proc = this._spawn(
      `edge-${id}`,
      [
        "edge",
        ...["--region", region, "--port", String(port), "--id", id],
        ...["--broker-xsub-port", String(this.ports.xsub)],
        ...["--broker-xpub-port", String(this.ports.xpub)],
        ...["--broker-catchup-port", String(this.ports.catchup)],
        ...["--discovery", `tcp://127.0.0.1:${this.ports.rep}`, "--heartbeat-ms", "200"],
        ...extra,
      ],
      `http://127.0.0.1:${port}/healthz`,
    );
    const edge = { id, region, port, proc, url: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}` };
    this.edges.push(edge);
    await proc.waitHealthy();
    if (register) await this.waitRegistered([edge]);
    return edge;
  }

  /** Edges still running. */
  get liveEdges() {
    return this.edges.filter((e) => e.proc.alive);
  }

  /** The edge whose WebSocket base is `url`. */
  edgeAt(url) {
    return this.edges.find((e) => e.url === url);
  }

  async waitRegistered(edges, timeoutMs = 10000) {
    await waitUntil(
      async () => {
        try {
          const body = await (await fetch(`${this.discoveryUrl}/v1/nodes`)).json();
          const ids = new Set(body.nodes.map((n) => n.id));
          return edges.every((e) => ids.has(e.id));
        } catch {
          return false;
        }
      },
      timeoutMs,
      "edges to register with discovery",
    );
  }

  /** `xlmate game new`: {gameId, white: {token}, black: {token}}. */
  async newGame(clock = "5+3") {
    const { stdout } = await promisify(execFile)(XLMATE, ["game", "new", "--clock", clock], {
      env: { ...process.env, XLMATE_SECRET: SECRET },
    });
    return JSON.parse(stdout);
  }

  logs() {
    return this.procs.map((p) => `===== ${p.name}\n${p.log().slice(-4000)}`).join("\n");
  }

  async stop({ keep = false } = {}) {
    await Promise.all(this.procs.map((p) => p.stop("SIGKILL").catch(() => {})));
    if (!keep) rmSync(this.root, { recursive: true, force: true });
  }
}
