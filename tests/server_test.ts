/**
 * The connection driver through the public Web Streams handler, with an
 * in-memory client and a fake upstream: policy, DNS answers, timeouts,
 * pipelining, half-close, backpressure and logging, without any socket.
 * Fake dials never touch the network; the addresses they "reach" are
 * documentation ranges.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type ConnectionLog,
  createConnectionServer,
  createHandler,
  type HandlerOptions,
} from "../lib/session.ts";
import { fromWebStreams } from "../lib/streams.ts";
import type { ByteConnection, DialOptions, Resolver, RuntimeAdapter } from "../lib/runtime.ts";
import { serve, type ServeOptions } from "../lib/serve.ts";
import { SocksError } from "../lib/core/errors.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { parseCidr, parseRule } from "../lib/policy.ts";
import { hex, sleep, toHex, within } from "./_fixtures.ts";
import { concat } from "./_hex.ts";

/** One end of an in-memory duplex: write to the peer, read from the peer. */
class End {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending: Uint8Array = new Uint8Array(0);
  constructor(readable: ReadableStream<Uint8Array>, writable: WritableStream<Uint8Array>) {
    this.reader = readable.getReader();
    this.writer = writable.getWriter();
  }
  send(bytes: Uint8Array | string) {
    this.writer.write(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes).catch(() => {});
  }
  end() {
    this.writer.close().catch(() => {});
  }
  /** Reads exactly n bytes; rejects on EOF before that. */
  async read(n: number, ms = 2_000): Promise<Uint8Array> {
    return await within(
      ms,
      `read ${n} bytes`,
      (async () => {
        while (this.#pending.length < n) {
          const { value, done } = await this.reader.read();
          if (done) throw new Error(`EOF after ${this.#pending.length} of ${n} bytes`);
          const merged = new Uint8Array(this.#pending.length + value.length);
          merged.set(this.#pending);
          merged.set(value, this.#pending.length);
          this.#pending = merged;
        }
        const out = this.#pending.slice(0, n);
        this.#pending = this.#pending.slice(n);
        return out;
      })(),
    );
  }
  /**
   * Reads until EOF (or an error of the stream, reported as "error"), then
   * closes this side as a real client does, unless `keepOpen`.
   */
  async readToEnd(ms = 2_000, keepOpen = false): Promise<{ bytes: Uint8Array; how: "eof" | "error" }> {
    return await within(
      ms,
      "read to end",
      (async () => {
        const parts = [this.#pending];
        this.#pending = new Uint8Array(0);
        try {
          for (;;) {
            const { value, done } = await this.reader.read();
            if (done) {
              if (!keepOpen) this.end();
              return { bytes: concat(...parts), how: "eof" as const };
            }
            parts.push(value);
          }
        } catch {
          return { bytes: concat(...parts), how: "error" as const };
        }
      })(),
    );
  }
}

/** A connected in-memory pair: `near` is served as a ByteConnection, `far` is driven by the test. */
function pipePair(remoteAddress = { host: "127.0.0.1", port: 5555 }): { conn: ByteConnection; far: End } {
  const toNear = new TransformStream<Uint8Array, Uint8Array>();
  const toFar = new TransformStream<Uint8Array, Uint8Array>();
  const conn = fromWebStreams({ readable: toNear.readable, writable: toFar.writable, remoteAddress });
  return { conn, far: new End(toFar.readable, toNear.writable) };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Harness {
  client: End;
  dials: DialOptions[];
  upstreams: End[];
  logs: ConnectionLog[];
  done: Promise<ConnectionLog>;
}

/** Runs the handler on an in-memory client; `dial` answers with in-memory upstreams unless overridden. */
function harness(
  options: Partial<HandlerOptions> = {},
  records: Record<string, string[]> = {},
  signal?: AbortSignal,
): Harness {
  const dials: DialOptions[] = [];
  const upstreams: End[] = [];
  const logs: ConnectionLog[] = [];
  const resolver: Resolver = {
    lookup: (name) =>
      records[name]
        ? Promise.resolve(records[name])
        : Promise.reject(new SocksError(ReplyCode.HostUnreachable, `${name}: NXDOMAIN`)),
    reverse: (ip) => {
      const hit = Object.entries(records).find(([, ips]) => ips.includes(ip));
      return hit
        ? Promise.resolve([hit[0]])
        : Promise.reject(new SocksError(ReplyCode.HostUnreachable, `${ip}: no PTR`));
    },
  };
  const dial = options.dial ??
    ((o: DialOptions) => {
      dials.push(o);
      const { conn, far } = pipePair();
      upstreams.push(far);
      return Promise.resolve(Object.assign(conn, { localAddress: { host: "1.2.3.1", port: 0x1234 } }));
    });
  const handle = createHandler({
    resolver,
    ...options,
    // Not the 300 s default: a test that fails with a tunnel open must not keep the process alive.
    timeouts: { idle: 2_000, ...options.timeouts },
    dial: (o) => (options.dial && dials.push(o), dial(o)),
    onLog: (l) => logs.push(l),
  });
  const { conn, far } = pipePair();
  return { client: far, dials, upstreams, logs, done: handle(conn, signal) };
}

const PUBLIC = "1.2.3.7"; // a public address, only ever "dialled" by the fake dial
const PUBLIC_HEX = "01 02 03 07";

describe("driver: CONNECT", () => {
  it("pipelined greeting + request + data in one chunk: reply with the bound address, data forwarded", async () => {
    const h = harness();
    h.client.send(
      concat(hex(`05 01 00  05 01 00 01 ${PUBLIC_HEX} 00 50`), new TextEncoder().encode("early data")),
    );
    assert.equal(toHex(await h.client.read(2)), "05 00");
    assert.equal(toHex(await h.client.read(10)), "05 00 00 01 01 02 03 01 12 34");
    assert.deepEqual(h.dials.map((d) => [d.host, d.port]), [[PUBLIC, 80]]);
    assert.equal(text(await h.upstreams[0].read(10)), "early data");
    h.upstreams[0].send("response");
    assert.equal(text(await h.client.read(8)), "response");
    h.client.end();
    assert.equal((await h.upstreams[0].readToEnd()).how, "eof");
    h.upstreams[0].end();
    assert.equal((await h.client.readToEnd()).how, "eof");
    const log = await h.done;
    assert.equal(log.reply, "granted");
    assert.equal(log.up, 10);
    assert.equal(log.down, 8);
    assert.equal(log.dialed, PUBLIC);
    assert.equal(log.reason, "done");
  });

  it("half-close from the client: the upstream gets EOF and can still send until it closes", async () => {
    const h = harness();
    h.client.send(hex(`04 01 00 50 ${PUBLIC_HEX} 00`));
    assert.equal(toHex(await h.client.read(8)), "00 5a 12 34 01 02 03 01");
    h.client.send("request");
    h.client.end();
    const got = await h.upstreams[0].readToEnd(2_000, true);
    assert.deepEqual([text(got.bytes), got.how], ["request", "eof"]);
    for (let i = 0; i < 3; i++) h.upstreams[0].send(`part${i}`);
    h.upstreams[0].end();
    const back = await h.client.readToEnd();
    assert.deepEqual([text(back.bytes), back.how], ["part0part1part2", "eof"]);
    assert.equal((await h.done).reason, "done");
  });

  it("half-close from the upstream: the client gets EOF and can still send", async () => {
    const h = harness();
    h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await h.client.read(12);
    h.upstreams[0].send("banner");
    h.upstreams[0].end();
    const back = await h.client.readToEnd(2_000, true);
    assert.deepEqual([text(back.bytes), back.how], ["banner", "eof"]);
    h.client.send("late upload");
    h.client.end();
    const got = await h.upstreams[0].readToEnd();
    assert.deepEqual([text(got.bytes), got.how], ["late upload", "eof"]);
    await h.done;
  });

  it("a slow reader stalls the upstream: at most a few chunks are in flight", async () => {
    const h = harness();
    h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await h.client.read(12);
    let accepted = 0;
    const chunk = new Uint8Array(16 * 1024);
    const writer = h.upstreams[0].writer;
    const pushing = (async () => {
      for (let i = 0; i < 1000; i++) {
        await writer.write(chunk);
        accepted++;
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    // Without backpressure all 1000 chunks (16 MiB) would be accepted at once.
    assert.ok(accepted <= 8, `upstream could write ${accepted} chunks to a client that reads nothing`);
    const all = await h.client.read(1000 * chunk.length, 10_000);
    assert.equal(all.length, 1000 * chunk.length);
    await pushing;
    h.client.end();
    h.upstreams[0].end();
    assert.equal((await h.done).down, 1000 * chunk.length);
  });

  it("an upstream failure mid-stream aborts the client side", async () => {
    const h = harness();
    h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await h.client.read(12);
    await h.upstreams[0].writer.abort(new Error("reset by peer"));
    const log = await within(2_000, "handler end", h.done);
    assert.match(log.reason, /relay error/);
    // The client sees its stream fail (a reset), not a clean EOF that would pass for a complete reply.
    assert.equal((await h.client.readToEnd()).how, "error");
  });

  it("refused, unreachable and timed-out dials map to 05, 04 and 06", async () => {
    for (
      const [code, dial] of [
        ["05", () => Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "refused"))],
        ["04", () => Promise.reject(new SocksError(ReplyCode.HostUnreachable, "unreachable"))],
        ["01", () => Promise.reject(new Error("something odd"))],
        ["06", () => new Promise<never>(() => {})],
      ] as const
    ) {
      const h = harness({ dial, timeouts: { connect: 100 } });
      h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
      assert.equal(toHex(await h.client.read(12)), `05 00 05 ${code} 00 01 00 00 00 00 00 00`);
      assert.equal((await h.client.readToEnd()).how, "eof");
      assert.equal((await h.done).reply, `0x${code}`);
    }
  });

  it("a name resolving to several addresses: the first allowed one that answers is used", async () => {
    let calls = 0;
    const h = harness({
      dial: () => (++calls === 1
        ? Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "no"))
        : new Promise<never>(() => {})),
      timeouts: { connect: 100 },
    }, { "multi.example": ["10.1.1.1", "1.2.3.8", "1.2.3.9"] });
    h.client.send(hex("05 01 00 05 01 00 03 0d"));
    h.client.send("multi.example");
    h.client.send(hex("01 bb"));
    assert.equal(toHex(await h.client.read(12)), "05 00 05 06 00 01 00 00 00 00 00 00");
    assert.deepEqual(h.dials.map((d) => d.host), ["1.2.3.8", "1.2.3.9"]);
    await h.done;
  });
});

describe("driver: BIND", () => {
  it("a client connection that fails (a WebSocket's 1011) ends the tunnel to the peer at once", async () => {
    // The peer comes in while the wait for it has a read of the client pending, which the relay takes over:
    // that hand-over must keep the connection's failure signal, or the tunnel stays open until a timeout.
    let arrive: ((conn: ByteConnection) => void) | undefined;
    const failures: ((error: Error) => void)[] = [];
    const handle = createHandler({
      bind: true,
      policy: { allowPrivate: true },
      timeouts: { idle: 60_000, connect: 60_000 },
      dial: () => Promise.reject(new Error("unused")),
      resolver: {
        lookup: () => Promise.reject(new Error("x")),
        reverse: () => Promise.reject(new Error("x")),
      },
      openListener: (_address, onConnection) => {
        arrive = onConnection;
        return Promise.resolve({
          address: { host: "127.0.0.1", port: 0x4000 },
          close: () => Promise.resolve(),
        });
      },
    });
    const { conn, far } = pipePair({ host: "127.0.0.1", port: 5555 });
    const client = Object.assign(conn, {
      localAddress: { host: "127.0.0.1", port: 1080 },
      onFailure: (listener: (error: Error) => void) => void failures.push(listener),
    });
    const done = handle(client);
    far.send(hex("05 01 00 05 02 00 01 7f 00 00 01 00 00"));
    assert.equal(toHex(await far.read(12)), "05 00 05 00 00 01 7f 00 00 01 40 00");
    await sleep(20); // the wait reads the client (to see it close) while no peer has come
    const peer = pipePair({ host: "127.0.0.1", port: 6000 });
    arrive!(peer.conn);
    assert.equal(toHex(await far.read(10)), "05 00 00 01 7f 00 00 01 17 70");
    peer.far.send("from the peer");
    assert.equal(text(await far.read(13)), "from the peer");
    assert.ok(failures.length > 0, "the relay watches the client's failures");
    for (const listener of failures) listener(new Error("closed by the peer with 1011"));
    const log = await within(2_000, "the tunnel's end", done);
    assert.equal(log.outcome, "tunnel_error");
    assert.match(log.reason, /1011/);
    await within(2_000, "the peer connection's end", peer.far.readToEnd());
  });
});

describe("driver: destination policy", () => {
  const cases: [string, string][] = [
    ["loopback IPv4", "05 01 00 05 01 00 01 7f 00 00 01 00 50"],
    ["IPv4-mapped loopback", "05 01 00 05 01 00 04 00000000000000000000ffff7f000001 00 50"],
    ["IPv6 loopback", "05 01 00 05 01 00 04 00000000000000000000000000000001 00 50"],
    ["unspecified", "05 01 00 05 01 00 01 00 00 00 00 00 50"],
    ["metadata", "05 01 00 05 01 00 01 a9 fe a9 fe 00 50"],
    [
      "name resolving to a private address",
      "05 01 00 05 01 00 03 0d 69 6e 74 65 72 6e 61 6c 2e 63 6f 72 70 00 50",
    ],
  ];
  for (const [what, bytes] of cases) {
    it(`refuses ${what} with 02 and never dials`, async () => {
      const h = harness({}, { "internal.corp": ["10.0.0.5"] });
      h.client.send(hex(bytes));
      assert.equal(toHex(await h.client.read(12)), "05 00 05 02 00 01 00 00 00 00 00 00");
      assert.equal(h.dials.length, 0);
      await h.done;
    });
  }

  it("SOCKS4 gets 5B for a refused destination", async () => {
    const h = harness();
    h.client.send(hex("04 01 00 50 7f 00 00 01 00"));
    assert.equal(toHex(await h.client.read(8)), "00 5b 00 00 00 00 00 00");
    assert.equal(h.dials.length, 0);
    await h.done;
  });

  it("allowPrivate lets loopback through", async () => {
    const h = harness({ policy: { allowPrivate: true } });
    h.client.send(hex("05 01 00 05 01 00 01 7f 00 00 01 00 50"));
    assert.equal(toHex(await h.client.read(12)), "05 00 05 00 00 01 01 02 03 01 12 34");
    assert.equal(h.dials[0].host, "127.0.0.1");
    h.client.end();
    h.upstreams[0].end();
    await h.done;
  });

  it("CONNECT_DIR is a tunnel by default and 02 / 5B when denied", async () => {
    const ok = harness();
    ok.client.send(hex(`05 01 00 05 f2 00 01 ${PUBLIC_HEX} 23 29`));
    assert.equal(toHex(await ok.client.read(12)), "05 00 05 00 00 01 01 02 03 01 12 34");
    ok.client.end();
    ok.upstreams[0].end();
    assert.equal((await ok.done).command, "connect_dir");
    const denied = harness({ policy: { allowConnectDir: false } });
    denied.client.send(hex(`05 01 00 05 f2 00 01 ${PUBLIC_HEX} 23 29`));
    assert.equal(toHex(await denied.client.read(12)), "05 00 05 02 00 01 00 00 00 00 00 00");
    const denied4 = harness({ policy: { allowConnectDir: false } });
    denied4.client.send(hex(`04 f2 23 29 ${PUBLIC_HEX} 00`));
    assert.equal(toHex(await denied4.client.read(8)), "00 5b 00 00 00 00 00 00");
    assert.equal(denied.dials.length + denied4.dials.length, 0);
  });
});

describe("driver: RESOLVE and RESOLVE_PTR", () => {
  const records = { "a.example": ["1.2.3.20", "2a00:db8::20"], "six.example": ["2a00:db8::6"] };
  const resolve5 = (name: string) =>
    concat(
      hex(`05 01 00 05 f0 00 03 ${name.length.toString(16).padStart(2, "0")}`),
      new TextEncoder().encode(name),
      hex("00 00"),
    );

  it("SOCKS5 RESOLVE answers IPv4 first, IPv6 with ATYP 4, failures with 04 / ATYP 1", async () => {
    for (
      const [name, reply] of [
        ["a.example", "05 00 00 01 01 02 03 14 00 00"],
        ["six.example", "05 00 00 04 2a 00 0d b8 00 00 00 00 00 00 00 00 00 00 00 06 00 00"],
        ["nx.example", "05 04 00 01 00 00 00 00 00 00"],
      ]
    ) {
      const h = harness({}, records);
      h.client.send(resolve5(name));
      const got = await h.client.readToEnd();
      assert.equal(toHex(got.bytes), "05 00 " + reply, name);
      assert.equal(h.dials.length, 0);
      await h.done;
    }
  });

  it("SOCKS4A RESOLVE answers IPv4 only (5B when the name has only IPv6)", async () => {
    for (
      const [name, reply] of [["a.example", "00 5a 00 00 01 02 03 14"], [
        "six.example",
        "00 5b 00 00 00 00 00 00",
      ]]
    ) {
      const h = harness({}, records);
      h.client.send(concat(hex("04 f0 00 00 00 00 00 01 00"), new TextEncoder().encode(name), hex("00")));
      assert.equal(toHex((await h.client.readToEnd()).bytes), reply, name);
      await h.done;
    }
  });

  it("an IP literal resolves to itself without DNS", async () => {
    const h = harness({
      resolver: {
        lookup: () => Promise.reject(new Error("must not be called")),
        reverse: () => Promise.reject(new Error("no")),
      },
    });
    h.client.send(hex("05 01 00 05 f0 00 01 0a 00 00 01 00 00"));
    assert.equal(toHex((await h.client.readToEnd()).bytes), "05 00 05 00 00 01 0a 00 00 01 00 00");
    await h.done;
  });

  it("RESOLVE_PTR answers with ATYP 3, failures with 04", async () => {
    const h = harness({}, records);
    h.client.send(hex("05 01 00 05 f1 00 01 01 02 03 14 00 00"));
    assert.equal(
      toHex((await h.client.readToEnd()).bytes),
      "05 00 05 00 00 03 09 " + toHex(new TextEncoder().encode("a.example")) + " 00 00",
    );
    const miss = harness({}, records);
    miss.client.send(hex("05 01 00 05 f1 00 04 2a 00 0d b8 00 00 00 00 00 00 00 00 00 00 00 99 00 00"));
    assert.equal(toHex((await miss.client.readToEnd()).bytes), "05 00 05 04 00 01 00 00 00 00 00 00");
    await Promise.all([h.done, miss.done]);
  });

  it("a lookup slower than the connect timeout answers 06", async () => {
    const h = harness({
      resolver: { lookup: () => new Promise<never>(() => {}), reverse: () => new Promise<never>(() => {}) },
      timeouts: { connect: 100 },
    });
    h.client.send(resolve5("slow.example"));
    assert.equal(toHex((await h.client.readToEnd()).bytes), "05 00 05 06 00 01 00 00 00 00 00 00");
    await h.done;
  });
});

describe("driver: server shutdown", () => {
  /** A shutdown signal that counts the listeners registered on it and not yet removed. */
  function countedSignal() {
    const controller = new AbortController();
    const signal = controller.signal;
    const listeners = new Set<unknown>();
    const target = EventTarget.prototype;
    signal.addEventListener = (type: string, fn: EventListenerOrEventListenerObject | null, o?: unknown) => {
      listeners.add(fn);
      target.addEventListener.call(signal, type, fn, o as AddEventListenerOptions);
    };
    signal.removeEventListener = (
      type: string,
      fn: EventListenerOrEventListenerObject | null,
      o?: unknown,
    ) => {
      listeners.delete(fn);
      target.removeEventListener.call(signal, type, fn, o as EventListenerOptions);
    };
    return { controller, signal, listeners };
  }
  const never = () => new Promise<never>(() => {});

  for (
    const [what, bytes, options] of [
      ["a slow dial", `05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`, { dial: never }],
      ["a slow RESOLVE", "05 01 00 05 f0 00 03 04 73 6c 6f 77 00 00", {
        resolver: { lookup: never, reverse: never },
      }],
      ["a slow RESOLVE_PTR", `05 01 00 05 f1 00 01 ${PUBLIC_HEX} 00 00`, {
        resolver: { lookup: never, reverse: never },
      }],
    ] as const
  ) {
    it(`a shutdown during ${what} answers 01 at once`, async () => {
      const { controller, signal } = countedSignal();
      const h = harness({ ...options, timeouts: { connect: 60_000 } }, {}, signal);
      h.client.send(hex(bytes));
      assert.equal(toHex(await h.client.read(2)), "05 00");
      await new Promise((r) => setTimeout(r, 20));
      controller.abort();
      const reply = await within(1_000, "the reply after shutdown", h.client.readToEnd());
      assert.equal(toHex(reply.bytes.subarray(0, 2)), "05 01");
      assert.equal((await h.done).reason, "server shutting down");
    });
  }

  it("open connections share one listener on the shutdown signal, which stops them all", async () => {
    const { controller, signal, listeners } = countedSignal();
    const tunnels = Array.from({ length: 20 }, () => harness({}, {}, signal));
    for (const h of tunnels) h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    for (const h of tunnels) await h.client.read(12);
    // One listener however many connections: none of them adds or searches a list of its own.
    assert.equal(listeners.size, 1);
    controller.abort();
    for (const h of tunnels) {
      assert.equal((await within(1_000, "a tunnel's end", h.done)).reason, "server shutting down");
    }
    // (the listener was registered `once`: the abort removed it)
  });

  it("a connection leaves no listener on the server's shutdown signal once it has ended", async () => {
    const { signal, listeners } = countedSignal();
    const refused = harness(
      { dial: () => Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "no")) },
      {},
      signal,
    );
    refused.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await refused.client.readToEnd();
    await refused.done;
    const tunnel = harness({}, {}, signal);
    tunnel.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await tunnel.client.read(12);
    tunnel.client.end();
    tunnel.upstreams[0].end();
    await tunnel.upstreams[0].readToEnd();
    await tunnel.client.readToEnd();
    await tunnel.done;
    assert.equal(listeners.size, 0);
  });
});

describe("driver: the client's address", () => {
  it("is looked up only for those who read it (serve() asks for it when it logs or has client rules)", async () => {
    for (const clientAddress of [false, true]) {
      let lookups = 0;
      const { conn, far } = pipePair();
      const counted = Object.create(conn, {
        remoteAddress: { get: () => (lookups++, { host: "127.0.0.1", port: 5555 }) },
      }) as ByteConnection;
      const serveConnection = createConnectionServer({
        dial: () => Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "no")),
        resolver: { lookup: () => Promise.resolve([]), reverse: () => Promise.resolve([]) },
      }, { clientAddress });
      const done = new Promise<ConnectionLog>((resolve) => serveConnection(counted, undefined, resolve));
      far.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
      await far.readToEnd();
      const log = await done;
      assert.equal(lookups, clientAddress ? 1 : 0);
      assert.equal(log.client, clientAddress ? "127.0.0.1:5555" : undefined);
    }
  });
});

