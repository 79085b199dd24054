/**
 * UDP ASSOCIATE's association logic (lib/upstream/udp.ts) over an in-memory
 * UDP socket: nothing touches the network, so public destinations can be
 * "sent to" safely and every limit is exact. Who is the client, the policy
 * on each datagram after DNS, the lookup cache, and the limits (associations
 * per client, datagrams per second, bytes queued).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type AssociateRequest, type UdpOptions, udpService } from "../lib/upstream/udp.ts";
import type { HostPort, Resolver, UdpBindOptions, UdpSocket } from "../lib/runtime.ts";
import { DEFAULT_POLICY, type DestinationPolicy, hostAddressSet, parseRule } from "../lib/policy.ts";
import { SocksError } from "../lib/core/errors.ts";
import { decodeUdpDatagram } from "../lib/core/udp.ts";
import type { ProxyRequest } from "../lib/core/request.ts";
import { concat, hex, toHex } from "./_hex.ts";

interface Sent {
  data: Uint8Array;
  host: string;
  port: number;
}

/** An in-memory UDP socket factory: what was sent, and a way to deliver datagrams. */
function fakeUdp(options: { failPorts?: (port: number) => boolean; pending?: () => number } = {}) {
  const sockets: { options: UdpBindOptions; sent: Sent[]; closed: boolean; address: HostPort }[] = [];
  const bind = (o: UdpBindOptions): Promise<UdpSocket> => {
    if (options.failPorts?.(o.port)) return Promise.reject(new Error(`port ${o.port} in use`));
    const entry = {
      options: o,
      sent: [] as Sent[],
      closed: false,
      address: { host: o.host, port: o.port || 40000 },
    };
    sockets.push(entry);
    return Promise.resolve({
      address: entry.address,
      get pending() {
        return options.pending?.() ?? 0;
      },
      send(data, host, port) {
        if (entry.closed) return false;
        if (!host.includes(":") === entry.address.host.includes(":")) return false;
        entry.sent.push({ data: data.slice(), host, port });
        return true;
      },
      close() {
        entry.closed = true;
      },
    });
  };
  return { bind, sockets };
}

const CLIENT = { host: "198.51.100.7", port: 50000 };
const LOCAL = { host: "192.0.2.1", port: 1080 };
const ANY: ProxyRequest = {
  version: 5,
  kind: "udp_associate",
  target: { host: "0.0.0.0", type: "ipv4", port: 0 },
};

/** The association CLIENT asks for on LOCAL (any DST, the default policy, no idle timeout), `changes` made. */
const ask = (changes: Partial<AssociateRequest> = {}): AssociateRequest => ({
  request: ANY,
  policy: DEFAULT_POLICY,
  client: CLIENT,
  local: LOCAL,
  idleTimeout: 0,
  ...changes,
});

const resolver = (table: Record<string, string[]>, counter?: { n: number }): Resolver => ({
  lookup: (name) => {
    if (counter) counter.n++;
    return table[name] ? Promise.resolve(table[name]) : Promise.reject(new SocksError(0x04, `${name}: no`));
  },
  reverse: () => Promise.reject(new SocksError(0x04, "no")),
});

/** A datagram from the client to `host:port` (IPv4, or a name). */
function toTarget(host: string, port: number, data: string, frag = 0): Uint8Array {
  const v4 = /^\d+\.\d+\.\d+\.\d+$/.test(host);
  const addr = v4 ? host.split(".").map(Number) : [host.length, ...[...host].map((c) => c.charCodeAt(0))];
  return Uint8Array.of(
    0,
    0,
    frag,
    v4 ? 1 : 3,
    ...addr,
    port >> 8,
    port & 0xff,
    ...[...data].map((c) => c.charCodeAt(0)),
  );
}

