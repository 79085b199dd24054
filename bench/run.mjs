#!/usr/bin/env node
// The benchmark suite: `node bench/run.mjs [--quick] [--only deno,bun,node] [--skip microsocks,dante]`.
// Plain JavaScript that Node 20 or 24 runs. Loopback only; every loop is bounded in count and time.
//
// It compiles bench/socks_client.c (load generator and fixture server) into bench/results/, starts the
// C server, then measures side by side in the same run, each subject interleaved with the others:
//   1. throughput up and down (median of runs) for a direct connection, microsocks and dante (when
//      installed), edgesocks on Deno, Bun and Node, and a bare forwarder per runtime (bench/forwarders/);
//   2. tunnels per second (SOCKS5 greeting + CONNECT + 1-byte echo + close, 50 at once);
//   3. resident memory per idle tunnel (5,000 tunnels held open; VmRSS growth of the proxy process).
// It prints a Markdown report and writes bench/results/latest.json and bench/results/latest.md.
// Every process it starts runs in its own process group and is killed by its PID at the end or on error.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { measureUdp, udpReport } from "./udp.mjs";

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = join(benchDir, "..");
const resultsDir = join(benchDir, "results");
const bin = (name) => join(root, "node_modules", ".bin", name);
const MiB = 1 << 20;
const RUNTIMES = ["deno", "bun", "node"];
const REFERENCES = ["microsocks", "dante", "npm", "workerd"];

