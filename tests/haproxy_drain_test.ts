/**
 * Health checks and a rolling restart behind the real engine: Debian's
 * HAProxy (foreground, `-db`) in plain TCP mode balancing two edgesocks
 * instances, checking each one's admin endpoint (`option httpchk`, `check
 * port ADMIN`). Its view of the servers is read from its stats socket with
 * socat.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  closedPort,
  curl,
  HTTP_BODY,
  type ProxyProcess,
  run,
  RUNTIME,
  spawnProxy,
  startHttp,
  until,
} from "./_fixtures.ts";
import { adminGet, adminPort, exited, sample, signal } from "./_admin.ts";

type Awaited2<T> = T extends Promise<infer U> ? U : T;

/**
 * The HAProxy config: a TCP frontend on `port`, round robin over `servers`,
 * each checked with `GET check` on its admin port. No retries: a connection
 * HAProxy sends to an instance that does not take it fails the fetch, so the
 * tests see it.
 */
export function drainConfig(
  port: number,
  servers: { port: number; admin: number }[],
  check: string,
  socket: string,
): string {
  return `global
    maxconn 1000
    stats socket ${socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 2s
    retries 0

frontend socks
    bind 127.0.0.1:${port}
    default_backend edgesocks

backend edgesocks
    balance roundrobin
    option httpchk GET ${check}
    default-server inter 300ms fall 1 rise 1
${servers.map((s, i) => `    server edgesocks${i + 1} 127.0.0.1:${s.port} check port ${s.admin}`).join("\n")}
`;
}

