/**
 * edgesocks at the edge, on workerd (npm `workerd`): the worker is built with
 * `tools/build_workerd.mjs` (what `npm run build:workerd` runs) and served by
 * a real workerd on loopback, with a generated config (three workers on three
 * raw TCP sockets of one workerd process) and with examples/workerd/config.capnp
 * as it is; real clients (curl, tor-resolve) and raw bytes through it.
 *
 * The workerd part runs under Node only: workerd is the runtime under test
 * there, and the runtime running the test file changes nothing but the
 * clients' harness, so running it three times would only cost CI time. The
 * parts that run in-process (the bindings, the adapter over a stand-in
 * `connect`) run on Deno, Bun and Node.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import process from "node:process";
import {
  closedPort,
  curl,
  hex,
  HTTP_BODY,
  type ProxyProcess,
  RawClient,
  ROOT,
  run,
  RUNTIME,
  sleep,
  startBridge,
  startHttp,
  startTcp,
  toHex,
  until,
  within,
} from "./_fixtures.ts";
import { type DohFixture, startDoh } from "./_doh_fixture.ts";
import { workerOptions } from "../lib/cli/workerd.ts";
import { workerdAdapter, type WorkerdConnect, type WorkerdSocket } from "../lib/adapters/workerd.ts";
import type { ByteConnection } from "../lib/runtime.ts";
import { ReplyCode } from "../lib/core/wire.ts";

const WORKERD_FAILURE = "proxy request failed, cannot connect to the specified address";

describe(`workerd worker, in-process on ${RUNTIME}`, () => {
  it("reads its bindings: users, rules, flags, timeouts in seconds, caps, DoH, log", () => {
    const { serve, doh, log } = workerOptions({
      EDGESOCKS_USERS: "alice:secret one\n# comment\nbob:x",
      EDGESOCKS_RULES: "deny *:25\n\nallow connect@10.0.0.0/8:443",
      EDGESOCKS_ALLOW_PRIVATE: "true",
      EDGESOCKS_DENY_CONNECT_DIR: true,
      EDGESOCKS_IDLE_TIMEOUT: "1.5",
      EDGESOCKS_CONNECT_TIMEOUT: 4,
      EDGESOCKS_MAX_CONNECTIONS: "20",
      EDGESOCKS_DOH: "https://dns.example/dns-query",
      EDGESOCKS_DOH_METHOD: "post",
      EDGESOCKS_LOG: "json",
      EDGESOCKS_HANDSHAKE_TIMEOUT: null, // an unset fromEnvironment binding
    });
    assert.deepEqual([...serve.users!], [["alice", "secret one"], ["bob", "x"]]);
    assert.deepEqual(serve.policy?.rules?.map((r) => `${r.action} ${r.text}`), [
      "deny *:25",
      "allow connect@10.0.0.0/8:443",
    ]);
    assert.equal(serve.policy?.allowPrivate, true);
    assert.equal(serve.policy?.allowConnectDir, false);
    assert.deepEqual(serve.timeouts, { idle: 1500, connect: 4000 });
    assert.equal(serve.maxConnections, 20);
    assert.deepEqual(doh, { url: "https://dns.example/dns-query", method: "POST" });
    assert.equal(log, "json");
    const defaults = workerOptions({});
    assert.equal(defaults.serve.policy?.allowPrivate, false);
    assert.equal(defaults.doh, undefined);
    assert.equal(defaults.log, "quiet");
  });

  it("a wrong binding is a TypeError that names it", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ EDGESOCKS_USERS: "alice" }, /^binding EDGESOCKS_USERS: users file line 1/],
      [{ EDGESOCKS_RULES: "permit *" }, /^binding EDGESOCKS_RULES line 1: expected "allow RULE"/],
      [{ EDGESOCKS_RULES: "allow 10.0.0.0/33" }, /^binding EDGESOCKS_RULES line 1: invalid rule/],
      [{ EDGESOCKS_ALLOW_PRIVATE: "maybe" }, /^binding EDGESOCKS_ALLOW_PRIVATE: expected true or false/],
      [{ EDGESOCKS_IDLE_TIMEOUT: "5m" }, /^binding EDGESOCKS_IDLE_TIMEOUT: expected a number of seconds/],
      [{ EDGESOCKS_MAX_CONNECTIONS: "-1" }, /^binding EDGESOCKS_MAX_CONNECTIONS: expected a whole number/],
      [{ EDGESOCKS_DOH: "dns.example" }, /^binding EDGESOCKS_DOH: not a URL/],
      [{ EDGESOCKS_DOH: "ftp://dns.example/" }, /^binding EDGESOCKS_DOH: expected an https:\/\/ URL/],
      [{ EDGESOCKS_DOH: "https://d/", EDGESOCKS_DOH_SERVICE: "x" }, /^binding EDGESOCKS_DOH_SERVICE/],
      [{ EDGESOCKS_LOG: "loud" }, /^binding EDGESOCKS_LOG: expected quiet, text or json/],
      [{ EDGESOCKS_USERS: { alice: "x" } }, /^binding EDGESOCKS_USERS: expected text, got object/],
    ];
    for (const [env, message] of cases) {
      assert.throws(() => workerOptions(env), { name: "TypeError", message }, JSON.stringify(env));
    }
  });

  it("the adapter's dial maps workerd's one connect error: 0x04 by name, 0x05 by address", async () => {
    const asked: unknown[] = [];
    const failing: WorkerdConnect = (address, options) => {
      asked.push([address, options]);
      const opened = Promise.reject(new Error(WORKERD_FAILURE));
      opened.catch(() => {});
      return {
        readable: new ReadableStream(),
        writable: new WritableStream(),
        opened,
        closed: Promise.resolve(),
        close: () => Promise.resolve(),
      } as WorkerdSocket;
    };
    const adapter = workerdAdapter({ connect: failing });
    await assert.rejects(adapter.dial({ host: "localhost", port: 80 }), { reply: ReplyCode.HostUnreachable });
    await assert.rejects(adapter.dial({ host: "127.0.0.1", port: 80 }), {
      reply: ReplyCode.ConnectionRefused,
    });
    await assert.rejects(adapter.dial({ host: "::1", port: 80 }), { reply: ReplyCode.ConnectionRefused });
    // Half-open, so that a FIN from either side leaves the other direction open.
    assert.deepEqual(asked[0], [{ hostname: "localhost", port: 80 }, { allowHalfOpen: true }]);
    // RESOLVE without a resolver: "command not supported".
    await assert.rejects(adapter.resolver().lookup("example.test"), { reply: ReplyCode.CommandNotSupported });
  });
  it("the relay without an idle timeout pipes the sockets' streams; a shutdown cuts it and closes both", async () => {
    const client = standInSocket(), target = standInSocket();
    const adapter = workerdAdapter({
      connect: () => target.socket,
      identityStream: () => new TransformStream(),
    });
    let accepted!: (c: ByteConnection) => void;
    const conn = new Promise<ByteConnection>((r) => (accepted = r));
    await adapter.listen({ host: "127.0.0.1", port: 0 }, (c) => accepted(c));
    const served = adapter.accept(client.socket);
    const upstream = await adapter.dial({ host: "127.0.0.1", port: 80 });
    const shutdown = new AbortController();
    const relaying = adapter.relay!(await conn, upstream, { idleTimeout: 0, signal: shutdown.signal })!;
    client.send("hello");
    target.send("world");
    await until(
      5_000,
      () => `${target.received()} / ${client.received()}`,
      () => target.received() === "hello" && client.received() === "world",
    );
    // The pipes hold the streams: the connections cannot read or write any more (they were handed over).
    assert.equal(await (await conn).read(), null);
    shutdown.abort();
    const result = await within(5_000, "the relay's end", relaying);
    // The pipes count nothing; both sockets are closed, and accept() (the connect() handler) returns.
    assert.deepEqual(result, { up: 0, down: 0, end: "aborted" });
    await within(5_000, "accept() resolves", served);
    assert.deepEqual([client.closed(), target.closed()], [true, true]);
  });

  it("the relay with an idle timeout is the JavaScript one: it counts bytes and ends an idle tunnel", async () => {
    const client = standInSocket(), target = standInSocket();
    const adapter = workerdAdapter({
      connect: () => target.socket,
      identityStream: () => new TransformStream(),
    });
    let accepted!: (c: ByteConnection) => void;
    const conn = new Promise<ByteConnection>((r) => (accepted = r));
    await adapter.listen({ host: "127.0.0.1", port: 0 }, (c) => accepted(c));
    const served = adapter.accept(client.socket);
    const upstream = await adapter.dial({ host: "127.0.0.1", port: 80 });
    const relaying = adapter.relay!(await conn, upstream, { idleTimeout: 300 })!;
    client.send("hello");
    target.send("world!");
    const result = await within(5_000, "the idle timeout", relaying);
    assert.deepEqual(result, { up: 5, down: 6, end: "idle" });
    assert.deepEqual([target.received(), client.received()], ["hello", "world!"]);
    await within(5_000, "accept() resolves", served);
    assert.deepEqual([client.closed(), target.closed()], [true, true]);
  });
});

/**
 * A stand-in for a workerd socket: a byte stream the test feeds (`send`), a writable it collects
 * (`received`), and `close()` as workerd's (cancel the readable, abort the writable, `closed` resolves).
 */
