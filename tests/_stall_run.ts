/**
 * The scenario of tests/stall_test.ts, run by it inside a network namespace
 * of its own (`unshare -n`, smaller TCP buffer limits: see there). Exits 0
 * when it holds, 1 with the failure on standard error; prints its
 * measurements as `# stall ...` lines.
 *
 * Stalled tunnels: 500 tunnels through a proxy child process
 * (tests/_stall_proxy.ts: `serve()` on this runtime's adapter) whose clients
 * stop reading while their destinations write as fast as they can. Once every
 * destination is stuck (its writes no longer drain), what the proxy holds in
 * JavaScript per stalled tunnel (live heap plus the ArrayBuffers and other
 * memory its objects own, after a full collection, over the same tunnels
 * fresh and idle) must stay within 60 KiB (the 64, less room for
 * noise): a relay that reads ahead, keeps a readable buffer on top of the
 * write the client does not drain, or reads 64 KiB at a time fails it. Kernel socket buffers are not
 * counted (they are the kernel's, bounded by its own limits); the proxy's
 * RSS growth is printed as a report only (allocator noise). Then the clients
 * read again, every byte arrives (hashed) and everything closes. Every loop is
 * bounded in count and time; every socket, server and process opened here is
 * closed here.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import process from "node:process";
import type { Memory } from "./_stall_proxy.ts";
import {
  openPausedTunnel,
  processAlive,
  type ProxyProcess,
  ROOT,
  RUNTIME,
  sleep,
  socketFds,
  spawnProxy,
  startTcp,
  until,
  within,
} from "./_fixtures.ts";

const TUNNELS = Number(process.env.STALL_TUNNELS ?? 500);
const BATCH = 100;
/**
 * What edgesocks may hold per stalled tunnel, over the same tunnel fresh and idle. The bound is
 * 64 KiB; the relays hold one read of at most 48 KiB per stalled direction, and 60 leaves room for the
 * tunnel's objects and the heap's noise while a relay that went back to 64 KiB reads still fails here.
 */
const LIMIT_KIB = 60;
/** How long every destination's writes must have been waiting for a drain before the tunnels count as stuck. */
const STUCK_MS = 1_500;
/** A destination that sends this much has a client that reads: the test is broken, not the proxy. */
const MAX_SEND = 256 * 2 ** 20;
const CHUNK = 64 * 1024;
/**
 * Where the bound is not met, the check is pinned: it must still fail (a fix then shows as a failure
 * to update this). Bun delivers up to 512 KiB per read (its receive buffer, no way to ask for less),
 * and the relay must keep what the client's kernel buffer did not take of it.
 */
const KNOWN_DEFECT = RUNTIME === "bun"
  ? "Bun reads up to 512 KiB at a time and the relay keeps what the client did not take"
  : undefined;

function note(text: string): void {
  console.log(`# stall on ${RUNTIME}: ${text}`);
}

/** The proxy child: this runtime, with a collector the child can call. */
function proxyProgram(): { cmd: string; args: string[] } {
  const script = join(ROOT, "tests", "_stall_proxy.ts");
  if (RUNTIME === "deno") {
    return { cmd: process.execPath, args: ["run", "-A", "--v8-flags=--expose-gc", script] };
  }
  if (RUNTIME === "bun") return { cmd: process.execPath, args: [script] };
  return { cmd: process.execPath, args: ["--expose-gc", script] };
}

/** One memory sample of the proxy, through its control port. */
function sample(port: number): Promise<Memory> {
  return within(
    20_000,
    "the proxy's memory sample",
    new Promise<Memory>((resolve, reject) => {
      let text = "";
      const s = connect({ host: "127.0.0.1", port });
      s.setEncoding("utf8");
      s.on("data", (d: string) => (text += d));
      s.on("error", reject);
      s.on("end", () => {
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(e);
        }
      });
    }),
  );
}

/** What the proxy holds in JavaScript: live heap plus what its objects own outside it (ArrayBuffers). */
const held = (m: Memory) => m.heapUsed + m.external;

/**
 * What a stalled tunnel adds, in bytes over `from`: the memory its objects own outside the heap
 * (ArrayBuffers: the read it holds), plus the heap's growth, never less than nothing (on Node the heap
 * shrank from the idle sample to the stalled one, by 8-9 KiB per tunnel, cause not looked into; a
 * shrinking heap must not hide a buffer). JSC reports the ArrayBuffers in both of Bun's figures (measured: equal
 * growth in each), so there the larger one counts.
 */
