/**
 * The adapter contract (lib/runtime.ts: RuntimeAdapter, ByteConnection), checked
 * the same way against every adapter the running runtime can run: listen,
 * dial, byte-exact transfer both ways, half-close, backpressure, the reply
 * each connect failure maps to, the native relay, abort, close, reusePort.
 *
 * A new adapter gets all of it by adding one line to {@linkcode ADAPTERS}.
 * Every socket is on loopback; the only non-loopback dials happen in a child
 * process inside a network namespace created for it (`unshare -n`), from which
 * no packet can leave the machine. Needs root (for `unshare -n`), `ip`
 * (iproute2) and `perl` (a listener that never accepts); without them the
 * checks that use them fail, saying so.
 *
 * Defects found and not fixed here are pinned in {@linkcode KNOWN_DEFECTS}:
 * those checks still run and must still fail the same way.
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { ByteConnection, Listener, RuntimeAdapter } from "../lib/runtime.ts";
import { SocksError } from "../lib/core/errors.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { fromWebStreams } from "../lib/streams.ts";
import { relay as genericRelay } from "../lib/relay.ts";
import { ROOT, RUNTIME, sleep, socketFds, startTcp, until, within } from "./_fixtures.ts";

type Runtime = typeof RUNTIME;

/** One adapter under test. */
interface AdapterLine {
  /** Shown in the test names. */
  name: string;
  /** The runtimes that can run it: each runtime checks only its own lines. */
  runtimes: readonly Runtime[];
  /** Where it is exported (relative to this file), so a child process loads it the same way. */
  module: string;
  export: string;
  /** What `abort()` does: resets the connection (the peer's read rejects), or there is none. */
  abort: "reset" | "absent";
  /** Whether `listen(..., { reusePort: true })` shares a port here (otherwise it must reject clearly). */
  reusePort: boolean;
  /** Whether a dialed connection has `recycle()` and reads into a full chunk handed back. */
  recycle: boolean;
}

/** `server.listen({ reusePort })` arrived in Node 22.12 and 23.1. */
const nodeReusePort = (() => {
  const [major, minor] = process.versions.node.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
})();
/** Deno has `Deno.listenDatagram` only with --unstable-net, which `Deno.listen({ reusePort })` needs too. */
const denoUnstableNet =
  typeof (globalThis as { Deno?: { listenDatagram?: unknown } }).Deno?.listenDatagram ===
    "function";

/**
 * The adapters under test, one line each. The Deno adapter needs Deno and the
 * Bun adapter Bun; the Node adapter (node:net) passes every check under Bun
 * and Deno too (measured: repeated runs, the three runtimes at once on two
 * busy cores), so all three check it; what fails there is pinned in
 * {@linkcode KNOWN_DEFECTS}, and is Bun's own.
 */
const ADAPTERS: readonly AdapterLine[] = [
  {
    name: "deno",
    runtimes: ["deno"],
    module: "../lib/adapters/deno.ts",
    export: "denoAdapter",
    abort: "absent",
    reusePort: denoUnstableNet,
    recycle: true,
  },
  {
    name: "bun",
    runtimes: ["bun"],
    module: "../lib/adapters/bun.ts",
    export: "bunAdapter",
    abort: "reset",
    reusePort: true,
    recycle: false,
  },
  {
    name: "node",
    runtimes: ["node", "bun", "deno"],
    module: "../lib/adapters/node.ts",
    export: "nodeAdapter",
    abort: "reset",
    reusePort: RUNTIME === "node" ? nodeReusePort : true,
    recycle: RUNTIME !== "deno",
  },
];

type CheckId =
  | "listen"
  | "transfer"
  | "half-close"
  | "backpressure"
  | "refused"
  | "timeout"
  | "unreachable"
  | "relay"
  | "relay-stalls"
  | "generic-relay-stalls"
  | "reuse-after-write"
  | "recycle"
  | "relay-declines"
  | "relay-error"
  | "relay-ends"
  | "abort"
  | "graceful-close"
  | "close-settles"
  | "reuse-port"
  | "reuse-port-rejects"
  | "interfaces";

/** A check that fails today for a reason found and reported, not fixed here. */
interface KnownDefect {
  adapter: string;
  runtime: Runtime;
  check: CheckId;
  /** What the failure must show: any other failure is reported as it is. */
  shows: RegExp;
  why: string;
}

/**
 * Known defects, each pinned as an expected failure: the check still runs and
 * must still fail the same way; once the defect is fixed the check fails with
 * "no longer shows", and its line here goes.
 */
/** The unreachable check's failure where both unreachable targets came back as refused (0x05). */
const BOTH_UNREACHABLE_REFUSED =
  /"192\.0\.2\.1:9","error":"SocksError","reply":5,.*\n.*"198\.51\.100\.1:9","error":"SocksError","reply":5,/;