function standInSocket() {
  let controller!: ReadableByteStreamController;
  const readable = new ReadableStream({ type: "bytes", start: (c) => void (controller = c) });
  let got = "";
  const writable = new WritableStream<Uint8Array>({
    write: (c) => void (got += new TextDecoder().decode(c)),
  });
  let closed = false;
  let resolveClosed!: () => void;
  const socket: WorkerdSocket = {
    readable: readable as ReadableStream<Uint8Array>,
    writable,
    opened: Promise.resolve({ remoteAddress: "127.0.0.1:5000" }),
    closed: new Promise<void>((r) => (resolveClosed = r)),
    close() {
      closed = true;
      readable.cancel().catch(() => {});
      writable.abort().catch(() => {});
      resolveClosed();
      return Promise.resolve();
    },
  };
  return {
    socket,
    send: (text: string) => controller.enqueue(new TextEncoder().encode(text)),
    received: () => got,
    closed: () => closed,
  };
}

/** A workerd process serving a config; `stop()` ends it (SIGKILL if SIGTERM does not do it within 2 s). */
interface Workerd {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
  rssKiB(): number;
}

/** Waits until something accepts TCP connections on 127.0.0.1:`port`. */
async function accepting(port: number, child: ChildProcess, output: () => string): Promise<void> {
  await within(
    20_000,
    `workerd listening on ${port}`,
    (async () => {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`workerd exited with ${child.exitCode}: ${output()}`);
        const ok = await new Promise<boolean>((resolve) => {
          const s: Socket = tcpConnect({ host: "127.0.0.1", port }, () => {
            s.destroy();
            resolve(true);
          });
          s.on("error", () => resolve(false));
        });
        if (ok) return;
        await sleep(100);
      }
    })(),
  );
}

async function startWorkerd(config: string, ports: number[], extraArgs: string[] = []): Promise<Workerd> {
  const bin = join(ROOT, "node_modules", ".bin", "workerd");
  const child = spawn(bin, ["serve", config, ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, EDGESOCKS_USERS: "" },
  });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  const output = () => out;
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      // Measured: workerd may wait for open connections on SIGTERM.
      const timer = setTimeout(() => child.kill("SIGKILL"), 2_000);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill("SIGTERM");
    });
  try {
    for (const port of ports) await accepting(port, child, output);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    child,
    output,
    stop,
    rssKiB: () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))![1]),
  };
}