describe("driver: authentication, timeouts and logs", () => {
  const users = new Map([["alice", "s3cret pass:with colon"]]);
  const auth = (user: string, pass: string) =>
    concat(
      hex(`01 ${user.length.toString(16).padStart(2, "0")}`),
      new TextEncoder().encode(user),
      hex(pass.length.toString(16).padStart(2, "0")),
      new TextEncoder().encode(pass),
    );

  it("username/password: success relays, and the log names the user but never the password", async () => {
    const h = harness({ users });
    h.client.send(
      concat(
        hex("05 02 00 02"),
        auth("alice", "s3cret pass:with colon"),
        hex(`05 01 00 01 ${PUBLIC_HEX} 00 50`),
      ),
    );
    assert.equal(toHex(await h.client.read(14)), "05 02 01 00 05 00 00 01 01 02 03 01 12 34");
    h.client.end();
    h.upstreams[0].end();
    const log = await h.done;
    assert.equal(log.user, "alice");
    assert.ok(!JSON.stringify(h.logs).includes("s3cret"), "password in log");
  });

  it("a wrong password gets 01 01 and a close; no-auth is refused with FF; SOCKS4 is refused", async () => {
    const bad = harness({ users });
    bad.client.send(concat(hex("05 01 02"), auth("alice", "wrong")));
    assert.equal(toHex((await bad.client.readToEnd()).bytes), "05 02 01 01");
    assert.ok(!JSON.stringify(await bad.done).includes("wrong"));
    const noauth = harness({ users });
    noauth.client.send(hex("05 01 00"));
    assert.equal(toHex((await noauth.client.readToEnd()).bytes), "05 ff");
    const v4 = harness({ users });
    v4.client.send(hex(`04 01 00 50 ${PUBLIC_HEX} 61 6c 69 63 65 00`));
    assert.equal(toHex((await v4.client.readToEnd()).bytes), "00 5b 00 00 00 00 00 00");
    assert.equal(bad.dials.length + noauth.dials.length + v4.dials.length, 0);
  });

  it("unknown user, empty fields and maximal (255-byte) fields all get 01 01 and a close", async () => {
    for (
      const [user, pass] of [["mallory", "s3cret pass:with colon"], ["", "x"], ["alice", ""], [
        "a".repeat(255),
        "p".repeat(255),
      ]]
    ) {
      const h = harness({ users });
      h.client.send(concat(hex("05 01 02"), auth(user, pass)));
      assert.equal(toHex((await h.client.readToEnd()).bytes), "05 02 01 01", `${user.length}:${pass.length}`);
      const log = await h.done;
      assert.match(log.reason, /authentication failed/);
      assert.equal(log.user, user, "the record names the user name tried");
      assert.ok(!JSON.stringify(log).includes(pass) || pass === "", "password in log");
      assert.equal(h.dials.length, 0);
    }
  });

  it("a client that sends nothing is closed at the handshake timeout", async () => {
    const h = harness({ timeouts: { handshake: 150 } });
    const t0 = Date.now();
    const end = await h.client.readToEnd(2_000);
    assert.equal(end.bytes.length, 0);
    assert.ok(Date.now() - t0 >= 100, "closed before the timeout");
    assert.equal((await h.done).reason, "handshake timeout");
  });

  it("a partial request is also closed at the handshake timeout", async () => {
    const h = harness({ timeouts: { handshake: 150 } });
    h.client.send(hex("05 01 00 05 01 00"));
    const end = await h.client.readToEnd(2_000);
    assert.equal(toHex(end.bytes), "05 00");
    assert.equal((await h.done).reason, "handshake timeout");
  });

  it("an idle tunnel is closed at the idle timeout", async () => {
    const h = harness({ timeouts: { idle: 150 } });
    h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    await h.client.read(12);
    h.upstreams[0].send("x");
    await h.client.read(1);
    const t0 = Date.now();
    await h.client.readToEnd(2_000);
    assert.ok(Date.now() - t0 >= 100, "closed before the idle timeout");
    assert.equal((await h.done).reason, "idle timeout");
  });

  it("garbage gets no reply and a close; HTTP gets the 501 page", async () => {
    const g = harness();
    g.client.send(hex("16 03 01 00 a5 01 00 00"));
    assert.equal((await g.client.readToEnd()).bytes.length, 0);
    const http = harness();
    http.client.send("GET / HTTP/1.1\r\nHost: web.test\r\n\r\n");
    const page = text((await http.client.readToEnd()).bytes);
    assert.match(page, /^HTTP\/1\.0 501 /);
    assert.match(page, /SOCKS/);
    await Promise.all([g.done, http.done]);
  });

  it("a throwing log hook does not break serving", async () => {
    const h = harness();
    const handle = createHandler({
      dial: () => Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "no")),
      resolver: {
        lookup: () => Promise.reject(new Error("x")),
        reverse: () => Promise.reject(new Error("x")),
      },
      onLog: () => {
        throw new Error("log sink broken");
      },
    });
    const { conn, far } = pipePair();
    const done = handle(conn);
    far.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    assert.equal(toHex((await far.readToEnd()).bytes), "05 00 05 05 00 01 00 00 00 00 00 00");
    assert.equal((await done).reply, "0x05");
    h.client.end();
  });
});