function growth(from: Memory, to: Memory): number {
  const heap = to.heapUsed - from.heapUsed, external = to.external - from.external;
  if (RUNTIME === "bun") return Math.max(heap, external);
  return Math.max(0, heap) + external;
}

/** The lowest of three samples 300 ms apart (a held buffer is in every one; garbage in some). */
async function settled(port: number): Promise<Memory> {
  let low: Memory | undefined;
  for (let i = 0; i < 3; i++) {
    const m = await sample(port);
    if (!low || held(m) < held(low)) low = m;
    await sleep(300);
  }
  return low!;
}

/** Stops the proxy unless it already ended; never throws. */
async function stopProxy(proxy: ProxyProcess | undefined): Promise<void> {
  if (!proxy || proxy.child.exitCode !== null || !processAlive(proxy.child.pid!)) return;
  try {
    await proxy.stop();
  } catch { /* gone */ }
}

/** One destination socket: it learns its tunnel's id, then streams numbered chunks as fast as it can. */
class Sender {
  readonly socket: Socket;
  sent = 0;
  readonly hash: Hash = createHash("sha256");
  /** `Date.now()` of the write that is waiting for a drain, or 0 while writes go through. */
  blockedSince = 0;
  #seq = 0;
  #stopped = false;
  readonly #block: Buffer;
  errors: string[] = [];
  constructor(socket: Socket, block: Buffer) {
    this.socket = socket;
    this.#block = block;
    socket.on("drain", () => {
      this.blockedSince = 0;
      this.#pump();
    });
    socket.on("error", (e) => this.errors.push(`destination: ${e.message}`));
  }

  /** Sends until `limit` bytes in all have gone, or as much as the tunnel takes. */
  start(limit = MAX_SEND): void {
    this.#limit = limit;
    this.#pump();
  }