/** A running HAProxy, with its stats socket. */
interface Haproxy {
  port: number;
  child: ChildProcess;
  output(): string;
  /** The servers' statuses (`UP`, `DOWN`, ...) by name, as HAProxy's `show stat` says. */
  status(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

async function startHaproxy(servers: { port: number; admin: number }[], check: string): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-haproxy-drain-"));
  const file = join(dir, "haproxy.cfg");
  const socket = join(dir, "stats.sock");
  const port = await closedPort();
  writeFileSync(file, drainConfig(port, servers, check, socket));
  const child = spawn("haproxy", ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  let gone = false;
  child.once("error", (e) => {
    gone = true;
    out += `cannot run haproxy: ${e.message} (.ci/run installs it)`;
  });
  child.once("exit", () => (gone = true));
  const status = async () => {
    const r = await run("socat", ["-", `UNIX-CONNECT:${socket}`], { input: "show stat\n", timeoutMs: 5_000 });
    const lines = r.stdout.split("\n").filter((l) => l.length > 0);
    const head = (lines.shift() ?? "").replace(/^# /, "").split(",");
    const [px, sv, st] = ["pxname", "svname", "status"].map((k) => head.indexOf(k));
    const out: Record<string, string> = {};
    for (const l of lines) {
      const f = l.split(",");
      if (f[px] === "edgesocks" && f[sv] !== "BACKEND") out[f[sv]] = f[st];
    }
    return out;
  };
  const stop = async () => {
    if (!gone) {
      process.kill(child.pid!, "SIGTERM");
      await until(5_000, () => "haproxy exit", () => gone).catch(() => child.kill("SIGKILL"));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until(10_000, () => `haproxy's stats socket: ${out}`, () => {
      if (gone) throw new Error(`haproxy exited: ${out}`);
      return existsSync(socket);
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, child, output: () => out, status, stop };
}

/** Waits until HAProxy reports `want` (e.g. `{ edgesocks1: "UP" }`), polling its stats socket. */
async function statusIs(haproxy: Haproxy, want: Record<string, string>, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  let last: Record<string, string> = {};
  for (;;) {
    last = await haproxy.status();
    if (Object.entries(want).every(([k, v]) => last[k] === v)) return;
    if (Date.now() - t0 > ms) {
      assert.fail(`HAProxy servers ${JSON.stringify(last)}, waited for ${JSON.stringify(want)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts an instance with an admin endpoint; `at`: the ports to take again (a restart). */
function instance(extra: string[], at?: { port: number; admin: number }): Promise<ProxyProcess> {
  return spawnProxy([
    "--listen",
    `127.0.0.1:${at?.port ?? 0}`,
    "--admin",
    `127.0.0.1:${at?.admin ?? 0}`,
    "--allow-private",
    ...extra,
  ]);
}

const ports = (p: ProxyProcess) => ({ port: p.port, admin: adminPort(p.startup) });

describe(`behind HAProxy, health and drain, on ${RUNTIME}`, () => {
  let web: Awaited2<ReturnType<typeof startHttp>>;
  before(async () => (web = await startHttp()));
  after(() => web?.close());

  const fetch = (port: number) => curl(["--socks5", `127.0.0.1:${port}`, `http://127.0.0.1:${web.port}/`]);

  it("HAProxy's health checks against /healthz see both instances up, and one that died down", async () => {
    const a = await instance([]);
    const b = await instance([]);
    let haproxy: Haproxy | undefined;
    try {
      haproxy = await startHaproxy([ports(a), ports(b)], "/healthz");
      await statusIs(haproxy, { edgesocks1: "UP", edgesocks2: "UP" });
      for (let i = 0; i < 4; i++) {
        const r = await fetch(haproxy.port);
        assert.deepEqual([r.code, r.stdout, r.stderr], [0, HTTP_BODY, ""], `fetch ${i}`);
      }
      // Round robin: two each, as each one's metrics say.
      for (const p of [a, b]) {
        const admin = adminPort(p.startup);
        let text = (await adminGet(admin, "/metrics")).body;
        for (
          let i = 0;
          i < 50 && sample(text, 'edgesocks_connections_total{outcome="tunnel_done"}') !== 2;
          i++
        ) {
          await new Promise((r) => setTimeout(r, 100));
          text = (await adminGet(admin, "/metrics")).body;
        }
        assert.equal(sample(text, 'edgesocks_connections_total{outcome="tunnel_done"}'), 2, text);
      }
      const gone = new Promise((r) => b.child.once("exit", r));
      process.kill(b.child.pid!, "SIGKILL");
      await gone;
      await statusIs(haproxy, { edgesocks1: "UP", edgesocks2: "DOWN" });
      for (let i = 0; i < 3; i++) {
        const r = await fetch(haproxy.port);
        assert.deepEqual(
          [r.code, r.stdout, r.stderr],
          [0, HTTP_BODY, ""],
          `fetch ${i} with one instance down`,
        );
      }
    } finally {
      await haproxy?.stop();
      await Promise.all([a, b].map((p) => p.child.signalCode === null ? p.stop("SIGINT") : null));
    }
  });

  it("a rolling restart (SIGTERM, wait, start again; one instance after the other) fails no fetch", async () => {
    // The drain delay gives HAProxy time to see /readyz say 503 (it checks every 0.3 s) before the
    // instance stops listening.
    const flags = ["--drain-delay", "2"];
    let a = await instance(flags);
    let b = await instance(flags);
    let haproxy: Haproxy | undefined;
    const failures: string[] = [];
    let fetches = 0;
    let done = false;
    let loop: Promise<void> | undefined;
    try {
      const at = { edgesocks1: ports(a), edgesocks2: ports(b) };
      haproxy = await startHaproxy([at.edgesocks1, at.edgesocks2], "/readyz");
      await statusIs(haproxy, { edgesocks1: "UP", edgesocks2: "UP" });
      const front = haproxy.port;
      // Fetches one after the other through HAProxy for as long as the restart takes, at most 400 of
      // them and 90 s.
      loop = (async () => {
        const t0 = Date.now();
        while (!done && fetches < 400 && Date.now() - t0 < 90_000) {
          const r = await fetch(front);
          fetches++;
          if (r.code !== 0 || r.stdout !== HTTP_BODY) {
            failures.push(`fetch ${fetches}: ${r.code} ${r.stderr}`);
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      for (const name of ["edgesocks1", "edgesocks2"] as const) {
        const old = name === "edgesocks1" ? a : b;
        const before = fetches;
        signal(old, "SIGTERM");
        await statusIs(haproxy, { [name]: "DOWN" });
        assert.equal(await exited(old), 0);
        assert.match(
          old.errors(),
          /^edgesocks: drained \(SIGTERM\): \d+ connections? finished, 0 closed at timeout\n$/,
        );
        const fresh = await instance(flags, at[name]);
        if (name === "edgesocks1") a = fresh;
        else b = fresh;
        await statusIs(haproxy, { [name]: "UP" });
        await until(20_000, () => "fetches while restarting", () => fetches >= before + 5);
      }
      done = true;
      await loop;
      assert.deepEqual(failures, [], `${failures.length} of ${fetches} fetches failed`);
      assert.ok(fetches >= 10, `only ${fetches} fetches`);
    } finally {
      done = true;
      await loop;
      await haproxy?.stop();
      await Promise.all([a.stop("SIGINT"), b.stop("SIGINT")]);
    }
  });
});
