/**
 * Test fixtures started by the tests themselves, on loopback only: an HTTP
 * server, a scriptable TCP server, a DNS server (Debian's dnsmasq), the proxy
 * in-process (on the running runtime's adapter) or as a CLI subprocess, and
 * real clients run as subprocesses. Every wait is bounded.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { RuntimeAdapter } from "../lib/runtime.ts";
import { currentRuntime } from "../lib/cli/detect.ts";
import { serve, type ServeOptions, type SocksServer } from "../lib/serve.ts";
import { toHex } from "./_hex.ts";

export const ROOT = new URL("..", import.meta.url).pathname;

/** "deno" | "bun" | "node": the runtime running the tests. */
export const RUNTIME: "deno" | "bun" | "node" = "Deno" in globalThis
  ? "deno"
  : "Bun" in globalThis
  ? "bun"
  : "node";

/** Rejects after `ms` with a message naming `what`. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function listenOn(server: Server, host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve((server.address() as { port: number }).port));
  });
}

/** Closes a node:net server; bounded, because Deno's node:net may not report the close of a server
 * whose accepted sockets already ended. */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 1_000);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export const HTTP_BODY = "hello through edgesocks\n";

/** A local HTTP server answering every request with {@linkcode HTTP_BODY}. */
export async function startHttp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "content-length": String(HTTP_BODY.length) });
    res.end(HTTP_BODY);
  });
  const port = await listenOn(server as unknown as Server);
  return {
    port,
    close: () => {
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      return closeServer(server as unknown as Server);
    },
  };
}

/** A local TCP server that hands each accepted socket (allowHalfOpen) to `onSocket`. */
export async function startTcp(
  onSocket: (socket: Socket) => void,
  host = "127.0.0.1",
): Promise<{ port: number; sockets: Set<Socket>; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    onSocket(s);
  });
  const port = await listenOn(server, host);
  return {
    port,
    sockets,
    close: () => {
      for (const s of sockets) s.destroy();
      return closeServer(server);
    },
  };
}

/** An echo server that echoes and answers a FIN with a FIN. */
export function startEcho() {
  return startTcp((s) => {
    s.on("data", (d) => s.write(d));
    s.on("end", () => s.end());
  });
}