// ------------------------------------------------------------------ flags and configuration

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  console.log(`usage: node bench/run.mjs [--quick] [--only deno,bun,node] [--skip microsocks,dante]
  --quick   smoke test: 64 MiB transfers, 500 tunnels, 500 held tunnels (~30-60 s)
  --only    edgesocks runtimes (and their bare forwarders) to measure; default all three
  --skip    subjects to leave out (microsocks, dante, npm: the npm SOCKS servers on Node; workerd)
  --runs N  throughput and tunnels/s runs per subject (default 3 and 5; --quick: 3 and 1)
  --parts   what to measure: a comma list of throughput, tunnels, memory, udp, chain (throughput
            through one upstream hop, beside a direct edgesocks tunnel); default all five
  --check   exit 1 if any measurement failed (CI runs --quick --check as a smoke test)`);
  process.exit(0);
}
function listFlag(name, allowed, fallback) {
  const i = argv.indexOf(name);
  if (i < 0) return fallback;
  const list = (argv[i + 1] ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const bad = list.filter((x) => !allowed.includes(x));
  if (list.length === 0 || bad.length) {
    console.error(`${name} takes a comma list of ${allowed.join(", ")}`);
    process.exit(2);
  }
  return list;
}
const quick = argv.includes("--quick");
const check = argv.includes("--check");
const runsFlag = argv.includes("--runs") ? Number(argv[argv.indexOf("--runs") + 1]) : null;
if (runsFlag !== null && !(Number.isInteger(runsFlag) && runsFlag >= 1 && runsFlag <= 20)) {
  console.error("--runs takes a number from 1 to 20");
  process.exit(2);
}
const only = listFlag("--only", RUNTIMES, RUNTIMES);
const skip = listFlag("--skip", REFERENCES, []);
const PARTS = ["throughput", "tunnels", "memory", "udp", "chain"];
const parts = listFlag("--parts", PARTS, PARTS);

const cfg = quick
  ? {
    tputBytes: 64 * MiB,
    tputWarmBytes: 16 * MiB,
    tputRuns: 3,
    tputTimeoutSec: 60,
    tunnelConcurrency: 50,
    tunnelCount: 500,
    tunnelSeconds: 5,
    tunnelWarmCount: 100,
    tunnelRuns: 1,
    holdTunnels: 500,
    holdWarm: 50,
    holdConcurrency: 100,
    settleMs: 500,
    quietLoad: 0.1,
    quietBudgetMs: 10_000,
  }
  : {
    tputBytes: 1024 * MiB,
    tputWarmBytes: 64 * MiB,
    tputRuns: 3,
    tputTimeoutSec: 120,
    tunnelConcurrency: 50,
    tunnelCount: 50_000,
    tunnelSeconds: 1.5,
    tunnelWarmCount: 2_000,
    tunnelRuns: 5,
    holdTunnels: 5_000,
    holdWarm: 200,
    holdConcurrency: 100,
    settleMs: 1_500,
    quietLoad: 0.1,
    quietBudgetMs: 120_000,
  };

if (runsFlag !== null) cfg.tputRuns = cfg.tunnelRuns = runsFlag;

const log = (line) => process.stderr.write(`# ${line}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** A sleep that does not keep the process alive: for the timeout side of a race. */
const deadline = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());

// ------------------------------------------------------------------ processes

/** Every child we started and have not seen exit, by PID (each leads its own process group). */
const live = new Map();

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch { /* already gone */ }
  }
}

process.on("exit", () => {
  for (const pid of live.keys()) killGroup(pid, "SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    log(`${signal}: stopping everything started`);
    process.exit(130);
  });
}

// Raise the open-files limit as far as allowed: 5,000 tunnels take 10,000 descriptors in a proxy.
const ULIMIT = `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`;
const childEnv = { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };

/** Spawns `cmd args` (with the raised fd limit) in its own process group and tracks it. */
function launch(name, cmd, args, { stdin = "ignore", stdout = "pipe" } = {}) {
  const child = spawn("/bin/sh", ["-c", ULIMIT, cmd, ...args], {
    cwd: root,
    detached: true,
    env: childEnv,
    stdio: [stdin, stdout, "pipe"],
  });
  const proc = { name, child, pid: child.pid, out: "", err: "", exited: false, code: null };
  live.set(child.pid, proc);
  child.stdout?.on("data", (d) => (proc.out = (proc.out + d).slice(-256 * 1024)));
  child.stderr.on("data", (d) => (proc.err = (proc.err + d).slice(-64 * 1024)));
  proc.done = new Promise((resolve) => {
    child.on("error", (error) => {
      proc.err += String(error);
      proc.exited = true;
      live.delete(child.pid);
      resolve();
    });
    child.on("exit", (code, signal) => {
      proc.exited = true;
      proc.code = code ?? signal;
      live.delete(child.pid);
      resolve();
    });
  });
  return proc;
}

/** Stops a process (its whole group): SIGTERM, then SIGKILL after 3 s. */
async function stop(proc) {
  if (!proc || proc.exited) return;
  killGroup(proc.pid, "SIGTERM");
  const gone = await Promise.race([proc.done.then(() => true), deadline(3_000).then(() => false)]);
  if (!gone) {
    killGroup(proc.pid, "SIGKILL");
    await Promise.race([proc.done, deadline(2_000)]);
  }
  // Children left in the group (dante's) go too.
  killGroup(proc.pid, "SIGKILL");
}

/** Waits until `test(proc)` is truthy, the process exits, or `ms` pass. */
async function waitFor(proc, test, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    const value = await test(proc);
    if (value) return value;
    if (proc.exited) throw new Error(`${proc.name} exited (${proc.code}) before ${what}: ${tail(proc)}`);
    if (Date.now() > until) throw new Error(`${proc.name}: no ${what} within ${ms} ms: ${tail(proc)}`);
    await sleep(25);
  }
}
const tail = (proc) => (proc.out + proc.err).trim().split("\n").slice(-5).join(" | ");

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.setTimeout(500, () => done(false));
  });
}

/** Runs the C client once; resolves with its last JSON line. Bounded by `ms`. */
async function client(args, ms) {
  const proc = launch(`socks_client ${args[0]}`, clientBin, args);
  const finished = await Promise.race([proc.done.then(() => true), deadline(ms).then(() => false)]);
  if (!finished) {
    await stop(proc);
    throw new Error(`socks_client ${args.join(" ")}: timed out after ${ms} ms`);
  }
  const line = proc.out.trim().split("\n").pop() ?? "";
  let result;
  try {
    result = JSON.parse(line);
  } catch {
    throw new Error(`socks_client ${args.join(" ")} failed (${proc.code}): ${proc.err.trim() || line}`);
  }
  if (proc.code !== 0) throw new Error(`socks_client ${args[0]} failed (${proc.code}): ${line} ${proc.err}`);
  return result;
}

// ------------------------------------------------------------------ /proc

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

function statFields(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) used so far by every process in the group `pgid`. */
function groupCpu(pgid) {
  let ticks = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(entry);
    // After "pid (comm) ": state ppid pgrp ...; utime, stime, cutime, cstime are the 12th to 15th.
    // Counting reaped children (cutime, cstime) keeps the sum steady when dante's children come and go.
    if (f && Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return ticks / CLK_TCK;
}

/** VmRSS of one process, in KiB. */
function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Share of the machine's CPUs that other people's processes used over `ms`. */
async function machineLoad(ms = 300) {
  const a = foreignCpu(), t = performance.now();
  await sleep(ms);
  const b = foreignCpu();
  return foreignDelta(a, b) / (((performance.now() - t) / 1000) * os.cpus().length);
}

/**
 * Other people's work on the machine skews every figure, so each measurement waits (within a budget
 * for the whole run) until the machine is nearly idle. Returns the load it started at.
 */
let quietBudgetMs = 0;
async function quietGate() {
  let load = await machineLoad();
  while (load > cfg.quietLoad && quietBudgetMs > 0) {
    const t = Date.now();
    await sleep(700);
    load = await machineLoad();
    quietBudgetMs -= Date.now() - t;
  }
  return load;
}

/**
 * CPU seconds used so far by every process that is not ours: not the runner, not in a process group
 * we started, not a kernel thread (those also do our loopback work). Own time only: a parent's
 * cutime jumps by a child's whole life when it reaps it, which would look like a burst.
 */
function foreignCpu() {
  const ours = new Set([...live.keys()]);
  const byPid = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const f = statFields(entry);
    // state ppid pgrp session tty tpgid flags ...; PF_KTHREAD = 0x00200000
    if (!f || ours.has(Number(f[2])) || Number(f[6]) & 0x00200000) continue;
    // starttime (22nd field) tells a new process from an old one that reused the PID.
    byPid.set(entry, { cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, start: f[19] });
  }
  return byPid;
}

/** CPU seconds other processes used between two `foreignCpu()` snapshots. */
function foreignDelta(a, b) {
  let sum = 0;
  for (const [pid, now] of b) {
    const before = a.get(pid);
    // A process that started in between counts whole; one seen before counts what it used since.
    sum += before && before.start === now.start ? Math.max(0, now.cpu - before.cpu) : now.cpu;
  }
  return sum;
}

/** The processes a running subject has besides `proc` (`extra`: one or a list), measured and stopped with it. */
const extras = (r) => (r.extra === undefined ? [] : [r.extra].flat());

/**
 * Runs one measurement of subject `r`: the quiet gate, then `run()`, with the proxy's CPU time and
 * the share of the machine's CPUs that other people's processes used meanwhile (`background`).
 */
async function observe(r, run) {
  const loadBefore = await quietGate();
  const cpu = () => [r.proc, ...extras(r)].reduce((sum, p) => sum + (p ? groupCpu(p.pid) : 0), 0);
  const f0 = foreignCpu(), p0 = cpu(), t0 = performance.now();
  const result = await run();
  const wall = (performance.now() - t0) / 1000;
  const p1 = cpu(), f1 = foreignCpu();
  const proxyCpu = r.proc ? p1 - p0 : null;
  const background = foreignDelta(f0, f1) / (wall * os.cpus().length);
  return { result, proxyCpu, loadBefore, background };
}

// ------------------------------------------------------------------ subjects

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function which(cmd) {
  const r = spawnSync("sh", [
    "-c",
    `command -v ${cmd} || { test -x /usr/sbin/${cmd} && echo /usr/sbin/${cmd}; }`,
  ], {
    encoding: "utf8",
  });
  return r.status === 0 ? r.stdout.trim().split("\n")[0] : null;
}

function versionOf(cmd, args, pattern = /(\d+\.\d+\.\d+)/) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: childEnv });
  return pattern.exec(`${r.stdout}${r.stderr}`)?.[1] ?? "?";
}

const dpkgVersion = (pkg) =>
  spawnSync("dpkg-query", ["-W", "-f", "${Version}", pkg], { encoding: "utf8" }).stdout?.trim() || "?";

/** id, npm package, start script in bench/peers/. */
const NPM_PEERS = [
  ["npm-socks5-server", "@pondwader/socks5-server", "pondwader.mjs"],
  ["npm-socksv5", "socksv5", "socksv5.mjs"],
];

let serverPorts = [];
let clientBin = "";
let tmpDir = "";

/**
 * What is measured. kind "socks": a SOCKS5 proxy (the client does the handshake); "plain": the client
 * connects and the bytes go straight to the C server (direct, or through a bare forwarder).
 */
/** The port of the microsocks subject, once started: the upstream of the chained subjects. */
let microsocksPort = null;
/** The ports of the edgesocks subjects, by runtime: the upstreams of the edgesocks → edgesocks subjects. */
const edgesocksPorts = {};
/** The ports of the bare forwarders, by runtime: the second hop of the forwarder → forwarder subjects. */
const forwarderPorts = {};

function subjects() {
  const list = [{ id: "direct", label: "direct (no proxy)", kind: "plain", start: null }];
  const microsocks = skip.includes("microsocks") ? null : which("microsocks");
  if (microsocks) {
    list.push({
      id: "microsocks",
      label: `microsocks ${dpkgVersion("microsocks")}`,
      kind: "socks",
      reference: true,
      start: async () => {
        const port = await freePort();
        // microsocks prints a line per connection; nobody reads it.
        const proc = launch("microsocks", microsocks, ["-i", "127.0.0.1", "-p", String(port)], {
          stdout: "ignore",
        });
        await waitFor(proc, () => canConnect(port), 10_000, "listening port");
        microsocksPort = port;
        return { proc, port };
      },
    });
  } else if (!skip.includes("microsocks")) {
    log("microsocks not installed (apt-get install microsocks): left out");
  }
  const danted = skip.includes("dante") ? null : which("danted");
  if (danted) {
    list.push({
      id: "dante",
      label: `dante ${dpkgVersion("dante-server").replace(/\+.*/, "")}`,
      kind: "socks",
      reference: true,
      noMemory: "several processes",
      start: async () => {
        const port = await freePort();
        const conf = join(tmpDir, `danted-${port}.conf`);
        writeFileSync(
          conf,
          [
            "logoutput: stderr",
            `internal: 127.0.0.1 port = ${port}`,
            "external: 127.0.0.1",
            "socksmethod: none",
            "clientmethod: none",
            "user.privileged: root",
            "user.unprivileged: nobody",
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }",
            "",
          ].join("\n"),
        );
        const proc = launch("dante", danted, ["-f", conf, "-p", join(tmpDir, `danted-${port}.pid`)]);
        await waitFor(proc, () => canConnect(port), 10_000, "listening port");
        return { proc, port };
      },
    });
  } else if (!skip.includes("dante")) {
    log("dante-server not installed (apt-get install dante-server): left out");
  }

  const targets = () => `127.0.0.1:${serverPorts.join(",")}`;
  const listening = /listening on 127\.0\.0\.1:(\d+)/;
  const startOn = (name, cmd, args) => async () => {
    const proc = launch(name, cmd, args);
    const m = await waitFor(proc, (p) => listening.exec(p.out), 30_000, "startup line");
    return { proc, port: Number(m[1]) };
  };
  // The npm SOCKS servers a Node user would pick instead, on Node 24 with a minimal accept-all setup
  // (bench/peers/): no timeouts, no policy, no log.
  if (!skip.includes("npm")) {
    for (const [id, pkg, script] of NPM_PEERS) {
      const version =
        JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version;
      list.push({
        id,
        label: `${pkg} ${version} (Node)`,
        kind: "socks",
        reference: true,
        npm: true,
        start: startOn(pkg, bin("node"), [join("bench", "peers", script), "127.0.0.1:0"]),
      });
    }
  }

  const forwarders = {
    deno: () => [bin("deno"), ["run", "-A", "bench/forwarders/deno_forward.ts", "127.0.0.1:0", targets()]],
    bun: () => [bin("bun"), ["bench/forwarders/bun_forward.ts", "127.0.0.1:0", targets()]],
    node: () => [bin("node"), ["bench/forwarders/node_forward.mjs", "127.0.0.1:0", targets()]],
  };
  // The bare forwarders' SOCKS5 mode: the least SOCKS5 server each runtime can run (fixed replies, nothing
  // checked, the forwarder's relay), the floor for any SOCKS5 server's tunnels/s there. `--unstable-net` for
  // Deno's SO_REUSEPORT.
  const floors = {
    deno: [bin("deno"), ["run", "-A", "--unstable-net", "bench/forwarders/deno_forward.ts"]],
    bun: [bin("bun"), ["bench/forwarders/bun_forward.ts"]],
    node: [bin("node"), ["bench/forwarders/node_forward.mjs"]],
  };
  const proxy = ["mod.ts", "--listen", "127.0.0.1:0", "--allow-private"];
  const edgesocks = {
    deno: [bin("deno"), ["run", "-A", ...proxy]],
    bun: [bin("bun"), proxy],
    node: [bin("node"), proxy],
  };
  for (const rt of only) {
    list.push({
      id: `${rt}-forwarder`,
      label: `${rt} bare forwarder`,
      kind: "plain",
      runtime: rt,
      start: async () => {
        const started = await startOn(`${rt} forwarder`, ...forwarders[rt]())();
        forwarderPorts[rt] = started.port;
        return started;
      },
    });
    // The least SOCKS5 server, alone and one per core sharing its port (as `--workers auto` runs edgesocks).
    const [floorCmd, floorArgs] = floors[rt];
    const cores = os.cpus().length;
    list.push({
      id: `${rt}-floor`,
      label: `${rt} least SOCKS5 server`,
      kind: "socks",
      runtime: rt,
      tunnelsOnly: true,
      noMemory: "a floor, not a server",
      start: startOn(`${rt} least SOCKS5 server`, floorCmd, [...floorArgs, "127.0.0.1:0", "socks5"]),
    });
    list.push({
      id: `${rt}-floor-cores`,
      label: `${rt} least SOCKS5 server × ${cores} processes`,
      kind: "socks",
      runtime: rt,
      tunnelsOnly: true,
      noMemory: "several processes",
      start: async () => {
        const what = `${rt} least SOCKS5 server`;
        const first = await startOn(what, floorCmd, [...floorArgs, "127.0.0.1:0", "socks5", "reuse"])();
        const extra = [];
        try {
          for (let i = 1; i < cores; i++) {
            const args = [...floorArgs, `127.0.0.1:${first.port}`, "socks5", "reuse"];
            extra.push((await startOn(`${what} ${i + 1}`, floorCmd, args)()).proc);
          }
        } catch (error) {
          for (const p of [first.proc, ...extra]) await stop(p);
          throw error;
        }
        return { proc: first.proc, port: first.port, extra };
      },
    });
    // Two bare forwarders in a row: what any second relay in the path costs on this machine, the ceiling
    // for the upstream-hop subjects below (a hop can be no cheaper than the runtime's own bare forwarder).
    list.push({
      id: `${rt}-forwarder-chained`,
      label: `${rt} bare forwarder → ${rt} bare forwarder`,
      kind: "plain",
      runtime: rt,
      chainOnly: true,
      noMemory: "two forwarders",
      start: () => {
        if (forwarderPorts[rt] === undefined) throw new Error(`${rt} forwarder did not start`);
        const [cmd, args] = forwarders[rt]();
        return startOn(`${rt} forwarder → forwarder`, cmd, [
          ...args.slice(0, -1),
          `127.0.0.1:${forwarderPorts[rt]}`,
        ])();
      },
    });
    list.push({
      id: `${rt}-edgesocks`,
      label: `edgesocks on ${rt}`,
      kind: "socks",
      runtime: rt,
      edgesocks: true,
      start: async () => {
        const started = await startOn(`edgesocks ${rt}`, ...edgesocks[rt])();
        edgesocksPorts[rt] = started.port;
        return started;
      },
    });
    // One process per core (the supervisor and 2 workers sharing the port): tunnels/s only, since one
    // connection's throughput is one worker's and the memory of several processes is not one RSS.
    const [cmd, args] = edgesocks[rt];
    list.push({
      id: `${rt}-edgesocks-workers`,
      label: `edgesocks on ${rt}, --workers auto (${os.cpus().length})`,
      kind: "socks",
      runtime: rt,
      edgesocks: true,
      tunnelsOnly: true,
      noMemory: "several processes",
      start: startOn(`edgesocks ${rt} --workers auto`, cmd, [...args, "--workers", "auto"]),
    });
    // One upstream hop: edgesocks → microsocks → the target (the microsocks above, started first).
    if (microsocks) {
      list.push({
        id: `${rt}-edgesocks-chained`,
        label: `edgesocks on ${rt} → microsocks`,
        kind: "socks",
        runtime: rt,
        edgesocks: true,
        chainOnly: true,
        noMemory: "two proxies",
        start: () => {
          if (microsocksPort === null) throw new Error("microsocks did not start");
          const hop = ["--upstream", `hop=socks5://127.0.0.1:${microsocksPort}`, "--route", "*=hop"];
          return startOn(`edgesocks ${rt} → microsocks`, cmd, [...args, ...hop])();
        },
      });
    }
    // And edgesocks → the edgesocks above (same runtime): the hop is as fast as the direct tunnel.
    list.push({
      id: `${rt}-edgesocks-chained-edgesocks`,
      label: `edgesocks on ${rt} → edgesocks on ${rt}`,
      kind: "socks",
      runtime: rt,
      edgesocks: true,
      chainOnly: true,
      noMemory: "two proxies",
      start: () => {
        if (edgesocksPorts[rt] === undefined) throw new Error(`edgesocks on ${rt} did not start`);
        const hop = ["--upstream", `hop=socks5://127.0.0.1:${edgesocksPorts[rt]}`, "--route", "*=hop"];
        return startOn(`edgesocks ${rt} → edgesocks`, cmd, [...args, ...hop])();
      },
    });
    // The same proxy serving HTTP CONNECT (one round trip instead of SOCKS5's two): tunnels/s only.
    list.push({
      id: `${rt}-edgesocks-http`,
      label: `edgesocks on ${rt}, HTTP CONNECT`,
      kind: "http",
      runtime: rt,
      edgesocks: true,
      tunnelsOnly: true,
      noMemory: "same relay as SOCKS5",
      start: startOn(`edgesocks ${rt} --http-connect`, cmd, [...args, "--http-connect"]),
    });
    // SOCKS over WebSocket: the bridge and a --listen-ws edge, both on this runtime (CPU: both processes).
    const [, edgeArgs] = edgesocks[rt];
    const edgeWs = [...edgeArgs.filter((a) => a !== "--listen" && a !== "127.0.0.1:0")];
    edgeWs.splice(edgeWs.indexOf("mod.ts") + 1, 0, "--listen-ws", "127.0.0.1:0/socks");
    list.push({
      id: `${rt}-ws`,
      label: `edgesocks on ${rt}, bridge + WebSocket edge`,
      kind: "socks",
      runtime: rt,
      edgesocks: true,
      noMemory: "two processes",
      start: async () => {
        const edge = launch(`edgesocks ${rt} --listen-ws`, cmd, edgeWs);
        const m = await waitFor(
          edge,
          (p) => /ws:\/\/127\.0\.0\.1:(\d+)\/socks/.exec(p.out),
          30_000,
          "startup line",
        );
        const bridgeArgs = [
          ...args.slice(0, args.indexOf("mod.ts") + 1),
          "bridge",
          "--listen",
          "127.0.0.1:0",
        ];
        bridgeArgs.push("--to", `ws://127.0.0.1:${m[1]}/socks`);
        try {
          const { proc, port } = await startOn(`edgesocks ${rt} bridge`, cmd, bridgeArgs)();
          return { proc, port, extra: edge };
        } catch (error) {
          await stop(edge);
          throw error;
        }
      },
    });
  }
  // edgesocks on workerd: the built worker on a raw TCP socket (a network service allowing loopback), compared
  // with edgesocks over TCP on Node in the same run. Skip it with --skip workerd. Twice: as deployed (the
  // default idle timeout, so the JavaScript relay) and with no idle timeout (EDGESOCKS_IDLE_TIMEOUT=0), where
  // tunnels are workerd's own pipes (README: "How tunnels behave on workerd").
  const workerd = (id, label, bindings) => ({
    id,
    label,
    kind: "socks",
    noMemory: "an isolate of its own",
    start: async () => {
      const bundle = join(tmpDir, "edgesocks.js");
      const built = spawnSync(bin("node"), [join(root, "tools", "build_workerd.mjs"), bundle], {
        encoding: "utf8",
      });
      if (built.status !== 0) throw new Error(`build_workerd failed: ${built.stderr}`);
      const port = await freePort();
      const conf = join(tmpDir, `workerd-${port}.capnp`);
      const text = [["EDGESOCKS_ALLOW_PRIVATE", "true"], ...bindings]
        .map(([name, value]) => `(name = "${name}", text = "${value}")`).join(", ");
      writeFileSync(
        conf,
        `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "edgesocks", worker = .w), (name = "net", network = (allow = ["public", "private", "local"]))],
  sockets = [(name = "socks", address = "127.0.0.1:${port}", tcp = (), service = "edgesocks")],
);
const w :Workerd.Worker = (
  modules = [(name = "edgesocks.js", esModule = embed "edgesocks.js")],
  compatibilityDate = "2026-11-01",
  globalOutbound = "net",
  bindings = [${text}],
);
`,
      );
      const proc = launch("workerd", bin("workerd"), ["serve", conf]);
      await waitFor(proc, () => canConnect(port), 30_000, "listening port");
      return { proc, port };
    },
  });
  if (!skip.includes("workerd")) {
    list.push(workerd("workerd", "edgesocks on workerd (raw TCP socket)", []));
    list.push(
      workerd("workerd-pipes", "edgesocks on workerd (raw TCP socket, no idle timeout: workerd's pipes)", [
        ["EDGESOCKS_IDLE_TIMEOUT", "0"],
      ]),
    );
  }
  return list;
}