/** One worker of the generated config: its socket's port, its network's allow list, its text bindings. */
interface WorkerSpec {
  name: string;
  port: number;
  allow: string[];
  bindings: Record<string, string>;
  doh?: number;
  /** A second socket, HTTP, for the WebSocket ingress. */
  wsPort?: number;
  /** Its WebSocket tunnels in Durable Objects (EDGESOCKS_WS_TUNNELS, in-memory storage). */
  tunnels?: boolean;
}

function generatedConfig(bundle: string, workers: WorkerSpec[]): string {
  const q = JSON.stringify;
  const services = workers.flatMap((w) => [
    `(name = ${q(w.name)}, worker = .${w.name})`,
    `(name = ${q(`${w.name}-net`)}, network = (allow = [${w.allow.map((a) => q(a)).join(", ")}]))`,
    ...(w.doh
      ? [`(name = ${q(`${w.name}-doh`)}, external = (address = "127.0.0.1:${w.doh}", http = ()))`]
      : []),
  ]);
  const sockets = workers.flatMap((w) => [
    `(name = ${q(w.name)}, address = "127.0.0.1:${w.port}", tcp = (), service = ${q(w.name)})`,
    ...(w.wsPort
      ? [
        `(name = ${q(`${w.name}-ws`)}, address = "127.0.0.1:${w.wsPort}", http = (), service = ${q(w.name)})`,
      ]
      : []),
  ]);
  const defs = workers.map((w) => {
    const bindings = Object.entries(w.bindings).map(([k, v]) => `(name = ${q(k)}, text = ${q(v)})`);
    if (w.doh) bindings.push(`(name = "EDGESOCKS_DOH_SERVICE", service = ${q(`${w.name}-doh`)})`);
    if (w.tunnels) {
      bindings.push(`(name = "EDGESOCKS_WS_TUNNELS", durableObjectNamespace = "EdgesocksTunnel")`);
    }
    const objects = w.tunnels
      ? `durableObjectNamespaces = [(className = "EdgesocksTunnel", uniqueKey = "${w.name}-tunnels")],
  durableObjectStorage = (inMemory = void),
  `
      : "";
    return `const ${w.name} :Workerd.Worker = (
  modules = [(name = "edgesocks.js", esModule = embed ${q(basename(bundle))})],
  compatibilityDate = "2026-11-01",
  ${objects}
  globalOutbound = ${q(`${w.name}-net`)},
  bindings = [${bindings.join(", ")}],
);`;
  });
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [${services.join(", ")}],
  sockets = [${sockets.join(", ")}],
);
${defs.join("\n")}
`;
}

/** The SOCKS5 reply to a no-auth CONNECT to `host`:`port` (a name, or an IPv4 literal), as hex. */
async function socks5Reply(proxyPort: number, host: string, port: number): Promise<string> {
  const ip = /^\d+\.\d+\.\d+\.\d+$/.test(host) ? host.split(".").map(Number) : undefined;
  const address = ip ? [1, ...ip] : [3, host.length, ...new TextEncoder().encode(host)];
  const bytes = Uint8Array.of(5, 1, 0, 5, 1, 0, ...address, port >> 8, port & 0xff);
  const c = await RawClient.open(proxyPort);
  try {
    c.send(bytes);
    return toHex(await c.readExactly(12));
  } finally {
    c.destroy();
  }
}

/** A pseudo-random byte stream (xorshift), the same for a seed: `take(n)` gives the next n bytes. */
function pattern(seed: number) {
  let x = seed | 1;
  return (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x;
      out[i + 1] = x >>> 8;
      out[i + 2] = x >>> 16;
      out[i + 3] = x >>> 24;
    }
    return out;
  };
}

/** Writes `total` bytes of `pattern(seed)` to `socket` with backpressure, then ends it; resolves with their hash. */
async function sendPattern(socket: Socket, total: number, seed: number): Promise<string> {
  const next = pattern(seed);
  const hash = createHash("sha256");
  for (let sent = 0; sent < total;) {
    const chunk = next(Math.min(256 * 1024, total - sent));
    hash.update(chunk);
    sent += chunk.length;
    if (!socket.write(chunk)) await new Promise((r) => socket.once("drain", r));
  }
  socket.end();
  return hash.digest("hex");
}

/** Reads `socket` to its end; resolves with the count and hash of what came. */
function receiveAll(socket: Socket): Promise<{ bytes: number; hash: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  return new Promise((resolve, reject) => {
    socket.on("data", (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    socket.on("end", () => resolve({ bytes, hash: hash.digest("hex") }));
    socket.on("error", reject);
    socket.resume();
  });
}

/** A SOCKS5 tunnel through `proxyPort` to 127.0.0.1:`port`, as a plain (paused) socket after the reply. */
async function tunnel(proxyPort: number, port: number): Promise<Socket> {
  const s = tcpConnect({ host: "127.0.0.1", port: proxyPort, allowHalfOpen: true });
  await within(
    5_000,
    "connect to workerd",
    new Promise((resolve, reject) => {
      s.once("connect", resolve);
      s.once("error", reject);
    }),
  );
  s.write(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff));
  const head = await within(
    5_000,
    "SOCKS5 reply",
    new Promise<Buffer>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const onData = (c: Buffer) => {
        got = Buffer.concat([got, c]);
        if (got.length < 12) return;
        s.off("data", onData);
        s.pause();
        resolve(got);
      };
      s.on("data", onData);
      s.once("error", reject);
    }),
  );
  assert.equal(toHex(head.subarray(0, 12)), "05 00 05 00 00 01 00 00 00 00 00 00");
  // The target may have sent its first bytes in the same segment as the reply.
  if (head.length > 12) s.unshift(head.subarray(12));
  return s;
}

/** Starts `edgesocks bridge` on `runtime` to the workerd edge; resolves once it listens. */
const bridgeTo = (
  runtime: "deno" | "bun" | "node",
  wsPort: number,
  tokenFile: string,
): Promise<ProxyProcess> =>
  startBridge(`ws://127.0.0.1:${wsPort}/socks`, ["--token-file", tokenFile, "--log", "text"], runtime);

