// A burst of simultaneous SOCKS5 CONNECTs to a fast loopback sender, for one subject at a time.
//
//   node bench/burst.mjs [--subject deno|bun|node|deno-forward|bun-forward|node-forward]
//                        [--count N] [--bytes B] [--runs R] [--seconds S] [--proxy-args "..."]
//
// Three processes besides this one: the sender (a node:net server that, on accept, writes B bytes and a FIN),
// the subject (edgesocks' CLI on a runtime, or a bare forwarder), and the client (N connections opened in one
// go; for a proxy each sends its SOCKS5 greeting and CONNECT at once, then reads the reply and B bytes).
// Prints one JSON line per run: failures by kind, the slowest replies, the kernel's listen overflow counters
// and the subject's outcome counts (from --log json). Every run is bounded by --seconds; every process started
// here is killed by its PID.
import { spawn, spawnSync } from "node:child_process";
import { connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const HERE = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(HERE, "node_modules", ".bin");

function flag(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : process.argv[i + 1];
}

const mode = process.argv[2];

if (mode === "sender") {
  const bytes = Number(flag("bytes", 262144));
  const stream = process.argv.includes("--stream");
  const blob = Buffer.alloc(stream ? 65536 : bytes, 0x61);
  let accepted = 0;
  const server = createServer((s) => {
    accepted++;
    s.on("error", () => {});
    if (!stream) return void s.end(blob);
    // Keeps sending until the peer goes away.
    const more = () => {
      while (!s.destroyed && s.write(blob));
    };
    s.on("drain", more);
    more();
  });
  // A deep accept queue (up to net.core.somaxconn): the sender must not be what drops connections.
  server.listen(
    { port: 0, host: "127.0.0.1", backlog: 65535 },
    () => console.log(`sender ${server.address().port}`),
  );
  process.stdin.on("data", () => console.log(`accepted ${accepted}`));
  process.stdin.on("end", () => process.exit(0));
} else if (mode === "client") {
  const count = Number(flag("count", 500));
  const bytes = Number(flag("bytes", 262144));
  const port = Number(flag("port"));
  const dest = Number(flag("dest", 0));
  const seconds = Number(flag("seconds", 30));
  const stream = process.argv.includes("--stream");
  const t0 = performance.now();
  const results = [];
  let done = 0;
  const sockets = [];
  const finish = () => {
    const kinds = {};
    for (const r of results) kinds[r.kind] = (kinds[r.kind] ?? 0) + 1;
    const replyMs = results.filter((r) => r.replyMs !== undefined).map((r) => r.replyMs).sort((a, b) =>
      a - b
    );
    const doneMs = results.filter((r) => r.kind === "ok").map((r) => r.doneMs).sort((a, b) => a - b);
    const pick = (a, q) => a.length ? Math.round(a[Math.min(a.length - 1, Math.floor(q * a.length))]) : null;
    console.log(JSON.stringify({
      count,
      kinds,
      replyMs: { p50: pick(replyMs, 0.5), p99: pick(replyMs, 0.99), max: pick(replyMs, 1) },
      doneMs: { p50: pick(doneMs, 0.5), max: pick(doneMs, 1) },
      slowReplies: replyMs.filter((ms) => ms > 1000).length,
      connectMs: {
        max: pick(
          results.filter((r) => r.connectMs !== undefined).map((r) => r.connectMs).sort((a, b) => a - b),
          1,
        ),
      },
      failed: results.filter((r) => r.kind !== "ok").slice(0, 5).map((r) => ({
        kind: r.kind,
        connectMs: r.connectMs && Math.round(r.connectMs),
        replyMs: r.replyMs && Math.round(r.replyMs),
        doneMs: r.doneMs && Math.round(r.doneMs),
      })),
      totalMs: Math.round(performance.now() - t0),
    }));
    for (const s of sockets) s.destroy();
    process.exit(0);
  };
  const deadline = setTimeout(() => {
    for (let i = results.length; i < count; i++) results.push({ kind: "deadline" });
    finish();
  }, seconds * 1000);
  const end = (r) => {
    results.push(r);
    if (++done === count) {
      clearTimeout(deadline);
      finish();
    }
  };
  // --waves W --gap MS: W bursts of count / W connections, MS apart (a burst on top of busy tunnels).
  const waves = Number(flag("waves", 1));
  const gap = Number(flag("gap", 500));
  for (let i = 0; i < count; i++) {
    const wave = Math.floor(i * waves / count);
    if (wave === 0) open();
    else setTimeout(open, wave * gap);
  }
  // deno-lint-ignore no-inner-declarations
  function open() {
    const s = connect({ host: "127.0.0.1", port });
    sockets.push(s);
    const start = performance.now();
    let got = 0, connectMs, replyMs, reply = dest ? undefined : "none", ended = false, head = Buffer.alloc(0);
    s.on("connect", () => {
      connectMs = performance.now() - start;
      if (dest) s.write(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, dest >> 8, dest & 0xff));
    });
    s.on("data", (d) => {
      if (reply === undefined) {
        head = Buffer.concat([head, d]);
        if (head.length < 12) return;
        replyMs = performance.now() - start;
        reply = head[3].toString(16).padStart(2, "0");
        d = head.subarray(12);
      }
      got += d.length;
      // A streaming sender never ends: enough bytes are a success.
      if (stream && got >= bytes) {
        over("ok");
        s.destroy();
      }
    });
    const over = (kind) => {
      if (ended) return;
      ended = true;
      end({ kind, connectMs, replyMs, doneMs: performance.now() - start });
    };
    s.on("end", () => {
      if (reply === undefined) over(`closed before reply (${head.length} B)`);
      else if (reply !== "00" && reply !== "none") over(`reply ${reply}`);
      else {over(
          got === bytes || (stream && got > bytes) ? "ok" : `short ${got < bytes ? "<" : ">"} ${bytes}`,
        );}
      s.destroy();
    });
    s.on("error", (e) => over(reply === undefined ? `${e.code} before reply` : `${e.code} after reply`));
  }
} else {
  // The driver.
  const subject = flag("subject", "deno");
  // --root DIR: the edgesocks tree whose mod.ts and forwarders run (e.g. a checkout of an older commit).
  const ROOT = flag("root", HERE);
  const count = Number(flag("count", 500));
  const bytes = Number(flag("bytes", 262144));
  const runs = Number(flag("runs", 3));
  const seconds = Number(flag("seconds", 30));
  const stream = process.argv.includes("--stream") ? ["--stream"] : [];
  const extra = flag("proxy-args", "").split(" ").filter(Boolean);
  const children = new Set();
  const start = (cmd, args, onLine) => {
    // Its own process group (killed as one: a --wrap program's child goes with it).
    const c = spawn(cmd, args, {
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, DENO_NO_UPDATE_CHECK: "1" },
    });
    children.add(c);
    c.on("exit", () => children.delete(c));
    let buf = "";
    c.stdout.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    let err = "";
    c.stderr.on("data", (d) => (err += d));
    c.stderrText = () => err;
    return c;
  };
  const killAll = () => {
    for (const c of children) {
      try {
        process.kill(-c.pid, "SIGKILL");
      } catch { /* gone */ }
    }
  };
  process.on("exit", killAll);
  process.on("SIGINT", () => process.exit(130));
  const firstLine = (cmd, args, re, onLine = () => {}) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${cmd} ${args.join(" ")}: no startup line`)), 20_000);
      const c = start(cmd, args, (line) => {
        const m = re.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({ child: c, port: Number(m[1]) });
        } else onLine(line);
      });
      c.on("exit", (code) => reject(new Error(`${cmd} exited ${code}: ${c.stderrText()}`)));
    });
  const nstat = () => {
    const r = spawnSync("nstat", [
      "-az",
      "TcpExtListenOverflows",
      "TcpExtListenDrops",
      "TcpExtTCPReqQFullDrop",
    ], {
      encoding: "utf8",
    });
    const out = {};
    for (const m of r.stdout.matchAll(/^(\w+)\s+(\d+)/gm)) out[m[1].replace("TcpExt", "")] = Number(m[2]);
    return out;
  };
  // "Recv-Q/Send-Q" of the listener on `port`: connections waiting in its accept queue / the queue's size.
  const listenQ = (port) => {
    const r = spawnSync("ss", ["-ltnH"], { encoding: "utf8" });
    for (const line of r.stdout.split("\n")) {
      const f = line.trim().split(/\s+/);
      if (f[3]?.endsWith(`:${port}`)) return `${f[1]}/${f[2]}`;
    }
    return "?";
  };

  const sender = await firstLine(process.execPath, [
    fileURLToPath(import.meta.url),
    "sender",
    "--bytes",
    String(bytes),
    ...stream,
  ], /^sender (\d+)/);
  const outcomes = {};
  const proxyArgs = ["--listen", "127.0.0.1:0", "--allow-private", "--log", "json", ...extra];
  const onLog = (line) => {
    try {
      const o = JSON.parse(line);
      const key = o.outcome ?? "?";
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    } catch { /* not a log line */ }
  };
  const commands = {
    deno: [join(BIN, "deno"), ["run", "-A", join(ROOT, "mod.ts"), ...proxyArgs]],
    bun: [join(BIN, "bun"), [join(ROOT, "mod.ts"), ...proxyArgs]],
    node: [join(BIN, "node"), [join(ROOT, "mod.ts"), ...proxyArgs]],
    "deno-forward": [join(BIN, "deno"), [
      "run",
      "-A",
      join(ROOT, "bench/forwarders/deno_forward.ts"),
      "127.0.0.1:0",
      `127.0.0.1:${sender.port}`,
    ]],
    "bun-forward": [join(BIN, "bun"), [
      join(ROOT, "bench/forwarders/bun_forward.ts"),
      "127.0.0.1:0",
      `127.0.0.1:${sender.port}`,
    ]],
    "node-forward": [join(BIN, "node"), [
      join(ROOT, "bench/forwarders/node_forward.mjs"),
      "127.0.0.1:0",
      `127.0.0.1:${sender.port}`,
    ]],
  };
  // --wrap "strace -f -o FILE" runs the subject under another program (for strace, perf).
  const wrap = flag("wrap", "").split(" ").filter(Boolean);
  const [cmd, args] = wrap.length
    ? [wrap[0], [...wrap.slice(1), ...commands[subject].flat()]]
    : commands[subject];
  const socks = !subject.endsWith("-forward");
  for (let run = 0; run < runs; run++) {
    for (const k of Object.keys(outcomes)) delete outcomes[k];
    const proxy = await firstLine(cmd, args, / on \[?[0-9a-f.:]+\]?:(\d+)/, onLog);
    await new Promise((r) => setTimeout(r, 500));
    const before = nstat();
    let maxQ = "", maxSenderQ = "";
    const higher = (a, b) => Number(a.split("/")[0]) > Number(b.split("/")[0] || -1);
    const q = setInterval(() => {
      const now = listenQ(proxy.port), sent = listenQ(sender.port);
      if (higher(now, maxQ)) maxQ = now;
      if (higher(sent, maxSenderQ)) maxSenderQ = sent;
    }, 50);
    const client = await new Promise((resolve) => {
      let line = "";
      const c = start(process.execPath, [
        fileURLToPath(import.meta.url),
        "client",
        "--count",
        String(count),
        "--bytes",
        String(bytes),
        "--port",
        String(proxy.port),
        "--dest",
        socks ? String(sender.port) : "0",
        "--seconds",
        String(seconds),
        ...stream,
        "--waves",
        flag("waves", "1"),
        "--gap",
        flag("gap", "500"),
      ], (l) => (line = l));
      c.on("exit", () => resolve(line ? JSON.parse(line) : { error: c.stderrText() }));
    });
    clearInterval(q);
    await new Promise((r) => setTimeout(r, 300));
    const after = nstat();
    const delta = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
    try {
      process.kill(-proxy.child.pid, "SIGKILL");
    } catch { /* gone */ }
    console.log(
      JSON.stringify({
        subject,
        run,
        ...client,
        kernel: delta,
        maxRecvQ: maxQ,
        maxSenderRecvQ: maxSenderQ,
        outcomes: { ...outcomes },
      }),
    );
  }
  killAll();
  process.exit(0);
}