async function startAll(list) {
  const running = [];
  for (const s of list) {
    if (!s.start) {
      running.push({ subject: s, proc: null, port: serverPorts[0] });
      continue;
    }
    try {
      const { proc, port, extra } = await s.start();
      running.push({ subject: s, proc, port, extra });
    } catch (error) {
      log(`${s.label}: could not start: ${error.message}`);
      s.startError = error.message;
    }
  }
  return running;
}

// ------------------------------------------------------------------ measurements

async function measureTput(r, dir, bytes) {
  const args = ["tput", "--connect", `127.0.0.1:${r.port}`, `--${dir}`, "--bytes", String(bytes)];
  args.push("--timeout", String(cfg.tputTimeoutSec));
  if (r.subject.kind === "socks") args.push("--socks5", `127.0.0.1:${serverPorts[0]}`);
  const o = await observe(r, () => client(args, (cfg.tputTimeoutSec + 10) * 1000));
  if (!o.result.ok) throw new Error(`moved ${o.result.bytes} of ${bytes} bytes`);
  return {
    mibps: o.result.mibps,
    seconds: o.result.seconds,
    proxyCpuPerGiB: o.proxyCpu === null ? null : o.proxyCpu / (bytes / 1024 / MiB),
    clientCpu: o.result.client_cpu,
    loadBefore: o.loadBefore,
    background: o.background,
  };
}