const KNOWN_DEFECTS: readonly KnownDefect[] = [
  {
    adapter: "deno",
    runtime: "deno",
    check: "graceful-close",
    shows: /ConnectionReset: Connection reset by peer/,
    why: "DenoConnection.close() with unread received bytes makes Linux send a RST; queued data is lost",
  },
  {
    adapter: "bun",
    runtime: "bun",
    check: "unreachable",
    shows: BOTH_UNREACHABLE_REFUSED,
    // The runtime's own error says ECONNREFUSED (errno -111) where connect(2) returned ENETUNREACH /
    // EHOSTUNREACH (strace): nothing for the adapter to map. oven-sh/bun#37093 (open) fixes it.
    why: "Bun 1.4 reports connect()'s ENETUNREACH and EHOSTUNREACH as ECONNREFUSED (reply 0x05)",
  },
  {
    adapter: "node",
    runtime: "bun",
    check: "unreachable",
    shows: BOTH_UNREACHABLE_REFUSED,
    why: "Bun 1.4's node:net reports ENETUNREACH and EHOSTUNREACH as ECONNREFUSED (reply 0x05)",
  },
];

/** Runs a check that must fail as `known` says; passing, or failing otherwise, fails it. */
async function expectDefect(known: KnownDefect, body: () => Promise<void>): Promise<void> {
  let failure: unknown;
  try {
    await body();
  } catch (error) {
    failure = error;
  }
  if (failure === undefined) {
    assert.fail(`the known defect (${known.why}) no longer shows: remove its line from KNOWN_DEFECTS`);
  }
  if (!known.shows.test(String((failure as Error)?.stack ?? failure))) throw failure;
  const seen = String((failure as Error)?.message ?? failure).split("\n")[0];
  console.log(
    `# known defect, ${known.adapter} adapter on ${known.runtime}, ${known.check}: ${known.why} (${seen})`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

const TEST_MS = 25_000;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a test opened, closed when it ends however it ends (also when it timed out with a read pending). */
class Scope {
  #closers: (() => unknown)[] = [];
  defer(fn: () => unknown): void {
    this.#closers.push(fn);
  }
  conn<T extends ByteConnection>(conn: T): T {
    this.defer(() => conn.abort ? conn.abort() : conn.close());
    return conn;
  }
  async close(): Promise<void> {
    for (const fn of this.#closers.splice(0).reverse()) {
      try {
        await within(5_000, "cleanup", Promise.resolve().then(fn));
      } catch { /* cleanup is best effort; the test's own outcome is what counts */ }
    }
  }
}

/** Runs `body` bounded by `ms`, then closes what it registered in its scope. */
async function scoped(what: string, body: (s: Scope) => Promise<void>, ms = TEST_MS): Promise<void> {
  const s = new Scope();
  try {
    await within(ms, what, body(s));
  } finally {
    await s.close();
  }
}

/** A listener whose accepted connections are handed out in order by `next()`. */
interface Server {
  listener: Listener;
  port: number;
  next(): Promise<ByteConnection>;
}

async function listenOn(adapter: RuntimeAdapter, host: string, s: Scope): Promise<Server> {
  const queue: ByteConnection[] = [];
  const waiters: ((c: ByteConnection) => void)[] = [];
  const listener = await adapter.listen({ host, port: 0 }, (conn) => {
    s.conn(conn);
    const w = waiters.shift();
    if (w) w(conn);
    else queue.push(conn);
  });
  s.defer(() => listener.close());
  return {
    listener,
    port: listener.address.port,
    next: () =>
      within(
        10_000,
        "an accepted connection",
        new Promise((resolve) => {
          const c = queue.shift();
          if (c) resolve(c);
          else waiters.push(resolve);
        }),
      ),
  };
}

/** A dialled connection and the one its listener accepted. */
async function connectedPair(
  adapter: RuntimeAdapter,
  s: Scope,
  host = "127.0.0.1",
): Promise<{ server: Server; client: ByteConnection; accepted: ByteConnection }> {
  const server = await listenOn(adapter, host, s);
  const client = s.conn(await adapter.dial({ host, port: server.port, signal: AbortSignal.timeout(10_000) }));
  return { server, client, accepted: await server.next() };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Reads until the peer's FIN (`read()` → null). */
async function readToEnd(conn: ByteConnection): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let c = await conn.read(); c; c = await conn.read()) chunks.push(c);
  return concat(chunks);
}

/** Reads exactly `n` bytes (more in the last chunk is an error: the peer sent nothing more). */
async function readExactly(conn: ByteConnection, n: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let have = 0;
  while (have < n) {
    const c = await conn.read();
    if (c === null) throw new Error(`FIN after ${have} of ${n} bytes`);
    chunks.push(c);
    have += c.length;
  }
  assert.equal(have, n, `read ${have} bytes where ${n} were sent`);
  return concat(chunks);
}

/**
 * Reads until the peer's FIN like {@linkcode readToEnd}, but stops reading for `pauseMs` after every
 * `every` bytes, so that what is sent to it backs up in the kernel and in the writer's buffers.
 */
async function readStalling(conn: ByteConnection, every: number, pauseMs: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let since = 0;
  for (let c = await conn.read(); c; c = await conn.read()) {
    chunks.push(c);
    since += c.length;
    if (since >= every) {
      since = 0;
      await sleep(pauseMs);
    }
  }
  return concat(chunks);
}

/** Writes `data` in `size`-byte chunks (each a view the caller no longer touches). */
async function writeAll(conn: ByteConnection, data: Uint8Array, size = 64 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += size) await conn.write(data.subarray(off, off + size));
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const random = (n: number) => new Uint8Array(randomBytes(n));

/** Asserts that `p` rejects with a SocksError carrying `reply`. */
async function assertReply(p: Promise<unknown>, reply: ReplyCode, what: string): Promise<void> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, `${what}: resolved where it should have failed`);
  assert.ok(error instanceof SocksError, `${what}: rejected with ${String(error)}, not a SocksError`);
  assert.equal(error.reply, reply, `${what}: reply 0x0${error.reply} (${error.message}), not 0x0${reply}`);
}