/** Half-close both ways through `proxyPort`: each FIN crosses, the other direction keeps flowing. */
async function halfCloseBothWays(proxyPort: number): Promise<void> {
  for (const first of ["client", "target"] as const) {
    let resolveTarget!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (resolveTarget = r));
    const target = await startTcp((s) => resolveTarget(s));
    try {
      const c = await tunnel(proxyPort, target.port);
      const s = await within(5_000, "target accept", accepted);
      const toClient = receiveAll(c);
      const toTarget = receiveAll(s);
      if (first === "client") {
        c.write("ping");
        c.end();
        assert.equal((await within(5_000, "target sees the client's FIN", toTarget)).bytes, 4);
        s.write("late answer");
        s.end();
        assert.equal((await within(5_000, "client gets the answer", toClient)).bytes, 11);
      } else {
        s.write("hello");
        s.end();
        assert.equal((await within(5_000, "client sees the target's FIN", toClient)).bytes, 5);
        c.write("still sending");
        c.end();
        assert.equal((await within(5_000, "target gets the rest", toTarget)).bytes, 13);
      }
    } finally {
      await target.close();
    }
  }
}

/** `total` bytes each way through `proxyPort` (`up` bytes client → target), compared by hash. */
async function bytesEachWay(proxyPort: number, total: number, up = total): Promise<void> {
  await bytesEachWayTo(proxyPort, total, up);
}

/** As {@linkcode bytesEachWay}; resolves with the target's port (which names the tunnel in the log). */
async function bytesEachWayTo(proxyPort: number, total: number, up = total): Promise<number> {
  const results: { up?: string; down?: string } = {};
  const target = await startTcp((s) => {
    const got = receiveAll(s);
    const sent = sendPattern(s, total, 2);
    Promise.all([got, sent]).then(([g, h]) => {
      results.up = `${g.bytes} ${g.hash}`;
      results.down = h;
    });
  });
  try {
    const c = await tunnel(proxyPort, target.port);
    const [sentUp, down] = await within(
      120_000,
      `${up} bytes up, ${total} down`,
      Promise.all([
        sendPattern(c, up, 1),
        receiveAll(c),
      ]),
    );
    await until(10_000, () => JSON.stringify(results), () => results.up !== undefined);
    assert.equal(results.up, `${up} ${sentUp}`, `client → target (${results.up} vs ${up})`);
    assert.equal(`${down.bytes} ${down.hash}`, `${total} ${results.down}`, "target → client");
    return target.port;
  } finally {
    await target.close();
  }
}

/**
 * `total` bytes client → target through `proxyPort`, as fast as the client can send them, to a target in a
 * process of its own (socat handing the stream to sha256sum, which answers the digest after the client's FIN)
 * that starts reading only after a second.
 */