async function measureTunnels(r, count, seconds) {
  const args = [
    "tunnels",
    "--connect",
    `127.0.0.1:${r.port}`,
    "--concurrency",
    String(cfg.tunnelConcurrency),
  ];
  args.push("--count", String(count), "--seconds", String(seconds));
  if (r.subject.kind === "socks") args.push("--socks5", `127.0.0.1:${serverPorts.join(",")}`);
  if (r.subject.kind === "http") args.push("--http", `127.0.0.1:${serverPorts.join(",")}`);
  const o = await observe(r, () => client(args, (seconds + 60) * 1000));
  const { result } = o;
  return {
    perSecond: result.per_second,
    completed: result.completed,
    errors: result.errors,
    p50ms: result.p50_ms,
    p99ms: result.p99_ms,
    proxyCpuUsPerTunnel: o.proxyCpu === null || !result.completed
      ? null
      : (o.proxyCpu / result.completed) * 1e6,
    clientCpu: result.client_cpu,
    loadBefore: o.loadBefore,
    background: o.background,
    raw: result,
  };
}

/** Opens `n` tunnels and holds them; resolves with the client's "ready" report and a release function. */
async function holdTunnels(r, n) {
  const args = ["hold", "--connect", `127.0.0.1:${r.port}`, "--count", String(n)];
  args.push("--concurrency", String(cfg.holdConcurrency), "--seconds", "60");
  if (r.subject.kind === "socks") args.push("--socks5", `127.0.0.1:${serverPorts.join(",")}`);
  const proc = launch("socks_client hold", clientBin, args, { stdin: "pipe" });
  try {
    const m = await waitFor(proc, (p) => /^ready (\{.*\})$/m.exec(p.out), 120_000, "ready line");
    const ready = JSON.parse(m[1]);
    return {
      ready,
      async release() {
        proc.child.stdin.end();
        await Promise.race([proc.done, deadline(15_000)]);
        await stop(proc);
        const last = proc.out.trim().split("\n").pop();
        try {
          return JSON.parse(last);
        } catch {
          return {};
        }
      },
    };
  } catch (error) {
    await stop(proc);
    throw error;
  }
}