describe("driver: destination rules and client policy", () => {
  it("a host rule refuses before any DNS query", async () => {
    let lookups = 0;
    const h = harness({
      policy: { rules: [parseRule("deny", "*.corp.example")] },
      resolver: {
        lookup: () => (lookups++, Promise.resolve(["1.2.3.9"])),
        reverse: () => Promise.reject(new Error("unused")),
      },
    });
    h.client.send(hex(`05 01 00 05 01 00 03 0f ${toHex(new TextEncoder().encode("db.corp.example"))} 00 50`));
    assert.equal(toHex(await h.client.read(12)), "05 00 05 02 00 01 00 00 00 00 00 00");
    assert.equal(lookups, 0);
    assert.equal(h.dials.length, 0);
    await h.done;
  });

  it("RESOLVE and RESOLVE_PTR refuse private answers and targets by default, and a rule opens them", async () => {
    const records = { "inside.example": ["10.0.0.7"] };
    const resolve = hex(`05 01 00 05 f0 00 03 0e ${toHex(new TextEncoder().encode("inside.example"))} 00 00`);
    const closed = harness({}, records);
    closed.client.send(resolve);
    assert.equal(toHex((await closed.client.readToEnd()).bytes), "05 00 05 02 00 01 00 00 00 00 00 00");
    const open = harness({ policy: { rules: [parseRule("allow", "resolve@10.0.0.0/8")] } }, records);
    open.client.send(resolve);
    assert.equal(toHex((await open.client.readToEnd()).bytes), "05 00 05 00 00 01 0a 00 00 07 00 00");
    const ptr = harness({}, records);
    ptr.client.send(hex("05 01 00 05 f1 00 01 0a 00 00 07 00 00"));
    assert.equal(toHex((await ptr.client.readToEnd()).bytes), "05 00 05 02 00 01 00 00 00 00 00 00");
    await Promise.all([closed.done, open.done, ptr.done]);
  });

  it("a client outside the client policy is closed without a reply", async () => {
    const h = harness({ clientPolicy: { rules: [{ action: "deny", cidr: parseCidr("127.0.0.0/8") }] } });
    h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    assert.equal((await h.client.readToEnd()).bytes.length, 0);
    assert.equal((await h.done).reason, "client not allowed by policy");
    assert.equal(h.dials.length, 0);
  });
});