async function uploadHashed(proxyPort: number, total: number): Promise<void> {
  const port = await closedPort();
  // The target reads nothing for its first second: more than the kernel's buffers and the edge's bound of
  // unread bytes (8 MiB) arrive meanwhile unless the edge holds the upload back.
  const child = spawn("socat", [
    "-t",
    "30",
    `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`,
    "SYSTEM:sleep 1; sha256sum",
  ], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let errors = "";
  child.stderr!.on("data", (c) => (errors += c));
  try {
    await accepting(port, child, () => errors);
    const block = new Uint8Array(createHash("sha256").update(String(total)).digest().buffer).subarray(0, 32);
    const chunk = new Uint8Array(1024 * 1024).map((_, i) => block[i % 32] ^ (i >> 5));
    const expected = createHash("sha256");
    const c = await tunnel(proxyPort, port);
    const answer = receiveAll(c);
    let text = "";
    c.on("data", (d: Buffer) => (text += d));
    await within(
      120_000,
      `${total} bytes up`,
      (async () => {
        for (let sent = 0; sent < total; sent += chunk.length) {
          expected.update(chunk);
          if (!c.write(chunk)) {
            await new Promise<void>((resolve, reject) => {
              c.once("drain", resolve);
              c.once("close", () => reject(new Error(`the tunnel closed after ${sent} bytes up`)));
            });
          }
        }
        c.end();
      })(),
    );
    await within(30_000, "the target's digest", answer);
    assert.equal(text, `${expected.digest("hex")}  -\n`, "client → target, byte-exact");
  } finally {
    child.kill("SIGTERM");
  }
}

/** The JSON log line (EDGESOCKS_LOG=json) of the one connection to 127.0.0.1:`targetPort`, once it is written. */
async function logLine(wd: Workerd, targetPort: number): Promise<Record<string, unknown>> {
  const find = () =>
    wd.output().split("\n").find((l) =>
      l.startsWith("{") && l.includes(`"target":"127.0.0.1:${targetPort}"`)
    );
  await until(5_000, () => wd.output().slice(-2000), () => find() !== undefined);
  return JSON.parse(find()!);
}

/** A slow reader through `proxyPort`: workerd reads no faster than the client, its memory stays bounded. */
async function slowReader(wd: Workerd, proxyPort: number, diagnostic: (s: string) => void): Promise<void> {
  const offered = 192 * 1024 * 1024;
  let written = 0;
  let done = false;
  const target = await startTcp(async (s) => {
    const next = pattern(3);
    while (written < offered && !s.destroyed) {
      const chunk = next(256 * 1024);
      if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
      written += chunk.length; // counted once the socket took it (its buffer drained below the mark)
    }
    s.end();
    done = true;
  });
  try {
    const c = await tunnel(proxyPort, target.port);
    c.pause();
    const before = wd.rssKiB();
    await sleep(3_000);
    const stalled = written;
    const grown = wd.rssKiB() - before;
    diagnostic(`stalled reader: target got ${stalled} bytes out, workerd RSS ${before} KiB + ${grown} KiB`);
    // Without backpressure workerd would have taken all 192 MiB by now and held them.
    assert.ok(
      stalled < 48 * 1024 * 1024,
      `the target got ${stalled} bytes out to a reader that reads nothing`,
    );
    assert.ok(grown < 48 * 1024, `workerd's RSS grew by ${grown} KiB while the reader stalled`);
    const all = receiveAll(c);
    const got = await within(120_000, "the rest", all);
    assert.equal(got.bytes, offered);
    assert.ok(done);
  } finally {
    await target.close();
  }
}

/**
 * A reset from either side ends the tunnel through `proxyPort` while the other side is still sending: the
 * other side's connection ends (workerd cannot send a reset: a FIN), and the log says tunnel_error.
 */
async function resetEndsTunnel(wd: Workerd, proxyPort: number): Promise<void> {
  for (const who of ["target", "client"] as const) {
    let resolveTarget!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (resolveTarget = r));
    const target = await startTcp((s) => resolveTarget(s));
    try {
      const c = await tunnel(proxyPort, target.port);
      const s = await within(5_000, "target accept", accepted);
      const [reset, other] = who === "target" ? [s, c] : [c, s];
      const ended = new Promise<string>((resolve) => {
        other.on("end", () => resolve("end"));
        other.on("close", () => resolve("close"));
        other.on("error", (e) => resolve(`error ${(e as NodeJS.ErrnoException).code}`));
      });
      other.resume();
      // Bytes flowing the other way when the reset comes: the direction still open must end too.
      const flow = setInterval(() => other.writable && other.write(new Uint8Array(16 * 1024)), 10);
      try {
        reset.write("x");
        await sleep(200);
        reset.resetAndDestroy();
        await within(10_000, `the ${who === "target" ? "client" : "target"} sees the tunnel end`, ended);
      } finally {
        clearInterval(flow);
        other.destroy();
      }
      assert.equal((await logLine(wd, target.port)).outcome, "tunnel_error", `a reset from the ${who}`);
    } finally {
      await target.close();
    }
  }
}