/** A free TCP port on 127.0.0.1 that nothing listens on (to provoke "connection refused"). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  const port = await listenOn(server);
  await closeServer(server);
  return port;
}

/** Result of a subprocess. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end (bounded by `timeoutMs`); a missing program fails the test. */
export function run(
  cmd: string,
  args: string[],
  options: { input?: string | Uint8Array; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    child.stdout!.on("data", (c) => out.push(c));
    child.stderr!.on("data", (c) => err.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 15_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message} (is it installed? .ci/run installs it)`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin!.on("error", () => {});
    child.stdin!.end(options.input ?? "");
  });
}

/** curl with the options every test uses (quiet but for errors, bounded in time) and `args`. */
export function curl(args: string[]): Promise<RunResult> {
  return run("curl", ["-sS", "--max-time", "10", ...args]);
}

/** DNS records served by the test DNS server. */
export const DNS_RECORDS = {
  "web.test": "127.0.0.1",
  "web6.test": "::1",
  "other.test": "127.0.0.2",
} as const;

/**
 * Starts dnsmasq on 127.0.0.1 (a random high port) serving only
 * {@linkcode DNS_RECORDS} (A/AAAA and their PTRs) plus `dual.test` (both) and `ptr.test`;
 * every other name under `.test` is NXDOMAIN and nothing is forwarded.
 */
export async function startDns(): Promise<{ host: string; port: number; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-dns-"));
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    const args = [
      "--keep-in-foreground",
      "--no-daemon",
      `--port=${port}`,
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--no-poll",
      "--local=/test/",
      `--pid-file=${join(dir, "pid")}`,
      "--user=root",
      ...Object.entries(DNS_RECORDS).map(([name, ip]) => `--host-record=${name},${ip}`),
      "--host-record=dual.test,127.0.0.3,::1",
      // Only for RESOLVE_PTR: documentation addresses, never dialled. Deno's resolver answers PTR
      // queries for 127.0.0.0/8 from its hosts table without asking the server, so loopback won't do.
      "--host-record=ptr.test,192.0.2.55,2001:db8::55",
    ];
    const child = spawn("dnsmasq", args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (c) => (stderr += c));
    const outcome = await new Promise<"up" | "exit" | "missing">((resolve) => {
      child.on("error", () => resolve("missing"));
      child.on("exit", () => resolve("exit"));
      // dnsmasq prints nothing on success; give it a moment, then probe by process liveness.
      setTimeout(() => resolve(child.exitCode === null ? "up" : "exit"), 300);
    });
    if (outcome === "missing") throw new Error("dnsmasq is not installed (.ci/run installs dnsmasq-base)");
    if (outcome === "up") {
      return {
        host: "127.0.0.1",
        port,
        stop: () => stopChild(child).finally(() => rmSync(dir, { recursive: true, force: true })),
      };
    }
    if (!/in use/i.test(stderr)) throw new Error(`dnsmasq failed: ${stderr}`);
  }
  throw new Error("no free port for dnsmasq after 10 attempts");
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Starts the proxy in this process on the running runtime's adapter (or on
 * what `wrap` makes of it), on 127.0.0.1:0.
 */
export async function startProxy(
  options: ServeOptions = {},
  wrap: (adapter: RuntimeAdapter) => RuntimeAdapter = (a) => a,
): Promise<SocksServer & { port: number }> {
  const { adapter } = await currentRuntime();
  const server = await serve(wrap(adapter), { listen: [{ host: "127.0.0.1", port: 0 }], ...options });
  return Object.assign(server, { port: server.addresses[0].port });
}

/** The command line that runs mod.ts on the running runtime. */
export function runtimeCommand(): { cmd: string; args: string[] } {
  const mod = join(ROOT, "mod.ts");
  if (RUNTIME === "deno") return { cmd: process.execPath, args: ["run", "-A", mod] };
  return { cmd: process.execPath, args: [mod] };
}

/** The startup line of `edgesocks bridge` (group 1: its local port). */
export const BRIDGE_LINE = /bridge on .*: listening on 127\.0\.0\.1:(\d+) /;

/**
 * `edgesocks bridge --listen 127.0.0.1:0 --to TO` with `flags`, on `runtime` (the one under test unless
 * named), as a subprocess; resolves once it listens.
 */
export function startBridge(
  to: string,
  flags: string[] = [],
  runtime: typeof RUNTIME = RUNTIME,
): Promise<ProxyProcess> {
  const mod = join(ROOT, "mod.ts");
  return spawnProxy(["bridge", "--listen", "127.0.0.1:0", "--to", to, ...flags], {
    cmd: join(ROOT, "node_modules/.bin", runtime),
    args: runtime === "deno" ? ["run", "-A", mod] : [mod],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    startup: BRIDGE_LINE,
    startupMs: 30_000,
  });
}

/** A CLI subprocess of the proxy. */
export interface ProxyProcess {
  port: number;
  startup: string;
  output(): string;
  errors(): string;
  stop(signal?: "SIGINT" | "SIGTERM"): Promise<number | null>;
  child: ChildProcess;
}

/**
 * Starts a proxy program as a subprocess and waits for its startup line
 * (`listening on HOST:PORT` from the CLI, `SOCKS proxy on HOST:PORT` from the
 * examples; `program.startup` for another line, its group 1 the port), within
 * `program.startupMs` (20 s by default). By default the program is `mod.ts`
 * on the running runtime.
 */
export async function spawnProxy(
  args: string[],
  program: {
    cmd: string;
    args: string[];
    env?: Record<string, string>;
    startup?: RegExp;
    startupMs?: number;
  } = runtimeCommand(),
): Promise<ProxyProcess> {
  const { cmd, args: base } = program;
  const pattern = program.startup ?? / on \[?[0-9a-f.:]+\]?:(\d+)/;
  // Hermetic: a CA bundle named by the environment makes Deno read it lazily, and out of descriptors that
  // read fails with a warning of its own (tests that want one pass it in `program.env`).
  const { NODE_EXTRA_CA_CERTS: _, ...inherited } = process.env;
  const env = { ...inherited, ...program.env };
  const child = spawn(cmd, [...base, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  let err = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (err += c));
  let startup: string;
  try {
    startup = await within(
      program.startupMs ?? 20_000,
      "proxy startup",
      new Promise<string>((resolve, reject) => {
        const check = () => {
          const line = out.split("\n").find((l) => pattern.test(l));
          if (line) resolve(line);
        };
        child.stdout!.on("data", check);
        child.on("error", reject);
        child.on("exit", (code) => reject(new Error(`proxy exited with ${code}: ${err}`)));
      }),
    );
  } catch (e) {
    // A proxy that never said it listens must not outlive the test (it would keep the runner alive).
    await stopChild(child);
    throw new Error(`${(e as Error).message} (stdout: ${out}; stderr: ${err})`);
  }
  const m = pattern.exec(startup);
  if (!m) {
    await stopChild(child);
    throw new Error(`no port in startup line: ${startup}`);
  }
  return {
    port: Number(m[1]),
    startup,
    child,
    output: () => out,
    errors: () => err,
    stop: (signal = "SIGTERM") =>
      new Promise((resolve) => {
        // Ended already (by itself or by a signal): 'exit' will not come again.
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        child.once("exit", (code) => {
          clearTimeout(timer);
          resolve(code);
        });
        // process.kill rather than child.kill: Deno's node:child_process reports a child it signalled
        // itself as killed (code null) even when the child handled the signal and exited 0.
        process.kill(child.pid!, signal);
      }),
  };
}

/**
 * The standard error of a proxy as the kinds of its lines, checked word for word: "out of file
 * descriptors" (an episode starts), "accepting connections again" (it is over), or the line itself.
 */
export function stderrKinds(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l !== "").map((l) => {
    if (
      /^edgesocks: out of file descriptors: cannot accept new connections \((EMFILE|Too many open files).*\); still listening\. Raise the limit \(ulimit -n, systemd's LimitNOFILE=\) or lower --max-connections$/
        .test(l)
    ) return "out of file descriptors";
    if (/^edgesocks: accepting connections again after \d+\.\d s$/.test(l)) {
      return "accepting connections again";
    }
    return l;
  });
}

/**
 * Once the proxy accepts again after running out of descriptors: waits (at most 6 s) for its "accepting
 * connections again" line, then 200 ms more, and asserts that its standard error is that one episode, the
 * out-of-descriptors line and this one. Resolves with the milliseconds the line took.
 */
export async function assertOneEpisode(proxy: ProxyProcess): Promise<number> {
  const ms = await until(
    6_000,
    () => `no "accepting connections again" line; stderr: ${proxy.errors()}`,
    () => /accepting connections again/.test(proxy.errors()),
  );
  await sleep(200);
  assert.deepEqual(stderrKinds(proxy.errors()), [
    "out of file descriptors",
    "accepting connections again",
  ]);
  return ms;
}

/** Waits until `cond()` holds, polling; throws `what()` after `ms`. Resolves with the milliseconds it took. */
export async function until(ms: number, what: () => string, cond: () => boolean): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await sleep(25);
  }
  return Date.now() - t0;
}

/** Socket descriptors the process holds (its stdio pipes may be sockets too: compare, never count absolutely). */
export function socketFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) n++;
    } catch {
      // Closed between readdir and readlink.
    }
  }
  return n;
}

/** True while process `pid` exists and is not a zombie (Linux /proc). */
export function processAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/** Writes a users file to a temporary folder and returns its path; `remove()` deletes it. */
export function usersFile(text: string): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-users-"));
  const path = join(dir, "users");
  writeFileSync(path, text);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A raw TCP client for byte-level exchanges with the proxy: `send` bytes,
 * `readExactly(n)` bytes, `readToEnd()` until FIN, with bounded waits.
 */
export class RawClient {
  socket: Socket;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #ended = false;
  #error: Error | undefined;
  #waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (c: Buffer) => {
      this.#chunks.push(c);
      this.#buffered += c.length;
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (e) => {
      this.#error = e;
      this.#ended = true;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
  }

  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }

  static open(port: number, host = "127.0.0.1"): Promise<RawClient> {
    return within(
      5_000,
      "connect to proxy",
      new Promise((resolve, reject) => {
        const s = connect({ port, host, allowHalfOpen: true });
        s.setNoDelay(true);
        s.once("connect", () => resolve(new RawClient(s)));
        s.once("error", reject);
      }),
    );
  }

  get ended(): boolean {
    return this.#ended;
  }

  get error(): Error | undefined {
    return this.#error;
  }

  send(bytes: Uint8Array | string): void {
    this.socket.write(typeof bytes === "string" ? Buffer.from(bytes) : bytes);
  }

  #take(n: number): Buffer {
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all.subarray(n)];
    this.#buffered = all.length - n;
    return all.subarray(0, n);
  }

  async readExactly(n: number, ms = 5_000): Promise<Buffer> {
    await within(
      ms,
      `read ${n} bytes (have ${this.#buffered})`,
      (async () => {
        while (this.#buffered < n) {
          if (this.#ended) throw new Error(`connection ended after ${this.#buffered} of ${n} bytes`);
          await new Promise<void>((r) => this.#waiters.push(r));
        }
      })(),
    );
    return this.#take(n);
  }

  async readToEnd(ms = 5_000): Promise<Buffer> {
    await within(
      ms,
      "read to end",
      (async () => {
        while (!this.#ended) await new Promise<void>((r) => this.#waiters.push(r));
      })(),
    );
    return this.#take(this.#buffered);
  }

  end(): void {
    this.socket.end();
  }

  /** One exchange: connect to `port`, send `bytes`, read until the server closes. */
  static async exchange(port: number, bytes: Uint8Array): Promise<Buffer> {
    const c = await RawClient.open(port);
    try {
      c.send(bytes);
      return await c.readToEnd();
    } finally {
      c.destroy();
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// The byte-literal helpers of the core tests, for the end-to-end tests too.
/** A full SOCKS5 CONNECT to 127.0.0.1:`echoPort` through the proxy and one echoed line; rejects unless it all works within `ms`. */
export async function echoThrough(proxyPort: number, echoPort: number, ms: number): Promise<void> {
  let c: RawClient | undefined;
  try {
    await within(
      ms,
      "SOCKS5 CONNECT + echo",
      (async () => {
        c = await RawClient.open(proxyPort);
        c.send(socks5ConnectBytes(echoPort));
        const reply = await c.readExactly(12, ms);
        if (toHex(reply.subarray(0, 4)) !== "05 00 05 00") throw new Error(`reply ${toHex(reply)}`);
        const ping = `ping ${Date.now()}`;
        c.send(ping);
        const back = (await c.readExactly(ping.length, ms)).toString();
        if (back !== ping) throw new Error(`echoed ${JSON.stringify(back)}, sent ${JSON.stringify(ping)}`);
      })(),
    );
  } finally {
    c?.destroy();
  }
}

/**
 * Retries {@linkcode echoThrough} (each try bounded by `tryMs`) until one works or `ms` have passed; throws
 * the last failure and `what()` then. Resolves with the milliseconds it took: how long recovery took.
 */
export async function untilEchoes(
  proxyPort: number,
  echoPort: number,
  { ms = 15_000, tryMs = 3_000, pauseMs = 100, what = () => "" }: {
    ms?: number;
    tryMs?: number;
    pauseMs?: number;
    what?: () => string;
  } = {},
): Promise<number> {
  const t0 = Date.now();
  for (let tries = 1;; tries++) {
    try {
      await echoThrough(proxyPort, echoPort, tryMs);
      return Date.now() - t0;
    } catch (e) {
      if (Date.now() - t0 >= ms) {
        throw new Error(`no echo within ${ms} ms after ${tries} tries: ${e}; ${what()}`);
      }
      await sleep(pauseMs);
    }
  }
}

/**
 * Opens a SOCKS5 tunnel to 127.0.0.1:`destPort` (greeting and request
 * pipelined) and resolves once the proxy granted it, with the socket paused
 * and nothing of the tunnel's data consumed. Every socket goes into `opened`
 * so that the caller can destroy them all whatever happens. Bounded by `ms`.
 */
export function openPausedTunnel(
  proxyPort: number,
  destPort: number,
  opened: Set<Socket>,
  ms = 10_000,
): Promise<Socket> {
  return within(
    ms,
    `SOCKS5 CONNECT through 127.0.0.1:${proxyPort}`,
    new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port: proxyPort, allowHalfOpen: true });
      opened.add(s);
      s.setNoDelay(true);
      let got = Buffer.alloc(0);
      const fail = (e: Error) => {
        cleanup();
        reject(e);
      };
      const onClose = () => fail(new Error(`closed during the handshake after ${toHex(got)}`));
      const onData = (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length < 12) return;
        // Pause before taking our listener off: a flowing socket without one drops data.
        s.pause();
        cleanup();
        if (got.length !== 12 || toHex(got.subarray(0, 4)) !== "05 00 05 00") {
          reject(new Error(`unexpected reply ${toHex(got.subarray(0, 16))}`));
        } else resolve(s);
      };
      const cleanup = () => {
        s.off("data", onData);
        s.off("error", fail);
        s.off("close", onClose);
        // Keep an error listener: an error between here and the caller's own must not crash the runner.
        s.on("error", () => {});
      };
      s.on("data", onData);
      s.on("error", fail);
      s.on("close", onClose);
      s.once("connect", () => s.write(socks5ConnectBytes(destPort)));
    }),
  );
}

export { hex, toHex } from "./_hex.ts";

/** Bytes of a SOCKS5 CONNECT (no auth) to 127.0.0.1:`port`, greeting included. */
export function socks5ConnectBytes(port: number, host = "127.0.0.1"): Uint8Array {
  const ip = host.split(".").map(Number);
  return Uint8Array.of(5, 1, 0, 5, 1, 0, 1, ...ip, port >> 8, port & 0xff);
}

/**
 * `n` tunnels through the proxy on `proxyPort` to 127.0.0.1:`target`, opened one after another (SOCKS5
 * CONNECT, no auth, each reply read) and held open. If one fails, those already open are destroyed.
 */
export async function holdTunnels(proxyPort: number, target: number, n: number): Promise<RawClient[]> {
  const held: RawClient[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const c = await RawClient.open(proxyPort);
      held.push(c);
      c.send(socks5ConnectBytes(target));
      await c.readExactly(12);
    }
    return held;
  } catch (e) {
    for (const c of held) c.destroy();
    throw e;
  }
}

/**
 * Opens a WHATWG WebSocket to `url` that carries its token as a subprotocol, as a browser must
 * (`edgesocks`, `edgesocks.token.` + unpadded base64url); resolves with the subprotocol the edge selected,
 * within 10 s, and closes the socket.
 */
export async function openWithTokenProtocol(url: string, token: string): Promise<string> {
  const encoded = btoa(token).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const ws = new WebSocket(url, ["edgesocks", `edgesocks.token.${encoded}`]);
  try {
    return await within(
      10_000,
      "WebSocket open",
      new Promise<string>((resolve, reject) => {
        ws.onopen = () => resolve(ws.protocol);
        ws.onerror = () => reject(new Error("WebSocket error"));
      }),
    );
  } finally {
    ws.close();
  }
}