async function measureMemory(subject) {
  const started = await startAll([subject]);
  const r = started[0];
  if (!r) return { error: subject.startError };
  try {
    // Warm up: the code paths of a tunnel run (and are compiled) once before the baseline.
    const warm = await holdTunnels(r, cfg.holdWarm);
    await warm.release();
    await sleep(500);
    const before = rssKiB(r.proc.pid);
    const held = await holdTunnels(r, cfg.holdTunnels);
    await sleep(cfg.settleMs);
    const after = rssKiB(r.proc.pid);
    const released = await held.release();
    const open = held.ready.completed - (released.dropped ?? 0);
    return {
      tunnels: held.ready.completed,
      errors: held.ready.errors,
      dropped: released.dropped ?? null,
      rssBeforeKiB: before,
      rssAfterKiB: after,
      kibPerTunnel: open > 0 ? (after - before) / open : null,
      openSeconds: held.ready.seconds,
    };
  } finally {
    await stop(r.proc);
  }
}

// ------------------------------------------------------------------ summary

/** Median, min and max of a series with holes (failed runs are null). */
function spread(xs) {
  const v = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : null, max: v.length ? Math.max(...v) : null };
}

/** Median of the run-by-run ratios a[i] / b[i]: runs i of two subjects were measured seconds apart. */
function pairedRatio(a, b, value) {
  const ratios = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i] ? value(a[i]) : null, y = b[i] ? value(b[i]) : null;
    ratios.push(x && y ? x / y : null);
  }
  return { ...spread(ratios), ratios };
}

function summarize(results, raw) {
  for (const [id, x] of Object.entries(raw)) {
    const dir = (runs) => ({
      ...spread(runs.map((t) => t?.mibps)),
      cpuPerGiB: median(runs.map((t) => t?.proxyCpuPerGiB)),
      clientCpuPerGiB: median(runs.map((t) => (t ? t.clientCpu / (cfg.tputBytes / 1024 / MiB) : null))),
      runs,
    });
    results.tput[id] = {
      up: dir(x.up),
      down: dir(x.down),
      background: median([...x.up, ...x.down].map((t) => t?.background)),
      errors: x.errors.filter((e) => !e.startsWith("tunnels")),
    };
    const runs = x.tunnels;
    results.tunnels[id] = {
      ...spread(runs.map((t) => t?.perSecond)),
      p50ms: median(runs.map((t) => t?.p50ms)),
      p99ms: median(runs.map((t) => t?.p99ms)),
      cpuUs: median(runs.map((t) => t?.proxyCpuUsPerTunnel)),
      failedTunnels: runs.reduce((n, t) => n + (t?.errors ?? 0), 0),
      background: median(runs.map((t) => t?.background)),
      runs,
      errors: x.errors.filter((e) => e.startsWith("tunnels")),
    };
  }
  for (const rt of only) {
    const e = raw[`${rt}-edgesocks`], f = raw[`${rt}-forwarder`];
    if (e && f) {
      for (const d of ["up", "down"]) {
        results.tput[`${rt}-edgesocks`][d].vsForwarder = pairedRatio(e[d], f[d], (t) => t.mibps);
        results.tput[`${rt}-edgesocks`][d].cpuVsForwarder = pairedRatio(e[d], f[d], (t) => t.proxyCpuPerGiB);
      }
      results.tunnels[`${rt}-edgesocks`].cpuVsForwarder = pairedRatio(
        e.tunnels,
        f.tunnels,
        (t) => t.proxyCpuUsPerTunnel,
      );
    }
  }
  // workerd's raw TCP ÷ edgesocks over TCP on Node (else the first runtime measured), run by run.
  for (const id of ["workerd", "workerd-pipes"]) {
    const w = raw[id], base = only.includes("node") ? "node" : only[0];
    const e = raw[`${base}-edgesocks`];
    if (w && e) {
      for (const d of ["up", "down"]) {
        results.tput[id][d].vsTcp = {
          base,
          ...pairedRatio(w[d], e[d], (t) => t.mibps),
        };
      }
      results.tunnels[id].vsTcp = { base, ...pairedRatio(w.tunnels, e.tunnels, (t) => t.perSecond) };
    }
  }
  // SOCKS over WebSocket (bridge + edge) ÷ the same runtime's TCP relay, run by run.
  for (const rt of only) {
    const w = raw[`${rt}-ws`], e = raw[`${rt}-edgesocks`];
    if (!w || !e) continue;
    for (const d of ["up", "down"]) {
      results.tput[`${rt}-ws`][d].vsTcp = pairedRatio(w[d], e[d], (t) => t.mibps);
    }
    results.tunnels[`${rt}-ws`].vsTcp = pairedRatio(w.tunnels, e.tunnels, (t) => t.perSecond);
  }
  for (const rt of only) {
    const c = raw[`${rt}-edgesocks-chained`], e = raw[`${rt}-edgesocks`], ms = raw.microsocks;
    const cc = raw[`${rt}-edgesocks-chained-edgesocks`];
    const fc = raw[`${rt}-forwarder-chained`], f = raw[`${rt}-forwarder`];
    for (const d of ["up", "down"]) {
      if (fc && f) {
        results.tput[`${rt}-forwarder-chained`][d].vsDirect = pairedRatio(fc[d], f[d], (t) => t.mibps);
      }
      if (c && ms) {
        results.tput[`${rt}-edgesocks-chained`][d].vsHop = pairedRatio(c[d], ms[d], (t) => t.mibps);
      }
      if (cc && e) {
        results.tput[`${rt}-edgesocks-chained-edgesocks`][d].vsDirect = pairedRatio(
          cc[d],
          e[d],
          (t) => t.mibps,
        );
      }
    }
  }
  for (const rt of only) {
    const h = raw[`${rt}-edgesocks-http`], e = raw[`${rt}-edgesocks`];
    if (h && e) {
      results.tunnels[`${rt}-edgesocks-http`].vsSocks5 = pairedRatio(
        h.tunnels,
        e.tunnels,
        (t) => t.perSecond,
      );
    }
  }
  // edgesocks ÷ the least SOCKS5 server on its runtime: alone, and with --workers auto against one per core.
  for (const rt of only) {
    for (
      const [e, f] of [[`${rt}-edgesocks`, `${rt}-floor`], [`${rt}-edgesocks-workers`, `${rt}-floor-cores`]]
    ) {
      if (raw[e] && raw[f]) {
        results.tunnels[e].vsFloor = pairedRatio(raw[e].tunnels, raw[f].tunnels, (t) => t.perSecond);
      }
    }
  }
  // The faster npm server (by median tunnels/s, and by median throughput each way) is the one to beat on Node.
  const npmIds = NPM_PEERS.map(([id]) => id).filter((id) => raw[id]);
  const faster = (value) =>
    npmIds.length ? npmIds.reduce((a, b) => ((value(b) ?? -1) > (value(a) ?? -1) ? b : a)) : null;
  const nodeE = raw["node-edgesocks"];
  if (nodeE && npmIds.length) {
    const tunPeer = faster((id) => results.tunnels[id].median);
    // edgesocks, and the least SOCKS5 server beside it: what any server on Node could show.
    for (const id of ["node-edgesocks", "node-floor"].filter((id) => raw[id])) {
      results.tunnels[id].vsNpm = {
        peer: tunPeer,
        ...pairedRatio(raw[id].tunnels, raw[tunPeer].tunnels, (t) => t.perSecond),
      };
    }
    for (const d of ["up", "down"]) {
      const peer = faster((id) => results.tput[id][d].median);
      results.tput["node-edgesocks"][d].vsNpm = {
        peer,
        ...pairedRatio(nodeE[d], raw[peer][d], (t) => t.mibps),
      };
    }
  }
  const ms = raw.microsocks;
  for (const [id, x] of Object.entries(raw)) {
    if (ms && id !== "microsocks" && results.subjects.find((s) => s.id === id)?.kind === "socks") {
      results.tunnels[id].vsMicrosocks = pairedRatio(x.tunnels, ms.tunnels, (t) => t.perSecond);
    }
  }
}