async function open(
  udpOptions: UdpOptions = {},
  policy: DestinationPolicy = DEFAULT_POLICY,
  table: Record<string, string[]> = {},
  fake = fakeUdp(),
  request: ProxyRequest = ANY,
) {
  const service = udpService(fake.bind, resolver(table), udpOptions);
  const association = await service.associate(ask({ request, policy }));
  const socket = fake.sockets.at(-1)!;
  const deliver = (data: Uint8Array, from: HostPort = CLIENT) => socket.options.onDatagram(data, from);
  return { service, association, socket, deliver, fake };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("UDP association: the relay socket and the reply", () => {
  it("binds to the control connection's local address; the reply advertises it, or --udp-advertise", async () => {
    const a = await open();
    assert.deepEqual(a.socket.options.host, "192.0.2.1");
    assert.deepEqual(a.association.bound, { host: "192.0.2.1", port: 40000 });
    const b = await open({ advertise: "203.0.113.9" });
    assert.deepEqual(b.association.bound, { host: "203.0.113.9", port: 40000 });
  });

  it("--udp-ports: tries ports of the range; none free is 0x01", async () => {
    const fake = fakeUdp({ failPorts: (p) => p !== 40007 });
    const { association } = await open({ ports: [40000, 40009] }, DEFAULT_POLICY, {}, fake);
    assert.equal(association.bound.port, 40007);
    const full = fakeUdp({ failPorts: () => true });
    const service = udpService(full.bind, resolver({}), { ports: [40000, 40009] });
    await assert.rejects(
      service.associate(ask()),
      (e: SocksError) => e.reply === 0x01 && /no free UDP port in 40000-40009/.test(e.message),
    );
  });

  it("without the connection's addresses (not a socket) it is refused with 0x01", async () => {
    const service = udpService(fakeUdp().bind, resolver({}));
    await assert.rejects(
      service.associate(ask({ client: undefined, local: undefined })),
      (e: SocksError) => e.reply === 0x01,
    );
  });
});

describe("UDP association: who is the client", () => {
  it("the first datagram from the client's IP fixes its port; others from that IP are strangers", async () => {
    const { deliver, socket, association } = await open();
    deliver(toTarget("93.184.216.34", 53, "a"));
    deliver(toTarget("93.184.216.34", 53, "b"), { host: CLIENT.host, port: 50001 });
    deliver(toTarget("93.184.216.34", 53, "c"), { host: "198.51.100.8", port: 50000 });
    assert.deepEqual(socket.sent.map((s) => [s.host, s.port, toHex(s.data)]), [["93.184.216.34", 53, "61"]]);
    assert.equal(association.dropped.source, 2);
  });

  it('DST.PORT is the client\'s port when DST names the client, 0.0.0.0 or "0"; not when it names a target', async () => {
    for (
      const [target, fixed] of [
        [{ host: CLIENT.host, type: "ipv4", port: 50005 }, true],
        [{ host: "0.0.0.0", type: "ipv4", port: 50005 }, true],
        [{ host: "0", type: "domain", port: 50005 }, true],
        [{ host: "93.184.216.34", type: "ipv4", port: 50005 }, false],
        [{ host: "example.org", type: "domain", port: 50005 }, false],
      ] as const
    ) {
      const request: ProxyRequest = { version: 5, kind: "udp_associate", target };
      const { deliver, socket } = await open({}, DEFAULT_POLICY, {}, fakeUdp(), request);
      deliver(toTarget("93.184.216.34", 53, "x"), { host: CLIENT.host, port: 50000 });
      assert.equal(socket.sent.length, fixed ? 0 : 1, JSON.stringify(target));
    }
  });

  it("answers come only from a target the client sent to, wrapped with its IP (ATYP 1)", async () => {
    const { deliver, socket, association } = await open();
    deliver(hex("00 00 00 01 5d b8 d8 22 00 35 71"));
    deliver(hex("aa"), { host: "93.184.216.35", port: 53 }); // never sent to
    deliver(hex("bb"), { host: "93.184.216.34", port: 54 }); // another port
    deliver(hex("cc"), { host: "::ffff:93.184.216.34", port: 53 }); // the target, in mapped form
    assert.deepEqual(socket.sent.slice(1).map((s) => [s.host, s.port, toHex(s.data)]), [
      [CLIENT.host, CLIENT.port, "00 00 00 01 5d b8 d8 22 00 35 cc"],
    ]);
    assert.equal(association.dropped.source, 2);
    assert.equal(association.datagramsDown, 1);
  });
});

describe("UDP association: the destination policy on every datagram", () => {
  it("private and special addresses are dropped by default; public ones sent", async () => {
    const { deliver, socket, association } = await open();
    for (const ip of ["127.0.0.1", "10.0.0.1", "169.254.169.254", "192.0.2.1", "93.184.216.34"]) {
      deliver(toTarget(ip, 53, "q"));
    }
    assert.deepEqual(socket.sent.map((s) => s.host), ["93.184.216.34"]);
    assert.equal(association.dropped.policy, 4);
    // A verdict is kept per association (the rules are its snapshot): the same again, the same answer.
    for (const ip of ["10.0.0.1", "93.184.216.34", "::ffff:10.0.0.1"]) deliver(toTarget(ip, 53, "q"));
    deliver(hex("00 00 00 04 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 00 35 71")); // ::ffff:10.0.0.1
    deliver(hex("00 00 00 04 00 00 00 00 00 00 00 00 00 00 ff ff 5d b8 d8 22 00 35 71")); // mapped public
    assert.deepEqual(socket.sent.map((s) => s.host), ["93.184.216.34", "93.184.216.34", "93.184.216.34"]);
    assert.equal(association.dropped.policy, 7);
  });

  it("the host's own addresses are dropped (hostAddresses)", async () => {
    const policy = { ...DEFAULT_POLICY, hostAddresses: hostAddressSet(["93.184.216.34"]) };
    const { deliver, socket } = await open({}, policy);
    deliver(toTarget("93.184.216.34", 53, "q"));
    assert.equal(socket.sent.length, 0);
  });

  it("names: checked after DNS on every address; the first allowed one is used", async () => {
    const table = { "inside.test": ["10.0.0.1"], "both.test": ["10.0.0.2", "93.184.216.34"] };
    const { deliver, socket, association } = await open({}, DEFAULT_POLICY, table);
    deliver(toTarget("inside.test", 53, "a"));
    deliver(toTarget("both.test", 53, "b"));
    deliver(toTarget("missing.test", 53, "c"));
    await tick();
    assert.deepEqual(socket.sent.map((s) => [s.host, toHex(s.data)]), [["93.184.216.34", "62"]]);
    assert.equal(association.dropped.policy, 1);
    assert.equal(association.dropped.dns, 1);
  });

  it("rules name the command udp; a rule for other commands leaves datagrams alone", async () => {
    const policy = {
      ...DEFAULT_POLICY,
      rules: [
        parseRule("deny", "connect@*"),
        parseRule("deny", "udp@*:25"),
        parseRule("deny", "udp@*.blocked.test"),
      ],
    };
    const table = { "x.blocked.test": ["93.184.216.34"] };
    const counter = { n: 0 };
    const fake = fakeUdp();
    const service = udpService(fake.bind, resolver(table, counter));
    await service.associate(ask({ policy }));
    const deliver = (d: Uint8Array) => fake.sockets[0].options.onDatagram(d, CLIENT);
    deliver(toTarget("93.184.216.34", 53, "dns"));
    deliver(toTarget("93.184.216.34", 25, "smtp"));
    deliver(toTarget("x.blocked.test", 53, "name"));
    await tick();
    assert.deepEqual(fake.sockets[0].sent.map((s) => s.port), [53]);
    assert.equal(counter.n, 0, "a name rule refuses before any DNS query");
    assert.throws(() => parseRule("deny", "udpx@*"), /commands are connect, connect_dir, resolve, bind, udp/);
  });

  it("a target of the other family goes through a second socket, bound on the wildcard once; answers come back", async () => {
    const { deliver, association, fake, socket } = await open();
    const v6 = hex("00 00 00 04 20 01 48 60 00 00 00 00 00 00 00 00 00 00 88 88 00 35");
    deliver(concat(v6, hex("01")));
    await tick();
    deliver(concat(v6, hex("02")));
    await tick();
    assert.equal(fake.sockets.length, 2);
    const other = fake.sockets[1];
    assert.deepEqual([other.options.host, other.options.port], ["::", 0]);
    assert.deepEqual(other.sent.map((s) => [s.host, s.port, toHex(s.data)]), [["2001:4860::8888", 53, "01"], [
      "2001:4860::8888",
      53,
      "02",
    ]]);
    // An answer on the second socket reaches the client through the relay socket, with ATYP 4.
    other.options.onDatagram(hex("aa"), { host: "2001:4860::8888", port: 53 });
    other.options.onDatagram(hex("bb"), { host: "2001:4860::8844", port: 53 }); // never sent to
    other.options.onDatagram(toTarget("93.184.216.34", 53, "x"), CLIENT); // the client, on the wrong socket
    assert.deepEqual(socket.sent.map((s) => [s.host, toHex(s.data)]), [[
      CLIENT.host,
      toHex(concat(v6, hex("aa"))),
    ]]);
    assert.equal(association.dropped.source, 2);
    association.close();
    assert.equal(other.closed, true);
  });

  it("a second socket that cannot be bound drops the datagram (send), not the association", async () => {
    const fake = fakeUdp();
    const bind = (o: UdpBindOptions) =>
      o.host === "::" ? Promise.reject(new Error("no IPv6 here")) : fake.bind(o);
    const service = udpService(bind, resolver({}));
    const association = await service.associate(ask());
    const deliver = (d: Uint8Array) => fake.sockets[0].options.onDatagram(d, CLIENT);
    deliver(hex("00 00 00 04 20 01 48 60 00 00 00 00 00 00 00 00 00 00 88 88 00 35 01"));
    await tick();
    assert.equal(association.dropped.send, 1);
    deliver(toTarget("93.184.216.34", 53, "v4"));
    assert.equal(fake.sockets[0].sent.length, 1);
  });

  it("FRAG != 0, port 0 and unreadable datagrams are dropped and counted", async () => {
    const { deliver, socket, association } = await open();
    deliver(toTarget("93.184.216.34", 53, "f", 1));
    deliver(toTarget("93.184.216.34", 0, "z"));
    deliver(hex("00"));
    deliver(toTarget("93.184.216.34", 53, "ok"));
    assert.equal(socket.sent.length, 1);
    assert.deepEqual(association.dropped, { fragment: 1, malformed: 2 });
  });
});

describe("UDP association: the lookup cache", () => {
  it("one lookup per name within the TTL, shared by associations; again after it", async () => {
    const counter = { n: 0 };
    const fake = fakeUdp();
    const service = udpService(fake.bind, resolver({ "pub.test": ["93.184.216.34"] }, counter), {
      dnsCacheTtl: 100,
    });
    for (let i = 0; i < 2; i++) {
      await service.associate(ask());
    }
    for (const s of fake.sockets) {
      for (let i = 0; i < 3; i++) s.options.onDatagram(toTarget("pub.test", 53, "q"), CLIENT);
    }
    await tick();
    assert.equal(counter.n, 1);
    assert.equal(fake.sockets[0].sent.length + fake.sockets[1].sent.length, 6);
    await new Promise((r) => setTimeout(r, 150));
    fake.sockets[0].options.onDatagram(toTarget("PUB.test.", 53, "q"), CLIENT);
    await tick();
    assert.equal(counter.n, 2);
  });

  it("is bounded: the oldest name goes first", async () => {
    const counter = { n: 0 };
    const table = { "a.test": ["93.184.216.1"], "b.test": ["93.184.216.2"], "c.test": ["93.184.216.3"] };
    const fake = fakeUdp();
    const service = udpService(fake.bind, resolver(table, counter), { dnsCacheSize: 2 });
    await service.associate(ask());
    for (const name of ["a.test", "b.test", "c.test", "c.test", "a.test"]) {
      fake.sockets[0].options.onDatagram(toTarget(name, 53, "q"), CLIENT);
      await tick();
    }
    assert.equal(counter.n, 4, "a.test was evicted by c.test and looked up again");
  });
});

describe("UDP association: limits", () => {
  it("associations per client: one over is refused (0x01, refused_limit); a closed one frees its place", async () => {
    const fake = fakeUdp();
    const service = udpService(fake.bind, resolver({}), { maxPerClient: 2 });
    const first = await service.associate(ask());
    await service.associate(ask());
    await assert.rejects(
      service.associate(ask()),
      (e: SocksError) => e.reply === 0x01 && e.code === "refused_limit",
    );
    // Another client has its own count.
    await service.associate(ask({ client: { host: "198.51.100.99", port: 1 } }));
    first.close();
    first.close();
    await service.associate(ask());
    await assert.rejects(service.associate(ask()), (e: SocksError) => e.code === "refused_limit");
  });

  it("datagrams per second, both ways together: beyond the rate they are dropped and counted", async () => {
    const { deliver, socket, association } = await open({ datagramsPerSecond: 5 });
    for (let i = 0; i < 20; i++) deliver(toTarget("93.184.216.34", 53, "q"));
    assert.ok(socket.sent.length >= 5 && socket.sent.length <= 6, `${socket.sent.length} sent`);
    assert.equal(association.dropped.rate, 20 - socket.sent.length);
    const free = await open({ datagramsPerSecond: 0 });
    for (let i = 0; i < 50; i++) free.deliver(toTarget("93.184.216.34", 53, "q"));
    assert.equal(free.socket.sent.length, 50, "0: no cap");
    const given = await open({ datagramsPerSecond: undefined });
    for (let i = 0; i < 50; i++) given.deliver(toTarget("93.184.216.34", 53, "q"));
    assert.equal(given.socket.sent.length, 50, "undefined: the default, 20,000/s");
  });

  it("bytes queued: datagrams waiting for DNS beyond the bound are dropped and counted", async () => {
    const fake = fakeUdp();
    const service = udpService(fake.bind, {
      lookup: () => new Promise(() => {}),
      reverse: () => new Promise(() => {}),
    }, {
      maxQueuedBytes: 20,
    });
    const association = await service.associate(ask());
    for (let i = 0; i < 5; i++) {
      fake.sockets[0].options.onDatagram(toTarget("slow.test", 53, "12345678"), CLIENT);
    }
    assert.equal(association.dropped.queue, 3, "two of 8 bytes fit in 20");
  });

  it("bytes queued: the runtime's send queue counts too", async () => {
    let pending = 0;
    const { deliver, socket, association } = await open(
      { maxQueuedBytes: 100 },
      DEFAULT_POLICY,
      {},
      fakeUdp({
        pending: () => pending,
      }),
    );
    deliver(toTarget("93.184.216.34", 53, "q"));
    pending = 100;
    deliver(toTarget("93.184.216.34", 53, "q"));
    assert.equal(socket.sent.length, 1);
    assert.equal(association.dropped.queue, 1);
  });

  it("idle: resolves `idle` after the timeout without datagrams; close() closes the socket once", async () => {
    const fake = fakeUdp();
    const service = udpService(fake.bind, resolver({}));
    const association = await service.associate(ask({ idleTimeout: 60 }));
    const t0 = Date.now();
    await association.idle;
    assert.ok(Date.now() - t0 >= 55);
    association.close();
    assert.equal(fake.sockets[0].closed, true);
    // Nothing is relayed after close.
    fake.sockets[0].options.onDatagram(toTarget("93.184.216.34", 53, "late"), CLIENT);
    assert.equal(fake.sockets[0].sent.length, 0);
    assert.equal(decodeUdpDatagram(toTarget("93.184.216.34", 53, "x")).type, "datagram");
  });
});