describe("driver: one record per connection, with a stable outcome", () => {
  const connect = hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`);
  const users = new Map([["alice", "pw"]]);
  const cases: {
    outcome: string;
    reply: string;
    options?: Partial<HandlerOptions>;
    signal?: AbortSignal;
    play: (h: Harness) => Promise<unknown>;
  }[] = [
    {
      outcome: "tunnel_done",
      reply: "granted",
      play: async (h) => {
        h.client.send(connect);
        await h.client.read(12);
        h.client.end();
        h.upstreams[0].end();
      },
    },
    {
      outcome: "tunnel_idle",
      reply: "granted",
      options: { timeouts: { idle: 100 } },
      play: async (h) => (h.client.send(connect), await h.client.read(12)),
    },
    {
      outcome: "tunnel_error",
      reply: "granted",
      play: async (h) => {
        h.client.send(connect);
        await h.client.read(12);
        await h.upstreams[0].writer.abort(new Error("reset by peer"));
      },
    },
    {
      outcome: "refused_policy",
      reply: "0x02",
      play: (h) => (h.client.send(hex("05 01 00 05 01 00 01 7f 00 00 01 00 50")), h.client.readToEnd()),
    },
    {
      outcome: "refused_policy",
      reply: "0x02",
      options: { policy: { allowConnectDir: false } },
      play: (h) => (h.client.send(hex(`05 01 00 05 f2 00 01 ${PUBLIC_HEX} 00 50`)), h.client.readToEnd()),
    },
    {
      outcome: "dns_failed",
      reply: "0x04",
      play: (
        h,
      ) => (h.client.send(hex("05 01 00 05 01 00 03 07 6e 6f 2e 74 65 73 74 00 50")), h.client.readToEnd()),
    },
    {
      outcome: "upstream_failed",
      reply: "0x05",
      options: { dial: () => Promise.reject(new SocksError(ReplyCode.ConnectionRefused, "refused")) },
      play: (h) => (h.client.send(connect), h.client.readToEnd()),
    },
    {
      outcome: "connect_timeout",
      reply: "0x06",
      options: { dial: () => new Promise<never>(() => {}), timeouts: { connect: 100 } },
      play: (h) => (h.client.send(connect), h.client.readToEnd()),
    },
    {
      outcome: "resolved",
      reply: "0x00",
      play: (
        h,
      ) => (h.client.send(hex("05 01 00 05 f0 00 03 09 61 2e 65 78 61 6d 70 6c 65 00 00")),
        h.client.readToEnd()),
    },
    {
      outcome: "auth_failed",
      reply: "none",
      options: { users },
      play: (h) => (h.client.send(hex("05 01 02 01 05 61 6c 69 63 65 02 6e 6f")), h.client.readToEnd()),
    },
    {
      outcome: "auth_unavailable",
      reply: "none",
      options: { users },
      play: (h) => (h.client.send(hex("05 01 00")), h.client.readToEnd()),
    },
    {
      outcome: "handshake_timeout",
      reply: "none",
      options: { timeouts: { handshake: 100 } },
      play: (h) => h.client.readToEnd(),
    },
    {
      outcome: "client_closed",
      reply: "none",
      play: (h) => (h.client.send(hex("05 01")), h.client.end(), h.client.readToEnd()),
    },
    {
      outcome: "http_request",
      reply: "none",
      play: (h) => (h.client.send("GET / HTTP/1.1\r\n\r\n"), h.client.readToEnd()),
    },
    {
      outcome: "protocol_error",
      reply: "none",
      play: (h) => (h.client.send(hex("16 03 01 00 a5")), h.client.readToEnd()),
    },
    {
      outcome: "unsupported",
      reply: "0x07",
      play: (h) => (h.client.send(hex(`05 01 00 05 02 00 01 ${PUBLIC_HEX} 00 50`)), h.client.readToEnd()),
    },
    {
      outcome: "dns_failed",
      reply: "0x5b",
      play: (
        h,
      ) => (h.client.send(hex("04 f0 00 00 00 00 00 01 00 73 69 78 2e 65 78 61 6d 70 6c 65 00")),
        h.client.readToEnd()),
    },
    {
      outcome: "protocol_error",
      reply: "0x01",
      play: (h) => (h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 00`)), h.client.readToEnd()),
    },
    {
      outcome: "refused_client",
      reply: "none",
      options: { clientPolicy: { rules: [{ action: "deny", cidr: parseCidr("127.0.0.0/8") }] } },
      play: (h) => h.client.readToEnd(),
    },
    {
      outcome: "shutdown",
      reply: "none",
      signal: AbortSignal.abort(),
      play: (h) => h.client.readToEnd(),
    },
  ];
  for (const c of cases) {
    it(`${c.outcome} (reply ${c.reply})`, async () => {
      const h = harness(c.options, { "a.example": ["1.2.3.20"], "six.example": ["2a00:db8::6"] }, c.signal);
      await c.play(h);
      const record = await within(2_000, "the record", h.done);
      assert.deepEqual([record.outcome, record.reply], [c.outcome, c.reply]);
      assert.equal(h.logs.length, 1, "exactly one record reaches the log");
      assert.equal(h.logs[0], record);
    });
  }
});