// ------------------------------------------------------------------ report

const fmt = (x, digits = 0) =>
  x === null || x === undefined || !Number.isFinite(x)
    ? "—"
    : x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const range = (s, digits = 0) =>
  s.median === null ? "—" : `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
/** A note when other processes kept the machine busy during a subject's runs (median share of all CPUs). */
const busy = (share) => (share > 0.05 ? `others used ${fmt(share * 100)}% of the CPUs` : "");
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const mark = (ok) => (ok === null ? "n/a" : ok ? "**met**" : "**not met**");

/** A Markdown table; `align` has an "l" or "r" per column. */
function table(header, align, rows) {
  const lines = [
    `| ${header.join(" | ")} |`,
    `|${[...align].map((a) => (a === "r" ? " ---: " : " --- ")).join("|")}|`,
  ];
  for (const row of rows) lines.push(`| ${row.join(" | ")} |`);
  return lines.join("\n");
}

function report(results) {
  const { tput, tunnels, memory, env } = results;
  const out = [];
  out.push(`# edgesocks benchmarks${quick ? " (--quick: a smoke test, not for comparison)" : ""}`);
  out.push("");
  out.push(
    `${env.date} · ${env.cpus} × ${env.cpuModel} · Linux ${env.kernel} · deno ${env.versions.deno}, ` +
      `bun ${env.versions.bun}, node ${env.versions.node} · loopback only · edgesocks ${env.versions.edgesocks} ` +
      `at ${env.git.commit}${
        env.git.dirty ? ` + uncommitted changes in ${env.git.dirty.split("\n").length} files` : ""
      }`,
  );
  out.push("");
  out.push(
    `Every figure is a median (min–max) of runs that went round all subjects in turn, so neighbours in a ` +
      `table were measured seconds apart; a ratio is the median of the run-by-run ratios. ` +
      `**Throughput**: ${plural(cfg.tputRuns, "run")} × ${
        fmt(cfg.tputBytes / MiB)
      } MiB each way over one TCP ` +
      `connection, C client and C sink/source (bench/socks_client.c). **Tunnels**: ${
        plural(cfg.tunnelRuns, "run")
      } of ` +
      `≤ ${cfg.tunnelSeconds} s, ${cfg.tunnelConcurrency} tunnels at once, each a connect, the SOCKS5 ` +
      `greeting and CONNECT (two round trips; none for direct and the bare forwarders), a 1-byte echo and a ` +
      `close. **Memory**: VmRSS growth of a fresh proxy process holding ${
        fmt(cfg.holdTunnels)
      } idle tunnels ` +
      `(after a warm-up). Proxy CPU is user + system time of the proxy's process group (all its processes).`,
  );
  out.push("");
  const bg = results.background;
  if (bg && bg.median !== null) {
    const share = `other processes used a median ${fmt(bg.median * 100)}% (max ${fmt(bg.max * 100)}%) ` +
      `of the CPUs during the measurements; the quiet gate waited ${fmt(bg.waitedSeconds)} s in all`;
    out.push(
      bg.median > 0.05
        ? `**Busy machine**: ${share}. Figures marked "others used" are skewed; run again on a quiet machine.`
        : `Machine: ${share}.`,
    );
    out.push("");
  }
  out.push("## Throughput");
  out.push("");
  const tputRows = [];
  for (const s of results.subjects) {
    const t = tput[s.id];
    if (!t || s.tunnelsOnly) continue;
    tputRows.push([
      s.label,
      range(t.up),
      range(t.down),
      t.up.cpuPerGiB === null ? "—" : `${fmt(t.up.cpuPerGiB, 2)} / ${fmt(t.down.cpuPerGiB, 2)}`,
      t.up.vsForwarder ? `${fmt(t.up.vsForwarder.median, 2)} / ${fmt(t.down.vsForwarder.median, 2)}` : "",
      t.up.cpuVsForwarder
        ? `${fmt(t.up.cpuVsForwarder.median, 2)} / ${fmt(t.down.cpuVsForwarder.median, 2)}`
        : "",
      [busy(t.background), t.errors.length ? `${t.errors.length} failed: ${t.errors[0]}` : ""].filter(Boolean)
        .join("; "),
    ]);
  }
  out.push(
    table(
      [
        "subject",
        "up MiB/s",
        "down MiB/s",
        "proxy CPU s/GiB up / down",
        "÷ own bare forwarder up / down",
        "CPU ÷ bare forwarder up / down",
        "note",
      ],
      "lrrrrrl",
      tputRows,
    ),
  );
  out.push("");
  out.push("## Tunnels per second");
  out.push("");
  const tunRows = [];
  for (const s of results.subjects) {
    const t = tunnels[s.id];
    if (!t) continue;
    tunRows.push([
      s.label,
      s.kind === "socks" ? "SOCKS5" : s.kind === "http" ? "HTTP CONNECT" : "plain",
      range(t),
      fmt(t.p50ms, 2),
      fmt(t.p99ms, 2),
      fmt(t.cpuUs),
      t.vsMicrosocks ? fmt(t.vsMicrosocks.median, 2) : "",
      t.cpuVsForwarder ? fmt(t.cpuVsForwarder.median, 2) : "",
      [
        t.vsSocks5 ? `÷ SOCKS5 on ${s.runtime}: ${fmt(t.vsSocks5.median, 2)}` : "",
        t.vsFloor ? `÷ the least SOCKS5 server: ${fmt(t.vsFloor.median, 2)}` : "",
        busy(t.background),
        t.failedTunnels ? `${t.failedTunnels} tunnels failed` : "",
        t.errors[0] ?? "",
      ]
        .filter(Boolean).join("; "),
    ]);
  }
  out.push(
    table(
      [
        "subject",
        "handshake",
        "tunnels/s",
        "p50 ms",
        "p99 ms",
        "proxy CPU µs/tunnel",
        "÷ microsocks",
        "CPU ÷ bare forwarder",
        "note",
      ],
      "llrrrrrrl",
      tunRows,
    ),
  );
  out.push("");
  out.push("## Memory per idle tunnel");
  out.push("");
  const memRows = [];
  for (const s of results.subjects) {
    const m = memory[s.id];
    if (!m) continue;
    memRows.push([
      s.label,
      fmt(m.tunnels),
      fmt(m.rssBeforeKiB / 1024, 1),
      fmt(m.rssAfterKiB / 1024, 1),
      fmt(m.kibPerTunnel, 1),
      m.error
        ? `failed: ${m.error}`
        : m.errors || m.dropped
        ? `${m.errors} errors, ${m.dropped} dropped`
        : "",
    ]);
  }
  out.push(
    table(["subject", "tunnels", "RSS before MiB", "RSS after MiB", "KiB/tunnel", "note"], "lrrrrl", memRows),
  );
  out.push("");
  out.push("## Targets");
  out.push("");
  out.push(
    table(
      ["target", "measured", "goal", "status"],
      "lrrl",
      results.targets.map((t) => [t.what, t.value, t.goal, mark(t.met)]),
    ),
  );
  out.push("");
  if (results.udp) out.push(udpReport(results.udp), "");
  const skipped = results.subjects.filter((s) => s.startError).map((s) => `${s.label}: ${s.startError}`);
  if (skipped.length) out.push(`Could not start: ${skipped.join("; ")}`, "");
  return out.join("\n");
}