if (RUNTIME === "node") {
  describe("workerd: SOCKS through workerd's raw TCP socket (under Node only; see the top of the file)", () => {
    let dir: string;
    let bundle: string;
    let wd: Workerd;
    let example: Workerd;
    let doh: DohFixture;
    let http: { port: number; close(): Promise<void> };
    const port = {
      open: 0,
      users: 0,
      publicnet: 0,
      example: 0,
      ws: 0,
      bad: 0,
      pipes: 0,
      idle: 0,
      handshake: 0,
      plain: 0,
      plainws: 0,
    };
    const bridges = new Map<string, ProxyProcess>();

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "edgesocks-workerd-"));
      bundle = join(dir, "edgesocks.js");
      const built = await run(process.execPath, [join(ROOT, "tools", "build_workerd.mjs"), bundle], {
        timeoutMs: 60_000,
      });
      assert.equal(built.code, 0, built.stderr);
      [doh, http] = await Promise.all([startDoh(), startHttp()]);
      for (const k of Object.keys(port) as (keyof typeof port)[]) port[k] = await closedPort();
      const config = join(dir, "config.capnp");
      const all = ["public", "private", "local"];
      writeFileSync(
        config,
        generatedConfig(bundle, [
          {
            name: "open",
            port: port.open,
            allow: all,
            doh: doh.port,
            wsPort: port.ws,
            tunnels: true,
            bindings: {
              EDGESOCKS_WS_TOKEN: "s3cret-token",
              EDGESOCKS_WS_PATH: "/socks",
              EDGESOCKS_ALLOW_PRIVATE: "true",
              EDGESOCKS_DOH: doh.url,
              EDGESOCKS_RULES: "deny 127.0.0.2\ndeny connect@*.refused.test",
              EDGESOCKS_LOG: "json",
            },
          },
          {
            name: "users",
            port: port.users,
            allow: all,
            bindings: { EDGESOCKS_ALLOW_PRIVATE: "true", EDGESOCKS_USERS: "alice:secret one" },
          },
          // The private-range check here turned off: what refuses loopback is the network service alone.
          {
            name: "publicnet",
            port: port.publicnet,
            allow: ["public"],
            bindings: { EDGESOCKS_ALLOW_PRIVATE: "true" },
          },
          { name: "bad", port: port.bad, allow: ["public"], bindings: { EDGESOCKS_RULES: "permit *" } },
          // No idle timeout: the relay is workerd's own pipes (no JavaScript per chunk, no byte counts).
          {
            name: "pipes",
            port: port.pipes,
            allow: all,
            bindings: { EDGESOCKS_ALLOW_PRIVATE: "true", EDGESOCKS_IDLE_TIMEOUT: "0", EDGESOCKS_LOG: "json" },
          },
          // A short idle timeout: the JavaScript relay, which sees each chunk.
          {
            name: "idle",
            port: port.idle,
            allow: all,
            bindings: { EDGESOCKS_ALLOW_PRIVATE: "true", EDGESOCKS_IDLE_TIMEOUT: "1", EDGESOCKS_LOG: "json" },
          },
          // A short handshake timeout, for sessions whose timers must not be one another's.
          {
            name: "handshake",
            port: port.handshake,
            allow: all,
            bindings: { EDGESOCKS_HANDSHAKE_TIMEOUT: "1", EDGESOCKS_LOG: "json" },
          },
          // WebSocket tunnels in the worker itself (no EDGESOCKS_WS_TUNNELS).
          {
            name: "plain",
            port: port.plain,
            allow: all,
            wsPort: port.plainws,
            bindings: {
              EDGESOCKS_WS_TOKEN: "s3cret-token",
              EDGESOCKS_ALLOW_PRIVATE: "true",
              EDGESOCKS_LOG: "json",
            },
          },
        ]),
      );
      // examples/workerd/config.capnp as it is, next to the bundle it embeds, on a free port.
      copyFileSync(join(ROOT, "examples", "workerd", "config.capnp"), join(dir, "example.capnp"));
      wd = await startWorkerd(config, [
        port.open,
        port.users,
        port.publicnet,
        port.ws,
        port.bad,
        port.pipes,
        port.idle,
        port.handshake,
        port.plainws,
      ]);
      example = await startWorkerd(join(dir, "example.capnp"), [port.example], [
        "--socket-addr",
        `socks=127.0.0.1:${port.example}`,
      ]);
    });

    after(async () => {
      await Promise.all([...bridges.values()].map((b) => b.stop()));
      await Promise.all([wd?.stop(), example?.stop(), doh?.close(), http?.close()]);
      rmSync(dir, { recursive: true, force: true });
    });

    it("curl --socks4, --socks4a, --socks5, --socks5-hostname fetch through it", async () => {
      const url = `http://localhost:${http.port}/`;
      for (const mode of ["--socks4", "--socks4a", "--socks5", "--socks5-hostname"]) {
        const r = await curl([mode, `127.0.0.1:${port.open}`, url]);
        assert.deepEqual([r.code, r.stdout], [0, HTTP_BODY], `${mode}: ${r.stderr}`);
      }
      // The worker's log (EDGESOCKS_LOG=json) went to workerd's output, one line each, names dialled by name.
      await until(
        5_000,
        () => wd.output(),
        () => (wd.output().match(/"outcome":"tunnel_done"/g) ?? []).length >= 4,
      );
      assert.match(
        wd.output(),
        /"version":5,(?:"protocol":"socks5",)?"command":"connect","target":"localhost:\d+","dialed":"localhost"/,
      );
    });

    it("with users: SOCKS5 login (curl), a wrong password and SOCKS4 refused", async () => {
      const url = `http://localhost:${http.port}/`;
      for (const mode of ["--socks5", "--socks5-hostname"]) {
        const r = await curl([mode, `127.0.0.1:${port.users}`, "--proxy-user", "alice:secret one", url]);
        assert.deepEqual([r.code, r.stdout], [0, HTTP_BODY], `${mode}: ${r.stderr}`);
      }
      const wrong = await curl([
        "--socks5-hostname",
        `127.0.0.1:${port.users}`,
        "--proxy-user",
        "alice:no",
        url,
      ]);
      assert.equal(wrong.code, 97, wrong.stderr);
      assert.match(wrong.stderr, /User was rejected by the SOCKS5 server/);
      const none = await curl(["--socks5-hostname", `127.0.0.1:${port.users}`, url]);
      assert.equal(none.code, 97, none.stderr);
      const v4 = await curl(["--socks4a", `127.0.0.1:${port.users}`, url]);
      assert.equal(v4.code, 97, v4.stderr);
      assert.match(v4.stderr, /request rejected or failed/);
    });

    it("RESOLVE and RESOLVE_PTR with tor-resolve over the DoH resolver; none configured: 0x07", async () => {
      const proxy = `127.0.0.1:${port.open}`;
      const cases: [string[], string][] = [
        [["-4", "web.test"], "127.0.0.1\n"],
        [["-5", "web.test"], "127.0.0.1\n"],
        [["-5", "web6.test"], "::1\n"],
        [["-5", "alias.test"], "127.0.0.1\n"], // a CNAME chain
        [["-4", "dual.test"], "127.0.0.3\n"],
        [["-5", "-x", "192.0.2.55"], "ptr.test\n"],
        [["-5", "-x", "2001:db8::55"], "ptr6.test\n"],
      ];
      for (const [args, answer] of cases) {
        const r = await run("tor-resolve", [...args, proxy]);
        assert.deepEqual([r.stdout, r.code], [answer, 0], `tor-resolve ${args.join(" ")}: ${r.stderr}`);
      }
      const nx = await run("tor-resolve", ["-5", "nx.test", proxy]);
      assert.equal(nx.code, 1);
      assert.match(nx.stderr, /status response '4': host is unreachable/);
      assert.ok(doh.requests.some((r) => r.name === "web.test"), "the DoH fixture was asked");
      // The example config has no resolver: RESOLVE (0xF0) answers 0x07.
      const reply = await RawClient.exchange(
        port.example,
        hex("05 01 00 05 f0 00 03 08 'web.test' 0000"),
      );
      assert.equal(toHex(reply), "05 00 05 07 00 01 00 00 00 00 00 00");
      const tr = await run("tor-resolve", ["-5", "web.test", `127.0.0.1:${port.example}`]);
      assert.equal(tr.code, 1);
      assert.match(tr.stderr, /status response '7'/);
    });

    it('destination safety: under allow = ["public"], 127.0.0.1 and a name for it are refused', async () => {
      // The example config: a literal is refused by edgesocks' own check (0x02, before any connect); a name
      // goes to workerd, which resolves it and refuses the address (0x04: its error does not say why).
      assert.equal(
        await socks5Reply(port.example, "127.0.0.1", http.port),
        "05 00 05 02 00 01 00 00 00 00 00 00",
      );
      assert.equal(
        await socks5Reply(port.example, "localhost", http.port),
        "05 00 05 04 00 01 00 00 00 00 00 00",
      );
      // With edgesocks' check off, the network service alone refuses the literal too (0x05).
      assert.equal(
        await socks5Reply(port.publicnet, "127.0.0.1", http.port),
        "05 00 05 05 00 01 00 00 00 00 00 00",
      );
      assert.equal(
        await socks5Reply(port.publicnet, "localhost", http.port),
        "05 00 05 04 00 01 00 00 00 00 00 00",
      );
      // The same requests through a network allowing "local" connect: the allow list is what refused.
      assert.equal(
        await socks5Reply(port.open, "localhost", http.port),
        "05 00 05 00 00 01 00 00 00 00 00 00",
      );
      assert.match(example.output(), /connecting to localhost:\d+ is not allowed/);
    });

    it("a wrong binding: the connection is closed without a byte, and the log says which binding", async () => {
      const reply = await RawClient.exchange(port.bad, Uint8Array.of(5, 1, 0));
      assert.equal(reply.length, 0);
      await until(
        5_000,
        () => wd.output(),
        () => /edgesocks: binding EDGESOCKS_RULES line 1: expected/.test(wd.output()),
      );
    });

    it("policy: rules by address and by name (0x02), a closed port (0x05), SOCKS4 refusal (91)", async () => {
      assert.equal(
        await socks5Reply(port.open, "127.0.0.2", http.port),
        "05 00 05 02 00 01 00 00 00 00 00 00",
      );
      assert.equal(await socks5Reply(port.open, "a.refused.test", 80), "05 00 05 02 00 01 00 00 00 00 00 00");
      assert.equal(
        await socks5Reply(port.open, "127.0.0.1", await closedPort()),
        "05 00 05 05 00 01 00 00 00 00 00 00",
      );
      const v4 = await RawClient.exchange(port.example, hex("04 01 0050 7f000001 00"));
      assert.equal(toHex(v4), "00 5b 00 00 00 00 00 00");
    });

    it("half-close both ways: each FIN crosses, the other direction keeps flowing", () =>
      halfCloseBothWays(port.open));

    it("100 MiB byte-exact each way", () => bytesEachWay(port.open, 100 * 1024 * 1024));

    it("a slow reader: workerd reads no faster than the client, its memory stays bounded", (t) =>
      slowReader(wd, port.open, (d) => t.diagnostic(d)));

    it("a reset from the target or the client ends the tunnel (tunnel_error)", () =>
      resetEndsTunnel(wd, port.open));

    it("the JavaScript relay counts the bytes each way (the log's up and down)", async () => {
      const target = await bytesEachWayTo(port.open, 3 * 1024 * 1024, 1024 * 1024);
      const line = await logLine(wd, target);
      assert.deepEqual([line.outcome, line.up, line.down], ["tunnel_done", 1024 * 1024, 3 * 1024 * 1024]);
    });

    it("idle timeout (the JavaScript relay): a tunnel idle for 1 s is closed (tunnel_idle)", async () => {
      const target = await startTcp(() => {});
      try {
        const c = await tunnel(port.idle, target.port);
        const started = Date.now();
        const ended = new Promise<void>((resolve) => c.once("end", resolve));
        c.resume();
        await within(10_000, "the idle tunnel closed", ended);
        const waited = Date.now() - started;
        assert.ok(waited >= 900, `closed after ${waited} ms`);
        assert.equal((await logLine(wd, target.port)).outcome, "tunnel_idle");
        c.destroy();
      } finally {
        await target.close();
      }
    });

    it("handshake timeout: a silent client is closed after 1 s though the connection that came before it has ended", async () => {
      // workerd cancels a connection's timers when it ends, and one connection's timer may not close
      // another's socket: with a timer shared by the sessions, B's timeout never came (B was open at 5 s).
      const a = tcpConnect(port.handshake, "127.0.0.1");
      a.on("error", () => {});
      await new Promise((resolve) => a.once("connect", resolve));
      await new Promise((resolve) => setTimeout(resolve, 100));
      const b = tcpConnect(port.handshake, "127.0.0.1");
      b.on("error", () => {});
      const started = Date.now();
      const closed = new Promise<void>((resolve) => b.once("close", () => resolve()));
      await new Promise((resolve) => b.once("connect", resolve));
      // A goes while both are waiting, well before either's deadline.
      await new Promise((resolve) => setTimeout(resolve, 300));
      a.destroy();
      try {
        await within(10_000, "the silent client closed by its handshake timeout", closed);
        const waited = Date.now() - started;
        assert.ok(waited >= 900, `closed after ${waited} ms`);
        await until(5_000, () => wd.output(), () => /"outcome":"handshake_timeout"/.test(wd.output()));
      } finally {
        b.destroy();
      }
    });

    describe("without an idle timeout: workerd's own pipes (no JavaScript per chunk)", () => {
      it("half-close both ways: each FIN crosses, the other direction keeps flowing", () =>
        halfCloseBothWays(port.pipes));

      it("100 MiB byte-exact each way; the log counts no byte (the pipes do not say)", async () => {
        const target = await bytesEachWayTo(port.pipes, 100 * 1024 * 1024);
        const line = await logLine(wd, target);
        // The handshake's early bytes (none here) are all that is counted: workerd's pipes report nothing.
        assert.deepEqual([line.outcome, line.up, line.down], ["tunnel_done", 0, 0]);
      });

      it("a slow reader: workerd reads no faster than the client, its memory stays bounded", (t) =>
        slowReader(wd, port.pipes, (d) => t.diagnostic(d)));

      it("a reset from the target or the client ends the tunnel (tunnel_error)", () =>
        resetEndsTunnel(wd, port.pipes));

      it("an idle tunnel stays open (no idle timeout)", async () => {
        const target = await startTcp((s) => s.on("data", (d) => s.write(d)));
        try {
          const c = await tunnel(port.pipes, target.port);
          await sleep(2_000);
          c.write("still here");
          const echoed = await within(
            5_000,
            "the echo",
            new Promise<string>((resolve) => c.once("data", (d) => resolve(String(d))).resume()),
          );
          assert.equal(echoed, "still here");
          c.destroy();
        } finally {
          await target.close();
        }
      });
    });

    describe("SOCKS over WebSocket: edgesocks bridge (on Deno, Bun, Node) → the workerd edge (fetch)", () => {
      let tokens: string;
      before(async () => {
        tokens = mkdtempSync(join(tmpdir(), "edgesocks-workerd-ws-"));
        writeFileSync(join(tokens, "token"), "s3cret-token\n");
        writeFileSync(join(tokens, "wrong"), "not-the-token\n");
        for (const r of ["deno", "bun", "node"] as const) {
          bridges.set(r, await bridgeTo(r, port.ws, join(tokens, "token")));
        }
        bridges.set("wrong", await bridgeTo("node", port.ws, join(tokens, "wrong")));
        bridges.set("plain", await bridgeTo("node", port.plainws, join(tokens, "token")));
      });
      after(() => rmSync(tokens, { recursive: true, force: true }));

      for (const r of ["deno", "bun", "node"]) {
        // workerd's WebSocket cannot stop reading: the upload to a target that reads nothing for a second stays
        // under the edge's bound of unread bytes (8 MiB, else close 1008) because each tunnel runs in a Durable
        // Object (EDGESOCKS_WS_TUNNELS) whose input gate holds messages back during each write to the target.
        it(`bridge on ${r}: curl, half-close both ways, 100 MiB byte-exact up, then down`, async () => {
          const bridge = bridges.get(r)!.port;
          for (const mode of ["--socks5-hostname", "--socks4a"]) {
            const got = await curl([mode, `127.0.0.1:${bridge}`, `http://localhost:${http.port}/`]);
            assert.deepEqual([got.code, got.stdout], [0, HTTP_BODY], `${mode}: ${got.stderr}`);
          }
          const stage = async (what: string, f: () => Promise<void>) => {
            try {
              await f();
            } catch (error) {
              const log = wd.output().split("\n").slice(-4).join("\n");
              throw new Error(`${what}: ${error}; bridge: ${bridges.get(r)!.errors()}; workerd: ${log}`);
            }
          };
          await stage("half-close", () => halfCloseBothWays(bridge));
          await stage("100 MiB up", () => uploadHashed(bridge, 100 * 1024 * 1024));
          await stage("100 MiB down", () => bytesEachWay(bridge, 100 * 1024 * 1024, 1024 * 1024));
        });
      }

      it("without EDGESOCKS_WS_TUNNELS: an upload to a target that reads nothing ends at the bound (1008), and so does the target's connection", async () => {
        let sink: Socket | undefined;
        let sinkEnded = "";
        let got = 0;
        const target = await startTcp((s) => {
          sink = s;
          s.pause();
          s.on("data", (d: Buffer) => (got += d.length));
          s.on("end", () => (sinkEnded ||= "end"));
          s.on("error", (e: Error & { code?: string }) => (sinkEnded ||= e.code ?? "error"));
        });
        try {
          const c = await tunnel(bridges.get("plain")!.port, target.port);
          c.on("error", () => {});
          let closed = false;
          c.once("close", () => (closed = true));
          const chunk = new Uint8Array(1024 * 1024);
          let sent = 0;
          await within(
            60_000,
            "the end of the upload",
            (async () => {
              while (!closed && sent < 200 * chunk.length) {
                sent += chunk.length;
                if (!c.write(chunk)) await new Promise((r) => (c.once("drain", r), c.once("close", r)));
              }
            })(),
          );
          assert.ok(closed, `the tunnel took all ${sent} bytes for a target that reads nothing`);
          const bridge = bridges.get("plain")!;
          await until(
            5_000,
            () => bridge.errors(),
            () =>
              /WebSocket closed by the peer with 1008 \(more than 8388608 bytes unread\)/.test(
                bridge.errors(),
              ),
          );
          // The worker's relay was stuck writing to the target: the 1008 ends the tunnel all the same, with
          // its log line, and closes the target's connection (a FIN: a worker cannot reset). It stayed open,
          // with no log line, until the target went away.
          const line = await logLine(wd, target.port);
          assert.equal(line.outcome, "tunnel_error", JSON.stringify(line));
          assert.match(String(line.reason), /more than 8388608 bytes received and not yet read/);
          sink!.resume();
          await until(
            10_000,
            () => `the target's connection is still open (${got} bytes read)`,
            () => sinkEnded !== "",
          );
          assert.equal(sinkEnded, "end", "a worker cannot reset: a FIN");
        } finally {
          await target.close().catch(() => {});
        }
      });

      it("a wrong token: the edge answers 401 (no upgrade), the bridge's SOCKS client gets no byte", async () => {
        const direct = await curl([
          "-i",
          ...["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"].flatMap((
            h,
          ) => ["-H", h]),
          ...[
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Authorization: Bearer not-the-token",
          ],
          `http://127.0.0.1:${port.ws}/socks`,
        ]);
        const text = direct.stdout.replace(/\r/g, "");
        assert.match(text.split("\n")[0], /^HTTP\/1\.1 401/, direct.stdout);
        assert.equal(text.slice(text.indexOf("\n\n") + 2), "wrong token\n");
        const c = await RawClient.open(bridges.get("wrong")!.port);
        c.send(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, http.port >> 8, http.port & 0xff));
        assert.equal((await c.readToEnd(10_000)).length, 0);
        c.destroy();
      });
    });
  });
}