describe("serve(): admission and rules", () => {
  /** A runtime adapter over in-memory pairs: `accept()` hands the server a new client connection. */
  function memoryServer(options: ServeOptions, interfaces?: () => string[]) {
    let onConnection: ((conn: ByteConnection) => void) | undefined;
    const upstreams: End[] = [];
    const records: ConnectionLog[] = [];
    const adapter: RuntimeAdapter = {
      name: "memory",
      dial: () => {
        const { conn, far } = pipePair();
        upstreams.push(far);
        return Promise.resolve(Object.assign(conn, { localAddress: { host: "1.2.3.1", port: 0x1234 } }));
      },
      listen: (address, accept) => {
        onConnection = accept;
        return Promise.resolve({ address, close: () => Promise.resolve() });
      },
      resolver: () => ({ lookup: () => Promise.resolve([]), reverse: () => Promise.resolve([]) }),
      ...(interfaces ? { interfaceAddresses: interfaces } : {}),
    };
    const started = serve(adapter, {
      listen: [{ host: "127.0.0.1", port: 1 }],
      onLog: (r) => records.push(r),
      ...options,
    });
    const accept = (remote?: { host: string; port: number }) => {
      const { conn, far } = pipePair(remote);
      onConnection!(conn);
      return far;
    };
    return { started, accept, upstreams, records };
  }

  it("update() changes the rules for new connections; an open tunnel keeps the ones it started with", async () => {
    const m = memoryServer({});
    const server = await m.started;
    const first = m.accept();
    first.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    assert.equal(toHex(await first.read(12)), "05 00 05 00 00 01 01 02 03 01 12 34");
    server.update({ policy: { rules: [parseRule("deny", "*")] }, timeouts: { idle: 50 } });
    const second = m.accept();
    second.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
    assert.equal(toHex((await second.readToEnd()).bytes), "05 00 05 02 00 01 00 00 00 00 00 00");
    // The first tunnel still relays, and is not cut by the new, shorter idle timeout.
    await sleep(200);
    m.upstreams[0].send("still here");
    assert.equal(text(await first.read(10)), "still here");
    first.end();
    m.upstreams[0].end();
    await first.readToEnd();
    await server.close();
    assert.deepEqual(m.records.map((r) => r.outcome).sort(), ["refused_policy", "tunnel_done"]);
  });

  it("a connection over a cap is closed at once and recorded as refused_limit", async () => {
    const m = memoryServer({ maxConnectionsPerClient: 1 });
    const server = await m.started;
    const first = m.accept();
    const second = m.accept();
    assert.equal((await second.readToEnd()).bytes.length, 0);
    assert.deepEqual(
      m.records.map((r) => [r.outcome, r.reason, r.client]),
      [["refused_limit", "per-client connection limit reached", "127.0.0.1:5555"]],
    );
    first.end();
    await server.close();
  });

  it("refuses the host's own addresses, read from the runtime at start and again on a timer", async () => {
    let interfaces = ["1.2.3.4", "fe80::1"];
    const m = memoryServer({ hostAddressRefresh: 50 }, () => interfaces);
    const server = await m.started;
    const connect = async (ipHex: string) => {
      const c = m.accept();
      c.send(hex(`05 01 00 05 01 00 01 ${ipHex} 00 16`));
      const reply = toHex((await c.read(12)).subarray(2, 4));
      c.end();
      m.upstreams.forEach((u) => u.end());
      await c.readToEnd();
      return reply;
    };
    try {
      assert.equal(await connect("01 02 03 04"), "05 02");
      assert.equal(await connect("01 02 03 07"), "05 00");
      interfaces = ["1.2.3.4", "1.2.3.7"];
      await within(
        5_000,
        "the new interface list",
        (async () => {
          while (await connect("01 02 03 07") !== "05 02") await sleep(20);
        })(),
      );
    } finally {
      await server.close();
    }
  });

  it("IPv6 clients share a per-client cap per /64; another /64 has its own", async () => {
    const m = memoryServer({ maxConnectionsPerClient: 1 });
    const server = await m.started;
    const first = m.accept({ host: "2001:db8:1:2::10", port: 1 });
    const sameNet = m.accept({ host: "2001:db8:1:2:ffff::1", port: 2 });
    assert.equal((await sameNet.readToEnd()).bytes.length, 0);
    const otherNet = m.accept({ host: "2001:db8:1:3::10", port: 3 });
    otherNet.send(hex("05 01 00"));
    assert.equal(toHex(await otherNet.read(2)), "05 00");
    assert.deepEqual(m.records.map((r) => [r.outcome, r.client]), [[
      "refused_limit",
      "[2001:db8:1:2:ffff::1]:2",
    ]]);
    first.end();
    otherNet.end();
    await server.close();
  });

  it("failed logins make a client wait: its next connection is closed unanswered, others go on", async () => {
    const m = memoryServer({
      users: new Map([["alice", "pw"]]),
      authBackoff: { failures: 3, windowMs: 60_000, blockMs: 60_000 },
    });
    const server = await m.started;
    /** Logs in as alice; the server's answer up to its close (or the first 4 bytes of a success). */
    const login = async (host: string, password: string) => {
      const c = m.accept({ host, port: 1 });
      const pw = new TextEncoder().encode(password);
      c.send(concat(hex("05 01 02 01 05"), new TextEncoder().encode("alice"), Uint8Array.of(pw.length), pw));
      if (password !== "pw") return toHex((await c.readToEnd()).bytes);
      const got = await c.readToEnd(2_000, true).catch(() => undefined);
      c.end();
      return got ? toHex(got.bytes) : "open";
    };
    try {
      for (let i = 0; i < 3; i++) assert.equal(await login("192.0.2.9", "wrong"), "05 02 01 01");
      assert.equal(
        await login("192.0.2.9", "pw"),
        "",
        "blocked: closed with no reply, even with the right password",
      );
      const other = m.accept({ host: "192.0.2.10", port: 2 });
      other.send(
        concat(
          hex("05 01 02 01 05"),
          new TextEncoder().encode("alice"),
          hex("02"),
          new TextEncoder().encode("pw"),
        ),
      );
      assert.equal(toHex(await other.read(4)), "05 02 01 00", "another client logs in");
      other.end();
      // The records of the failed logins end after their lingering close, so their order varies.
      assert.deepEqual(
        m.records.filter((r) => r.outcome === "refused_backoff").map((r) => [r.outcome, r.reason, r.client]),
        [["refused_backoff", "too many failed logins; wait", "192.0.2.9:1"]],
      );
    } finally {
      await server.close();
    }
  });
});