function evaluateTargets(results) {
  const { tput, tunnels, memory } = results;
  const targets = [];
  const memGoal = { bun: 8, node: 16, deno: 24 };
  const tunGoal = { bun: 0.8, node: 0.8, deno: 0.8 };
  const npmLabel = (id) => results.subjects.find((s) => s.id === id)?.label.replace(/ \(Node\)$/, "") ?? id;
  const vsNpm = [
    ["tunnels/s", tunnels["node-edgesocks"]?.vsNpm, 1.2],
    ["the least SOCKS5 server's tunnels/s", tunnels["node-floor"]?.vsNpm, null],
    ["throughput up", tput["node-edgesocks"]?.up.vsNpm, 1],
    ["throughput down", tput["node-edgesocks"]?.down.vsNpm, 1],
  ];
  for (const [what, r, goal] of only.includes("node") ? vsNpm : []) {
    if (!r) continue;
    targets.push({
      what: `node: ${what} ÷ the faster npm server (${npmLabel(r.peer)})`,
      value: r.median == null ? "—" : range(r, 2),
      goal: goal === null ? "(reported)" : `≥ ${fmt(goal, 1)}`,
      met: r.median == null || goal === null ? null : r.median >= goal,
    });
  }
  for (const rt of only) {
    const e = tput[`${rt}-edgesocks`];
    for (const dir of ["up", "down"]) {
      const r = e?.[dir].vsForwarder;
      targets.push({
        what: `${rt}: relay throughput ${dir} ÷ bare ${rt} forwarder`,
        value: r?.median == null ? "—" : range(r, 2),
        goal: "≥ 0.90",
        met: r?.median == null ? null : r.median >= 0.9,
      });
    }
  }
  for (const rt of parts.includes("chain") ? only : []) {
    for (const dir of ["up", "down"]) {
      const r = tput[`${rt}-edgesocks-chained-edgesocks`]?.[dir].vsDirect;
      targets.push({
        what: `${rt}: throughput ${dir} through one upstream hop (→ edgesocks on ${rt}) ÷ direct edgesocks`,
        value: r?.median == null ? "—" : range(r, 2),
        goal: "≥ 0.90",
        met: r?.median == null ? null : r.median >= 0.9,
      });
      // The same ratio for the runtime's bare forwarder: what a second relay costs on this machine at all.
      const c = tput[`${rt}-forwarder-chained`]?.[dir].vsDirect;
      targets.push({
        what: `${rt}: throughput ${dir}, bare forwarder → bare forwarder ÷ one bare forwarder (the ceiling)`,
        value: c?.median == null ? "—" : range(c, 2),
        goal: "(reported)",
        met: null,
      });
      // microsocks is the slower of the two proxies: edgesocks in front of it should cost little more.
      const h = tput[`${rt}-edgesocks-chained`]?.[dir].vsHop;
      targets.push({
        what: `${rt}: throughput ${dir} edgesocks → microsocks ÷ microsocks alone`,
        value: h?.median == null ? "—" : range(h, 2),
        goal: "≥ 0.90",
        met: h?.median == null ? null : h.median >= 0.9,
      });
    }
  }
  for (const rt of only) {
    for (
      const [id, how, goal, floorId] of [
        [`${rt}-edgesocks`, "", tunGoal[rt], `${rt}-floor`],
        [`${rt}-edgesocks-workers`, " (--workers auto)", 1, `${rt}-floor-cores`],
      ]
    ) {
      const r = tunnels[id]?.vsMicrosocks;
      targets.push({
        what: `${rt}: tunnels/s ÷ microsocks${how}`,
        value: r?.median == null ? "—" : range(r, 2),
        goal: `≥ ${fmt(goal, 1)}`,
        met: r?.median == null ? null : r.median >= goal,
      });
      // What the least SOCKS5 server reaches on the same runtime, in the same processes: the most any
      // SOCKS5 server there could show against the goal above.
      const f = tunnels[floorId]?.vsMicrosocks;
      targets.push({
        what: `${rt}: the least SOCKS5 server's tunnels/s${
          floorId.endsWith("-cores") ? ", one process per core," : ""
        } ÷ microsocks`,
        value: f?.median == null ? "—" : range(f, 2),
        goal: "(reported)",
        met: null,
      });
    }
  }
  for (const [id, how] of [["workerd", ""], ["workerd-pipes", " (no idle timeout: workerd's pipes)"]]) {
    for (const dir of ["up", "down"]) {
      const r = tput[id]?.[dir].vsTcp;
      targets.push({
        what: `workerd raw TCP${how}: throughput ${dir} ÷ edgesocks over TCP${
          r?.base ? ` on ${r.base}` : ""
        }`,
        value: r?.median == null ? "—" : range(r, 2),
        goal: "≥ 0.80",
        met: r?.median == null ? null : r.median >= 0.8,
      });
    }
    const t = tunnels[id]?.vsTcp;
    targets.push({
      what: `workerd raw TCP${how}: tunnels/s ÷ edgesocks over TCP${t?.base ? ` on ${t.base}` : ""}`,
      value: t?.median == null ? "—" : range(t, 2),
      goal: "(reported)",
      met: null,
    });
  }
  for (const rt of only) {
    for (const dir of ["up", "down"]) {
      const r = tput[`${rt}-ws`]?.[dir].vsTcp;
      targets.push({
        what: `${rt}: bridge + WebSocket edge throughput ${dir} ÷ edgesocks over TCP`,
        value: r?.median == null ? "—" : range(r, 2),
        goal: "≥ 0.80",
        met: r?.median == null ? null : r.median >= 0.8,
      });
    }
    const t = tunnels[`${rt}-ws`]?.vsTcp;
    targets.push({
      what: `${rt}: bridge + WebSocket edge tunnels/s ÷ edgesocks over TCP`,
      value: t?.median == null ? "—" : range(t, 2),
      goal: "(reported)",
      met: null,
    });
  }
  for (const rt of only) {
    const k = memory[`${rt}-edgesocks`]?.kibPerTunnel ?? null;
    targets.push({
      what: `${rt}: memory per idle tunnel`,
      value: k === null ? "—" : `${fmt(k, 1)} KiB`,
      goal: `≤ ${memGoal[rt]} KiB`,
      met: k === null ? null : k <= memGoal[rt],
    });
  }
  return targets;
}

// ------------------------------------------------------------------ main