  #limit = 0;
  #pump(): void {
    while (!this.#stopped && this.sent < this.#limit) {
      const chunk = Buffer.from(this.#block);
      chunk.writeUInt32BE(this.#seq++, 0);
      this.hash.update(chunk);
      this.sent += chunk.length;
      if (!this.socket.write(chunk)) {
        this.blockedSince = Date.now();
        return;
      }
    }
  }

  /** Stops writing; what Node buffered still goes, then a FIN. */
  finish(): void {
    this.#stopped = true;
    this.socket.end();
  }
}

async function run(): Promise<void> {
  const block = createHash("sha256").update("stall").digest();
  const pattern = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i += block.length) block.copy(pattern, i);
  const senders = new Map<number, Sender>();
  const destEnded = new Set<number>();
  const dest = await startTcp((s) => {
    let head = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      head = Buffer.concat([head, d]);
      if (head.length < 4) return;
      s.off("data", onData);
      const id = head.readUInt32BE(0);
      senders.set(id, new Sender(s, pattern));
      // The client sends only its id, then its FIN at the very end.
      s.on("data", () => {});
      s.on("end", () => {
        destEnded.add(id);
        s.end();
      });
    };
    s.on("data", onData);
  });
  const proxy = await spawnProxy([], proxyProgram());
  const pid = proxy.child.pid!;
  const control = Number(/ control (\d+)/.exec(proxy.startup)![1]);
  const opened = new Set<Socket>();
  try {
    const baseSockets = socketFds(pid);
    const base = await settled(control);
    const clients: Socket[] = [];
    for (let i = 0; i < TUNNELS; i += BATCH) {
      const n = Math.min(BATCH, TUNNELS - i);
      clients.push(
        ...await Promise.all(
          Array.from({ length: n }, () => openPausedTunnel(proxy.port, dest.port, opened, 20_000)),
        ),
      );
    }
    clients.forEach((s, id) => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(id, 0);
      s.write(head);
    });
    await until(
      20_000,
      () => `destinations identified: ${senders.size} of ${TUNNELS}`,
      () => senders.size === TUNNELS,
    );
    const idle = await settled(control);

    // Every destination streams; no client reads.
    const t0 = Date.now();
    for (const sender of senders.values()) sender.start();
    const stuck = () => {
      const now = Date.now();
      let n = 0;
      for (const s of senders.values()) if (s.blockedSince && now - s.blockedSince >= STUCK_MS) n++;
      return n;
    };
    await until(120_000, () => `destinations stuck: ${stuck()} of ${TUNNELS}`, () => {
      for (const s of senders.values()) {
        assert.ok(s.sent < MAX_SEND, "a client that should not read read");
      }
      return stuck() === TUNNELS;
    });
    const stallMs = Date.now() - t0;
    const stalled = await settled(control);
    const sent = [...senders.values()].reduce((a, s) => a + s.sent, 0);
    const kib = (bytes: number) => (bytes / TUNNELS / 1024).toFixed(1);
    const perStalled = growth(idle, stalled) / TUNNELS / 1024;
    note(
      `${TUNNELS} tunnels; per tunnel idle: ${kib(held(idle) - held(base))} KiB held in JS ` +
        `(heap ${kib(idle.heapUsed - base.heapUsed)}, external ${kib(idle.external - base.external)}), ` +
        `RSS ${kib(idle.rss - base.rss)}; stalled, over idle: ${perStalled.toFixed(1)} KiB held ` +
        `(heap ${kib(stalled.heapUsed - idle.heapUsed)}, external ${
          kib(stalled.external - idle.external)
        }, ` +
        `arrayBuffers ${kib(stalled.arrayBuffers - idle.arrayBuffers)}), RSS ${
          kib(stalled.rss - idle.rss)
        } KiB; ${kib(sent)} KiB sent per tunnel into the stall (kernel buffers), in ${stallMs} ms`,
    );
    if (KNOWN_DEFECT) {
      assert.ok(
        perStalled > LIMIT_KIB,
        `known defect no longer shows (${perStalled.toFixed(1)} KiB per stalled tunnel): ${KNOWN_DEFECT}`,
      );
      note(`known defect: ${KNOWN_DEFECT}`);
    } else {
      assert.ok(
        perStalled <= LIMIT_KIB,
        `the proxy holds ${
          perStalled.toFixed(1)
        } KiB per stalled tunnel over idle, more than ${LIMIT_KIB} KiB`,
      );
    }

    // Reading resumes: every byte arrives, in order, then both FINs, then the proxy lets go.
    const received = clients.map((s, id) =>
      new Promise<{ length: number; hash: string }>((resolve, reject) => {
        const hash = createHash("sha256");
        let length = 0;
        s.on("data", (d: Buffer) => {
          hash.update(d);
          length += d.length;
        });
        s.on("end", () => {
          resolve({ length, hash: hash.digest("hex") });
          s.end();
        });
        s.on("close", () => reject(new Error(`tunnel ${id}: closed before its EOF`)));
        s.on("error", (e) => reject(new Error(`tunnel ${id}: ${e.message}`)));
        s.resume();
      })
    );
    for (const sender of senders.values()) sender.finish();
    const results = await within(120_000, "every client reading to its EOF", Promise.all(received));
    const bad: string[] = [];
    results.forEach((r, id) => {
      const sender = senders.get(id)!;
      bad.push(...sender.errors.map((e) => `tunnel ${id}: ${e}`));
      const want = sender.hash.digest("hex");
      if (r.length !== sender.sent || r.hash !== want) {
        bad.push(
          `tunnel ${id}: ${r.length} of ${sender.sent} bytes, ${r.hash === want ? "same" : "other"} hash`,
        );
      }
    });
    assert.equal(bad.length, 0, `${bad.length} problems, first ones:\n${bad.slice(0, 10).join("\n")}`);
    await until(
      30_000,
      () => `destinations that saw the client's FIN: ${destEnded.size}`,
      () => destEnded.size === TUNNELS,
    );
    for (const s of clients) s.destroy();
    await until(
      30_000,
      () => `proxy still holds ${socketFds(pid) - baseSockets} tunnel sockets`,
      () => socketFds(pid) <= baseSockets,
    );
    assert.ok(processAlive(pid), `the proxy died: ${proxy.errors()}`);
  } finally {
    for (const s of opened) s.destroy();
    await stopProxy(proxy);
    await dest.close();
  }
}

try {
  await within(220_000, "the stall scenario", run());
  process.exit(0);
} catch (error) {
  process.stderr.write(`${(error as Error)?.stack ?? error}\n`);
  process.exit(1);
}