/** Whether a promise settles within `ms` (false: still pending then). */
function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.then(() => true, () => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** True when the loopback interface has ::1 (Linux). */
function hasIPv6Loopback(): boolean {
  try {
    return /^0{31}1 .* lo$/m.test(readFileSync("/proc/net/if_inet6", "utf8"));
  } catch {
    return false;
  }
}

/** The command that runs a TypeScript file on the running runtime. */
function runtimeArgs(file: string): string[] {
  return RUNTIME === "deno" ? [process.execPath, "run", "-A", file] : [process.execPath, file];
}

interface ChildResult {
  code: number | null;
  lines: Record<string, unknown>[];
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` to its end, bounded; a program that cannot start fails the test. */
function runChild(cmd: string, args: string[], ms = 20_000): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
    let stdout = "", stderr = "";
    child.stdout!.on("data", (c) => (stdout += c));
    child.stderr!.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const lines = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
      resolve({ code, lines, stdout, stderr });
    });
  });
}

/**
 * A listener (in a perl child process) with a backlog of 0 that never
 * accepts: once one connection fills its accept queue, Linux drops further
 * SYNs, so a connect to it hangs (retransmitting) on loopback.
 */
async function startBlackHole(s: Scope): Promise<number> {
  const script = `
    socket(S, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    bind(S, pack_sockaddr_in(0, inet_aton("127.0.0.1"))) or die "bind: $!";
    listen(S, 0) or die "listen: $!";
    my ($port) = unpack_sockaddr_in(getsockname(S));
    $| = 1; print "$port\\n";
    1 while <STDIN>;`;
  const child: ChildProcess = spawn("perl", ["-MSocket", "-e", script], { stdio: ["pipe", "pipe", "pipe"] });
  s.defer(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL");
  });
  let stderr = "";
  child.stderr!.on("data", (c) => (stderr += c));
  return await within(
    10_000,
    "perl listener start",
    new Promise<number>((resolve, reject) => {
      child.on(
        "error",
        (e) => reject(new Error(`cannot run perl (the never-accepting listener): ${e.message}`)),
      );
      child.on("exit", (code) => reject(new Error(`perl exited with ${code}: ${stderr}`)));
      child.stdout!.once("data", (d) => resolve(Number(String(d).trim())));
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------
// The checks

const loopbacks = hasIPv6Loopback() ? ["127.0.0.1", "::1"] : ["127.0.0.1"];

for (const line of ADAPTERS.filter((l) => l.runtimes.includes(RUNTIME))) {
  describe(`adapter contract: ${line.name} adapter on ${RUNTIME}`, () => {
    let adapter: RuntimeAdapter;
    before(async () => {
      adapter = (await import(line.module))[line.export];
      assert.equal(typeof adapter?.dial, "function", `${line.module} exports no adapter ${line.export}`);
    });
    const check = (id: CheckId, title: string, body: () => Promise<void>) => {
      const known = KNOWN_DEFECTS.find((d) =>
        d.adapter === line.name && d.runtime === RUNTIME && d.check === id
      );
      if (known) it(`${title} [known defect: ${known.why}]`, () => expectDefect(known, body));
      else it(title, body);
    };

    for (const host of loopbacks) {
      check(
        "listen",
        `listen on ${host}:0 gives a real port; close() stops accepting and leaves open connections`,
        () =>
          scoped("listen", async (s) => {
            const server = await listenOn(adapter, host, s);
            const { port } = server;
            assert.equal(server.listener.address.host, host);
            assert.ok(Number.isInteger(port) && port > 0 && port < 65536, `port ${port}`);
            const client = s.conn(await adapter.dial({ host, port, signal: AbortSignal.timeout(10_000) }));
            const accepted = await server.next();
            await within(5_000, "listener close", server.listener.close());
            await assertReply(
              adapter.dial({ host, port, signal: AbortSignal.timeout(10_000) }),
              ReplyCode.ConnectionRefused,
              "dial after the listener closed",
            );
            await client.write(enc.encode("still open"));
            assert.equal(dec.decode(await readExactly(accepted, 10)), "still open");
            await accepted.write(enc.encode("both ways"));
            assert.equal(dec.decode(await readExactly(client, 9)), "both ways");
          }),
      );

      check(
        "transfer",
        `dial ${host}: 1 MiB each way arrives byte-exact; the addresses are loopback and match`,
        () =>
          scoped("transfer", async (s) => {
            const { server, client, accepted } = await connectedPair(adapter, s, host);
            // Asked while the connection is open (the driver asks right after accept and connect).
            assert.deepEqual(client.remoteAddress, { host, port: server.port });
            assert.deepEqual(accepted.localAddress, { host, port: server.port });
            assert.equal(client.localAddress?.host, host);
            assert.deepEqual(accepted.remoteAddress, client.localAddress);
            assert.notEqual(client.localAddress?.port, server.port);
            const up = random(1 << 20), down = random(1 << 20);
            const [gotUp, gotDown] = await Promise.all([
              readToEnd(accepted),
              readToEnd(client),
              writeAll(client, up, 50_000).then(() => client.closeWrite()),
              writeAll(accepted, down, 70_000).then(() => accepted.closeWrite()),
            ]);
            assert.equal(gotUp.length, up.length);
            assert.equal(sha256(gotUp), sha256(up));
            assert.equal(gotDown.length, down.length);
            assert.equal(sha256(gotDown), sha256(down));
          }),
      );
    }

    for (const first of ["dialled", "accepted"] as const) {
      check(
        "half-close",
        `half-close: the ${first} side's closeWrite() reads as null at the peer, which can still answer`,
        () =>
          scoped("half-close", async (s) => {
            const { client, accepted } = await connectedPair(adapter, s);
            const [a, b] = first === "dialled" ? [client, accepted] : [accepted, client];
            const request = random(200_000), answer = random(300_000);
            const [got] = await Promise.all([
              readToEnd(b),
              writeAll(a, request).then(() => within(5_000, "closeWrite", a.closeWrite())),
            ]);
            assert.equal(sha256(got), sha256(request));
            assert.equal(await b.read(), null, "read after the FIN resolves null again");
            const [back] = await Promise.all([readToEnd(a), writeAll(b, answer).then(() => b.closeWrite())]);
            assert.equal(sha256(back), sha256(answer));
          }),
      );
    }

    for (const sender of ["dialled", "accepted"] as const) {
      check(
        "backpressure",
        `backpressure: writes by the ${sender} side to a peer that does not read stop resolving, then resume`,
        () =>
          scoped("backpressure", async (s) => {
            const { client, accepted } = await connectedPair(adapter, s);
            const [from, to] = sender === "dialled" ? [client, accepted] : [accepted, client];
            const CHUNK = 64 * 1024, LIMIT = 64 * 1024 * 1024, HELD_MS = 1_000, AHEAD = 1024 * 1024;
            const chunk = random(CHUNK);
            const hash = createHash("sha256");
            // The peer reads once, then stops: an adapter that goes on reading into memory behind a
            // caller that stopped would never hold the sender back.
            await from.write(chunk.slice());
            hash.update(chunk);
            let accepted_ = CHUNK;
            const first = await to.read();
            assert.ok(first, "the first chunk arrived");
            let pending: Promise<void> | null = null;
            while (accepted_ < LIMIT) {
              const p = from.write(chunk.slice());
              hash.update(chunk);
              if (!await settlesWithin(p, HELD_MS)) {
                pending = p;
                break;
              }
              await p;
              accepted_ += CHUNK;
            }
            assert.ok(pending, `every write resolved up to ${LIMIT} bytes: the sender is not held back`);
            assert.ok(accepted_ >= 2 * CHUNK, `held back after only ${accepted_} bytes`);
            // The reader catches up: everything arrives, and the held write resolves.
            const total = accepted_ + CHUNK;
            // What waited in the adapter while nobody read is one chunk, not all that the kernel had.
            const next = await to.read();
            assert.ok(next, "the peer reads on");
            assert.ok(next.length <= AHEAD, `the first read after the hold returned ${next.length} bytes`);
            const reading = readToEnd(to);
            await within(10_000, "the held write resolves once the peer reads", pending);
            await from.closeWrite();
            const got = concat([first, next, await reading]);
            assert.equal(got.length, total);
            assert.equal(sha256(got), hash.digest("hex"));
          }),
      );
    }

    for (const sender of ["dialled", "accepted"] as const) {
      check(
        "reuse-after-write",
        `the ${sender} side's write() is done with the chunk when it resolves: overwriting it then changes nothing sent`,
        () =>
          scoped("reuse after write", async (s) => {
            // The relay hands a written chunk back to its source, which reads into it again or frees it
            // (recycle): a write that resolves while the socket still sends from the chunk's memory (one
            // under the socket's high-water mark, waiting behind a full kernel buffer) sends other bytes.
            // Node Buffers too, whose slice() is a view, not a copy.
            const { client, accepted } = await connectedPair(adapter, s);
            const [from, to] = sender === "dialled" ? [client, accepted] : [accepted, client];
            const hash = createHash("sha256");
            let total = 0;
            const deadline = Date.now() + 20_000;
            // The peer does not read yet, so the kernel buffers fill and later writes wait in the socket.
            for (let i = 0; total < 8 << 20 && Date.now() < deadline; i++) {
              const size = [700, 5_000, 15_000, 40_000, 64_000][i % 5];
              const chunk = Buffer.from(randomBytes(size));
              hash.update(chunk);
              total += size;
              const written = from.write(chunk);
              if (!await settlesWithin(written, 50)) {
                // Held back: read on, and overwrite the chunk only once its write resolved.
                const reading = readToEnd(to);
                await within(20_000, "the held write", written);
                chunk.fill(0xee);
                for (let j = 0; j < 50; j++) {
                  const more = Buffer.from(randomBytes([300, 9_000, 30_000][j % 3]));
                  hash.update(more);
                  total += more.length;
                  await from.write(more);
                  more.fill(0xee);
                }
                await from.closeWrite();
                const got = await within(20_000, "the rest", reading);
                assert.equal(got.length, total);
                assert.equal(
                  sha256(got),
                  hash.digest("hex"),
                  "the bytes differ: a write was not done with its chunk",
                );
                return;
              }
              chunk.fill(0xee);
            }
            assert.fail(`no write was held back in ${total} bytes`);
          }, 60_000),
      );
    }

    check(
      "refused",
      "refused: dialing a closed port rejects with ConnectionRefused (0x05)",
      () =>
        scoped("refused", async (s) => {
          const server = await listenOn(adapter, "127.0.0.1", s);
          await server.listener.close();
          const t0 = Date.now();
          await assertReply(
            adapter.dial({ host: "127.0.0.1", port: server.port, signal: AbortSignal.timeout(10_000) }),
            ReplyCode.ConnectionRefused,
            "dial a closed port",
          );
          assert.ok(Date.now() - t0 < 5_000, `refused after ${Date.now() - t0} ms`);
        }),
    );

    check(
      "timeout",
      "timeout: a signal that aborts a connect that cannot complete rejects with TtlExpired (0x06)",
      () =>
        scoped("timeout", async (s) => {
          const port = await startBlackHole(s);
          // The first connection fills the accept queue (backlog 0 holds one); it completes.
          s.conn(await adapter.dial({ host: "127.0.0.1", port, signal: AbortSignal.timeout(10_000) }));
          const t0 = Date.now();
          await assertReply(
            adapter.dial({ host: "127.0.0.1", port, signal: AbortSignal.timeout(1_000) }),
            ReplyCode.TtlExpired,
            "dial a listener whose accept queue is full",
          );
          const ms = Date.now() - t0;
          assert.ok(ms >= 900, `rejected after ${ms} ms, before the signal aborted`);
          assert.ok(ms < 8_000, `rejected ${ms} ms after the start, long after the signal aborted at 1,000`);
          const aborted = AbortSignal.abort();
          await assertReply(
            adapter.dial({ host: "127.0.0.1", port, signal: aborted }),
            ReplyCode.TtlExpired,
            "dial with an aborted signal",
          );
        }),
    );

    check(
      "unreachable",
      "unreachable (in a network namespace): ENETUNREACH → 0x03, EHOSTUNREACH → 0x04, EACCES → 0x02",
      async () => {
        // Only inside `unshare -n`: a namespace with a loopback that is down and two routes of our own, so
        // no packet leaves the machine. 192.0.2.1 has no route (ENETUNREACH); 198.51.100.0/24 has an
        // `unreachable` route (EHOSTUNREACH), 203.0.113.0/24 a `prohibit` one (EACCES).
        const setup = [
          "PATH=$PATH:/usr/sbin:/sbin",
          "ip route add unreachable 198.51.100.0/24",
          "ip route add prohibit 203.0.113.0/24",
          'exec "$@"',
        ].join(" && ");
        const [cmd, ...args] = runtimeArgs(join(ROOT, "tests", "_contract_child.ts"));
        const r = await runChild("unshare", [
          "-n",
          "sh",
          "-c",
          setup,
          "sh",
          cmd,
          ...args,
          line.module,
          line.export,
          "dial",
          "192.0.2.1:9",
          "198.51.100.1:9",
          "203.0.113.1:9",
        ]);
        assert.ok(
          r.code === 0,
          `the child in a network namespace failed (exit ${r.code}); \`unshare -n\` needs root ` +
            "(CAP_SYS_ADMIN) and `ip` (iproute2): this check cannot run without them." +
            `\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
        );
        const byTarget = Object.fromEntries(r.lines.map((l) => [l.target, [l.error, l.reply]]));
        assert.deepEqual(byTarget, {
          "192.0.2.1:9": ["SocksError", ReplyCode.NetworkUnreachable],
          "198.51.100.1:9": ["SocksError", ReplyCode.HostUnreachable],
          "203.0.113.1:9": ["SocksError", ReplyCode.NotAllowed],
        }, `replies in the namespace: ${r.stdout}`);
        for (const l of r.lines) assert.ok((l.ms as number) < 3_000, `${l.target} took ${l.ms} ms`);
      },
    );

    check(
      "relay",
      "the native relay takes two of its own connections: bytes both ways, half-close, {up, down, done}",
      () =>
        scoped("relay", async (s) => {
          assert.equal(typeof adapter.relay, "function", "the adapter has no native relay");
          const front = await connectedPair(adapter, s); // user → proxy: front.accepted is the proxy's client
          const back = await connectedPair(adapter, s); // proxy → origin: back.client is the proxy's upstream
          const user = front.client, origin = back.accepted;
          const relayed = adapter.relay!(front.accepted, back.client, {});
          assert.ok(relayed instanceof Promise, `relay() returned ${relayed}, not a promise`);
          const up = random(700_000), down = random(500_000);
          // The user's FIN first: the origin reads it as the end and still answers, then sends its own.
          const [gotUp] = await Promise.all([
            readToEnd(origin),
            writeAll(user, up).then(() => user.closeWrite()),
          ]);
          assert.equal(sha256(gotUp), sha256(up));
          const [gotDown] = await Promise.all([
            readToEnd(user),
            writeAll(origin, down).then(() => origin.closeWrite()),
          ]);
          assert.equal(sha256(gotDown), sha256(down));
          assert.deepEqual(await within(10_000, "relay result", relayed), {
            up: up.length,
            down: down.length,
            end: "done",
          });
        }),
    );

    /**
     * 16 MiB each way through `relayed` (the native or the generic relay) between the adapter's own
     * connections, both ends stopping to read now and then. A relay that reuses a read's memory while a
     * write of it still waits for the peer (or lets go of it then), or a connection that reads into a
     * chunk handed back (recycle) while its write still needs it, delivers other bytes than were sent:
     * the stalls make the writes wait.
     */
    const stallingBothWays = (
      relayed: (client: ByteConnection, upstream: ByteConnection) => Promise<unknown> | unknown,
    ) =>
      scoped("relay stalls", async (s) => {
        const front = await connectedPair(adapter, s);
        const back = await connectedPair(adapter, s);
        const user = front.client, origin = back.accepted;
        const result = relayed(front.accepted, back.client);
        assert.ok(result instanceof Promise, `relay() returned ${result}, not a promise`);
        const up = random(16 << 20), down = random(16 << 20);
        const [gotUp, gotDown] = await Promise.all([
          readStalling(origin, 2 << 20, 60),
          readStalling(user, 2 << 20, 60),
          writeAll(user, up).then(() => user.closeWrite()),
          writeAll(origin, down).then(() => origin.closeWrite()),
        ]);
        assert.equal(gotUp.length, up.length);
        assert.equal(sha256(gotUp), sha256(up), "the bytes up differ");
        assert.equal(gotDown.length, down.length);
        assert.equal(sha256(gotDown), sha256(down), "the bytes down differ");
        assert.deepEqual(await within(10_000, "relay result", result), {
          up: up.length,
          down: down.length,
          end: "done",
        });
      }, 90_000);

    check(
      "relay-stalls",
      "the native relay: 16 MiB each way at once, both ends stopping to read now and then: every byte arrives, counted",
      () => stallingBothWays((a, b) => adapter.relay!(a, b, {})),
    );

    check(
      "generic-relay-stalls",
      "the generic relay (which hands chunks back) between its connections: the same 16 MiB each way with stalls",
      () => stallingBothWays((a, b) => genericRelay(a, b, {})),
    );

    check(
      "recycle",
      line.recycle
        ? "recycle(): a dialed connection reads into a full chunk handed back; every byte arrives"
        : "recycle(): there is none",
      () =>
        scoped("recycle", async (s) => {
          const data = random(8 << 20);
          const origin = await startTcp((socket) => socket.end(data));
          s.defer(() => origin.close());
          const conn = s.conn(
            await adapter.dial({ host: "127.0.0.1", port: origin.port, signal: AbortSignal.timeout(10_000) }),
          );
          if (!line.recycle) return assert.equal(conn.recycle, undefined);
          const hash = createHash("sha256");
          let total = 0, reused = 0;
          let last: ArrayBufferLike | undefined;
          for (let c = await conn.read(); c; c = await conn.read()) {
            if (c.buffer === last) reused++;
            hash.update(c);
            total += c.length;
            last = c.buffer;
            conn.recycle!(c);
          }
          assert.equal(total, data.length);
          assert.equal(hash.digest("hex"), sha256(data), "the bytes differ");
          assert.ok(reused > 0, "no read went into a chunk handed back");
        }, 60_000),
    );

    check(
      "relay-error",
      "the native relay: a reset by the origin ends it as an error, and reaches the client side",
      () =>
        scoped("relay error", async (s) => {
          // The origin is a node:net socket, which every runtime here can reset (resetAndDestroy).
          const origin = await startTcp((socket) => socket.once("data", () => socket.resetAndDestroy()));
          s.defer(() => origin.close());
          const front = await connectedPair(adapter, s);
          const upstream = s.conn(
            await adapter.dial({ host: "127.0.0.1", port: origin.port, signal: AbortSignal.timeout(10_000) }),
          );
          const relayed = adapter.relay!(front.accepted, upstream, {});
          assert.ok(relayed instanceof Promise, `relay() returned ${relayed}, not a promise`);
          const user = front.client;
          const reading = user.read().then((chunk) => ({ chunk }), (error) => ({ error }));
          await user.write(enc.encode("trigger"));
          const { error, ...result } = await within(10_000, "relay result", relayed);
          assert.deepEqual(result, { up: 7, down: 0, end: "error" });
          assert.ok(error, "an error result carries its error");
          const seen = await within(5_000, "the client side's read", reading);
          if (line.abort === "reset") {
            assert.equal((seen as { error?: { code?: string } }).error?.code, "ECONNRESET", String(seen));
          } else {
            // No reset on Deno.Conn: the client side sees a clean end.
            assert.deepEqual(seen, { chunk: null });
          }
        }),
    );

    for (const how of ["signal", "idle"] as const) {
      check(
        "relay-ends",
        `the native relay: ${
          how === "signal" ? "an aborted signal" : "the idle timeout"
        } ends it and closes both`,
        () =>
          scoped("relay ends", async (s) => {
            const front = await connectedPair(adapter, s);
            const back = await connectedPair(adapter, s);
            const stop = new AbortController();
            const options = how === "signal" ? { signal: stop.signal } : { idleTimeout: 500 };
            const t0 = Date.now();
            const relayed = adapter.relay!(front.accepted, back.client, options);
            assert.ok(relayed instanceof Promise, `relay() returned ${relayed}, not a promise`);
            await front.client.write(enc.encode("up"));
            assert.equal(dec.decode(await readExactly(back.accepted, 2)), "up");
            if (how === "signal") stop.abort();
            assert.deepEqual(await within(10_000, "relay result", relayed), {
              up: 2,
              down: 0,
              end: how === "signal" ? "aborted" : "idle",
            });
            if (how === "idle") {
              const ms = Date.now() - t0;
              assert.ok(ms >= 450 && ms < 8_000, `idle after ${ms} ms, with a timeout of 500`);
            }
            // Both ends are closed: each side reads the end, or a reset where the adapter can send one when
            // the tunnel was cut by the signal (a shutdown must not look like a complete transfer).
            for (const [what, side] of [["client", front.client], ["origin", back.accepted]] as const) {
              const seen = await within(
                5_000,
                `${what} side end`,
                side.read().then((chunk) => ({ chunk }), (error) => ({ error })),
              );
              if (how === "signal" && line.abort === "reset") {
                assert.equal((seen as { error?: { code?: string } }).error?.code, "ECONNRESET", String(seen));
              } else assert.deepEqual(seen, { chunk: null }, `${what} side`);
            }
          }),
      );
    }

    check(
      "relay-declines",
      "the native relay declines a connection that is not its own (a fromWebStreams pair), touching neither",
      () =>
        scoped("relay declines", async (s) => {
          assert.equal(typeof adapter.relay, "function", "the adapter has no native relay");
          const { client, accepted } = await connectedPair(adapter, s);
          const a = new TransformStream<Uint8Array, Uint8Array>(),
            b = new TransformStream<Uint8Array, Uint8Array>();
          const web = s.conn(fromWebStreams({ readable: a.readable, writable: b.writable }));
          assert.equal(adapter.relay!(accepted, web, {}), undefined);
          assert.equal(adapter.relay!(web, accepted, {}), undefined);
          // Declined means untouched: the adapter's connection still works on its own.
          await client.write(enc.encode("ping"));
          assert.equal(dec.decode(await readExactly(accepted, 4)), "ping");
          await accepted.write(enc.encode("pong"));
          assert.equal(dec.decode(await readExactly(client, 4)), "pong");
        }),
    );

    if (line.abort === "reset") {
      for (const side of ["dialled", "accepted"] as const) {
        check(
          "abort",
          `abort() on the ${side} side reaches the peer as a reset: its read rejects with ECONNRESET`,
          () =>
            scoped("abort", async (s) => {
              const { client, accepted } = await connectedPair(adapter, s);
              const [a, b] = side === "dialled" ? [client, accepted] : [accepted, client];
              assert.equal(typeof a.abort, "function", "no abort()");
              // Bytes both ways first, so the connection is established end to end.
              await a.write(enc.encode("x"));
              await readExactly(b, 1);
              const reading = b.read();
              a.abort!();
              let error: unknown;
              const result = await within(
                5_000,
                "the peer's read after abort()",
                reading.catch((e) => (error = e)),
              );
              assert.ok(error, `the peer's read resolved with ${result} instead of rejecting`);
              assert.equal((error as { code?: string }).code, "ECONNRESET", String(error));
              await assert.rejects(a.write(enc.encode("after abort")), "write after abort() rejects");
            }),
        );
      }
      for (const side of ["dialled", "accepted"] as const) {
        check(
          "abort",
          `abort() on the ${side} side with its FIN on the way (right after closeWrite()) still closes the socket`,
          () =>
            scoped("abort after closeWrite", async (s) => {
              const { client, accepted } = await connectedPair(adapter, s);
              const [a, b] = side === "dialled" ? [client, accepted] : [accepted, client];
              await a.write(enc.encode("x"));
              await readExactly(b, 1);
              const open = socketFds(process.pid);
              // The FIN is queued (on Node: a libuv shutdown pending until the next loop turn, during which
              // libuv refuses a reset), then the tunnel is cut in the same turn.
              const fin = a.closeWrite().catch(() => {});
              a.abort!();
              await fin;
              // The socket is gone: its descriptor closes (on Node, before edgesocks' fix, never: the
              // process then spins at exit), and the peer reads its end, a FIN or a reset.
              await until(5_000, () =>
                `the aborted socket's descriptor to close (${open} open)`, () =>
                socketFds(process.pid) < open);
              await within(
                5_000,
                "the peer's end",
                b.read().catch(() =>
                  null
                ),
              );
            }),
        );
      }
    } else {
      check(
        "abort",
        "abort(): there is none (Deno cannot send a reset); close() reaches the peer as a FIN",
        () =>
          scoped("no abort", async (s) => {
            const { client, accepted } = await connectedPair(adapter, s);
            assert.equal(client.abort, undefined, "the dialled connection has an abort()");
            assert.equal(accepted.abort, undefined, "the accepted connection has an abort()");
            // The generic relay falls back to close() then: the peer reads a clean end, not an error.
            await client.write(enc.encode("last words"));
            client.close();
            assert.equal(dec.decode(await readToEnd(accepted)), "last words");
          }),
      );
    }

    check(
      "close-settles",
      "close(): a pending read settles, a second close() is harmless, a write after it rejects",
      () =>
        scoped("close settles", async (s) => {
          const { client, accepted } = await connectedPair(adapter, s);
          const reading = client.read().then((chunk) => ({ chunk }), (error) => ({ error: String(error) }));
          client.close();
          client.close();
          assert.deepEqual(await within(5_000, "the pending read after close()", reading), { chunk: null });
          await assert.rejects(client.write(enc.encode("late")), "write after close() rejects");
          assert.equal(await within(5_000, "the peer's end", accepted.read()), null);
        }),
    );

    check(
      "graceful-close",
      "close() is graceful: what was written arrives, then the FIN, even with unread bytes from the peer",
      () =>
        scoped("graceful close", async (s) => {
          const { client, accepted } = await connectedPair(adapter, s);
          // The peer sends bytes that are never read: closing a socket with unread data is where Linux
          // sends a reset instead of a FIN and drops what is still queued.
          await accepted.write(random(100_000));
          assert.ok(await client.read(), "some of it arrived before the close");
          const data = random(2 << 20);
          const written = writeAll(client, data);
          let arrived = 0;
          const reading = (async () => {
            const chunks: Uint8Array[] = [];
            try {
              for (let c = await accepted.read(); c; c = await accepted.read()) {
                chunks.push(c);
                arrived += c.length;
              }
            } catch (error) {
              throw new Error(`the peer's read failed after ${arrived} of ${data.length} bytes: ${error}`);
            }
            return concat(chunks);
          })();
          await written;
          client.close();
          const got = await reading;
          assert.equal(got.length, data.length);
          assert.equal(sha256(got), sha256(data));
        }),
    );

    if (line.reusePort) {
      check(
        "reuse-port",
        "reusePort: two listeners share one port",
        () =>
          scoped("reusePort", async (s) => {
            const accepted: Record<"one" | "two", ByteConnection[]> = { one: [], two: [] };
            let arrived = () => {};
            const onConnection = (which: "one" | "two") => (c: ByteConnection) => {
              accepted[which].push(s.conn(c));
              arrived();
            };
            const next = () => new Promise<void>((r) => (arrived = r));
            const options = { reusePort: true };
            const one = await adapter.listen(
              { host: "127.0.0.1", port: 0 },
              onConnection("one"),
              undefined,
              options,
            );
            s.defer(() => one.close());
            const two = await adapter.listen(one.address, onConnection("two"), undefined, options);
            s.defer(() => two.close());
            assert.deepEqual(two.address, one.address);
            // The second listener really is on the port: with the first one closed, it takes the connection.
            await one.close();
            const coming = next();
            const c = s.conn(await adapter.dial({ ...one.address, signal: AbortSignal.timeout(10_000) }));
            await within(5_000, "a connection accepted by the second listener", coming);
            assert.deepEqual([accepted.one.length, accepted.two.length], [0, 1]);
            await c.write(enc.encode("hi"));
            assert.equal(dec.decode(await readExactly(accepted.two[0], 2)), "hi");
          }),
      );
    } else {
      check(
        "reuse-port-rejects",
        "reusePort where the runtime cannot: listen() rejects with a clear message (in a child process)",
        async () => {
          // A child process, since a runtime may end the whole process instead of throwing.
          const [cmd, ...args] = runtimeArgs(join(ROOT, "tests", "_contract_child.ts"));
          const r = await runChild(cmd, [...args, line.module, line.export, "reuse-port"]);
          assert.equal(
            r.code,
            0,
            `the child exited with ${r.code} instead of a rejection; stderr: ${r.stderr}`,
          );
          assert.equal(r.lines.length, 1, r.stdout);
          assert.equal(r.lines[0].listening, 0, r.stdout);
          assert.match(String(r.lines[0].message), RUNTIME === "deno" ? /--unstable-net/ : /22\.12/);
        },
      );
    }

    check(
      "interfaces",
      "interfaceAddresses() lists the host's addresses, loopback among them (the default policy refuses them)",
      async () => {
        const found = await Promise.resolve(adapter.interfaceAddresses?.());
        assert.ok(Array.isArray(found), `interfaceAddresses() gave ${String(found)}`);
        assert.ok(found.includes("127.0.0.1"), found.join(", "));
        for (const a of found) assert.doesNotMatch(a, /%/, "no zone index");
      },
    );
  });
}