async function main() {
  const t0 = Date.now();
  mkdirSync(resultsDir, { recursive: true });
  tmpDir = join(resultsDir, "tmp");
  mkdirSync(tmpDir, { recursive: true });
  for (const name of only) {
    if (!readdirSync(join(root, "node_modules", ".bin")).includes(name)) {
      throw new Error(`node_modules/.bin/${name} missing: run \`npm ci\` first`);
    }
  }

  clientBin = join(resultsDir, "socks_client");
  const cc = spawnSync(
    "cc",
    ["-O2", "-Wall", "-pthread", "-o", clientBin, join(benchDir, "socks_client.c")],
    {
      encoding: "utf8",
    },
  );
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr || cc.error}`);

  const env = {
    date: new Date().toISOString(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model?.trim() ?? "?",
    kernel: os.release(),
    nofile: Number(spawnSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim()) || null,
    versions: {
      deno: versionOf(bin("deno"), ["--version"]),
      bun: versionOf(bin("bun"), ["--version"]),
      node: versionOf(bin("node"), ["--version"]),
      runner: process.versions.node,
      edgesocks: /VERSION\s*=\s*"([^"]+)"/.exec(readFileSync(join(root, "lib/version.ts"), "utf8"))?.[1] ??
        "?",
    },
  };
  const git = (...a) => spawnSync("git", a, { cwd: root, encoding: "utf8" }).stdout?.trim() ?? "";
  env.git = {
    commit: git("rev-parse", "--short", "HEAD"),
    dirty: git("status", "--porcelain", "--", "lib", "mod.ts"),
  };
  if (env.nofile && env.nofile < 2 * cfg.holdTunnels + 200) {
    const fit = Math.floor((env.nofile - 200) / 2);
    log(`hard open-files limit ${env.nofile}: holding ${fit} tunnels instead of ${cfg.holdTunnels}`);
    cfg.holdTunnels = fit;
  }

  const server = launch("C server", clientBin, ["server", "--ports", "4"]);
  quietBudgetMs = cfg.quietBudgetMs;
  const m = await waitFor(server, (p) => /^ports ([\d ]+)$/m.exec(p.out), 10_000, "ports line");
  serverPorts = m[1].trim().split(/\s+/).map(Number);

  const list = subjects();
  const results = {
    env,
    config: { ...cfg, quick, only, skip, parts },
    subjects: list,
    tput: {},
    tunnels: {},
    memory: {},
  };
  try {
    // ---- throughput and tunnels/s: every subject running, measured in turn, run after run
    log(`starting ${list.filter((s) => s.start).length} proxies and forwarders`);
    const running = await startAll(list);
    const raw = Object.fromEntries(
      running.map((r) => [r.subject.id, { up: [], down: [], tunnels: [], errors: [] }]),
    );
    // The chain part measures the chained subjects and, beside them, the direct edgesocks tunnels.
    const tputRunning = running.filter((r) =>
      !r.subject.tunnelsOnly &&
      (r.subject.chainOnly ? parts.includes("chain") : parts.includes("throughput") ||
        (parts.includes("chain") &&
          (r.subject.id.endsWith("-edgesocks") || r.subject.id.endsWith("-forwarder") ||
            r.subject.id === "microsocks")))
    );
    for (const r of tputRunning) {
      try {
        await measureTput(r, "up", cfg.tputWarmBytes);
        await measureTput(r, "down", cfg.tputWarmBytes);
      } catch (error) {
        raw[r.subject.id].errors.push(`warm-up: ${error.message}`);
        log(`${r.subject.label}: warm-up failed: ${error.message}`);
      }
    }
    for (let run = 1; tputRunning.length > 0 && run <= cfg.tputRuns; run++) {
      for (const r of tputRunning) {
        for (const dir of ["up", "down"]) {
          let t = null;
          try {
            t = await measureTput(r, dir, cfg.tputBytes);
            log(`throughput ${run}/${cfg.tputRuns} ${r.subject.label} ${dir}: ${fmt(t.mibps)} MiB/s`);
          } catch (error) {
            raw[r.subject.id].errors.push(`${dir}: ${error.message}`);
            log(`throughput ${run}/${cfg.tputRuns} ${r.subject.label} ${dir}: FAILED ${error.message}`);
          }
          raw[r.subject.id][dir].push(t);
        }
      }
    }

    const tunnelRunning = running.filter((r) => !r.subject.chainOnly);
    for (const r of parts.includes("tunnels") ? tunnelRunning : []) {
      try {
        await measureTunnels(r, cfg.tunnelWarmCount, 1);
      } catch (error) {
        log(`${r.subject.label}: tunnels warm-up failed: ${error.message}`);
      }
    }
    for (let run = 1; parts.includes("tunnels") && run <= cfg.tunnelRuns; run++) {
      for (const r of tunnelRunning) {
        let t = null;
        try {
          t = await measureTunnels(r, cfg.tunnelCount, cfg.tunnelSeconds);
          log(
            `tunnels ${run}/${cfg.tunnelRuns} ${r.subject.label}: ${fmt(t.perSecond)}/s (${t.errors} failed)`,
          );
        } catch (error) {
          raw[r.subject.id].errors.push(`tunnels: ${error.message}`);
          log(`tunnels ${run}/${cfg.tunnelRuns} ${r.subject.label}: FAILED ${error.message}`);
        }
        raw[r.subject.id].tunnels.push(t);
        // Let the TIME_WAIT sockets of loopback ports age towards the 1 s after which tcp_tw_reuse reuses them.
        await sleep(200);
      }
    }
    for (const r of running) for (const p of [r.proc, ...extras(r)]) await stop(p);
    summarize(results, raw);
    const all = Object.values(raw).flatMap((x) => [...x.up, ...x.down, ...x.tunnels]).map((t) =>
      t?.background
    );
    results.background = { ...spread(all), waitedSeconds: (cfg.quietBudgetMs - quietBudgetMs) / 1000 };

    // ---- memory: a fresh process per subject
    for (const s of parts.includes("memory") ? list : []) {
      if (!s.start || s.noMemory) continue;
      try {
        const mem = await measureMemory(s);
        results.memory[s.id] = mem;
        log(`memory ${s.label}: ${fmt(mem.kibPerTunnel, 1)} KiB per tunnel (${mem.tunnels} tunnels)`);
      } catch (error) {
        results.memory[s.id] = { error: error.message };
        log(`memory ${s.label}: FAILED ${error.message}`);
      }
    }
    // ---- UDP ASSOCIATE datagrams per second (bench/udp.mjs)
    if (parts.includes("udp")) {
      results.udp = await measureUdp({ only, quick, runs: quick ? 1 : 3, bin, launch, stop, waitFor, log });
    }
  } finally {
    for (const proc of [...live.values()]) await stop(proc);
    rmSync(tmpDir, { recursive: true, force: true });
  }

  results.targets = evaluateTargets(results);
  results.durationSeconds = (Date.now() - t0) / 1000;
  results.subjects = list.map(({ start: _start, ...s }) => s);
  const md = report(results);
  writeFileSync(join(resultsDir, "latest.json"), JSON.stringify(results, null, 2) + "\n");
  writeFileSync(join(resultsDir, "latest.md"), md + "\n");
  console.log(md);
  log(`done in ${fmt(results.durationSeconds)} s; wrote bench/results/latest.json and latest.md`);
  if (check) {
    const failed = [
      ...Object.values(results.tput).flatMap((t) => t.errors),
      ...Object.values(results.tunnels).flatMap((
        t,
      ) => [...t.errors, ...(t.failedTunnels ? ["tunnels failed"] : [])]),
      ...Object.values(results.memory).flatMap((m) => (m.error ? [m.error] : [])),
      ...Object.values(results.udp ?? {}).flatMap((u) => u.errors),
    ];
    if (failed.length > 0) {
      log(`--check: ${failed.length} measurements failed: ${failed.slice(0, 3).join("; ")}`);
      process.exitCode = 1;
    }
  }
}

main().catch(async (error) => {
  console.error(`bench failed: ${error.stack ?? error}`);
  for (const proc of [...live.values()]) await stop(proc);
  process.exit(1);
});