describe("driver: the reason of a refusal says what to change", () => {
  it("the default range check names --allow-private; a deny rule does not", async () => {
    const loopback = hex("05 01 00 05 01 00 01 7f 00 00 01 00 50");
    const byDefault = harness();
    byDefault.client.send(loopback);
    await byDefault.client.readToEnd();
    assert.equal(
      (await byDefault.done).reason,
      "destination 127.0.0.1 not allowed by policy (a private or special-purpose address; " +
        "allowPrivate / --allow-private lifts this)",
    );
    const byRule = harness({ policy: { allowPrivate: true, rules: [parseRule("deny", "127.0.0.0/8")] } });
    byRule.client.send(loopback);
    await byRule.client.readToEnd();
    assert.equal((await byRule.done).reason, "destination 127.0.0.1 not allowed by policy");
  });
});

describe("driver: what replies reveal, and the switches that hide it", () => {
  it("a CONNECT reply carries the outbound local address, or 0.0.0.0:0 with hideBoundAddress", async () => {
    for (
      const [hideBoundAddress, bound] of [[false, "01 01 02 03 01 12 34"], [
        true,
        "01 00 00 00 00 00 00",
      ]] as const
    ) {
      const h = harness({ hideBoundAddress });
      h.client.send(hex(`05 01 00 05 01 00 01 ${PUBLIC_HEX} 00 50`));
      assert.equal(toHex(await h.client.read(12)), `05 00 05 00 00 ${bound}`);
      h.client.end();
      h.upstreams[0].end();
      await h.done;
    }
  });

  it("a name refused after DNS gets 02, or 04 like a name that does not exist with concealRefusals", async () => {
    const records = { "inside.example": ["10.0.0.7"] };
    const byName = hex(`05 01 00 05 01 00 03 0e ${toHex(new TextEncoder().encode("inside.example"))} 00 50`);
    const byAddress = hex("05 01 00 05 01 00 01 0a 00 00 07 00 50");
    for (
      const [concealRefusals, request, reply] of [
        [false, byName, "02"],
        [true, byName, "04"],
        [true, byAddress, "02"], // an address the client gave reveals nothing: it stays 02
      ] as const
    ) {
      const h = harness({ concealRefusals }, records);
      h.client.send(request);
      assert.equal(toHex((await h.client.readToEnd()).bytes), `05 00 05 ${reply} 00 01 00 00 00 00 00 00`);
      assert.equal((await h.done).outcome, "refused_policy", "the record still says what happened");
    }
  });
});
