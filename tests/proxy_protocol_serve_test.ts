/**
 * PROXY protocol listeners of serve(), end to end over real TCP on loopback:
 * the header's client is the client of every client rule, per-client cap and
 * record; an untrusted peer, a malformed header or a late one is closed
 * without a reply byte and recorded with its outcome. (HAProxy itself drives
 * these listeners in haproxy_test.ts.)
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { parseCidr } from "../lib/policy.ts";
import type { ConnectionLog } from "../lib/record.ts";
import type { ServeOptions } from "../lib/serve.ts";
import {
  hex,
  RawClient,
  sleep,
  socks5ConnectBytes,
  spawnProxy,
  startEcho,
  startProxy,
  toHex,
  until,
} from "./_fixtures.ts";

const SIG = "0d0a0d0a000d0a515549540a";
/** A v2 PROXY header for a TCP/IPv4 client `a.b.c.d:port` that reached 127.0.0.1:1080. */
function v2(client: string, port: number): Uint8Array {
  const ip = client.split(".").map((n) => Number(n).toString(16).padStart(2, "0")).join("");
  return hex(`${SIG} 21 11 000c ${ip} 7f000001 ${port.toString(16).padStart(4, "0")} 0438`);
}
const v1 = (line: string) => new TextEncoder().encode(`${line}\r\n`);
const GRANTED = /^05 00 05 00 00 01 7f 00 00 01 [0-9a-f]{2} [0-9a-f]{2}$/;

let echo: Awaited<ReturnType<typeof startEcho>>;
before(async () => (echo = await startEcho()));
after(() => echo.close());

/** A proxy with PROXY protocol on its listener, its records, and a way to wait for the n-th. */
async function proxy(options: ServeOptions = {}) {
  const logs: ConnectionLog[] = [];
  const server = await startProxy({
    proxyProtocol: true,
    policy: { allowPrivate: true },
    hostAddressRefresh: 0,
    onLog: (e) => logs.push(e),
    ...options,
  });
  const logged = async (n: number) => {
    await until(5_000, () => `${n} records, have ${JSON.stringify(logs)}`, () => logs.length >= n);
    return logs[n - 1];
  };
  return { server, logs, logged };
}

/** Through the tunnel: one echoed message, then our FIN and the echo's. */
async function tunnelWorks(c: RawClient) {
  c.send("ping");
  assert.equal((await c.readExactly(4)).toString(), "ping");
  c.end();
  await c.readToEnd();
}

/** A raw client from `localAddress` (another loopback address than the default 127.0.0.1). */
function openFrom(port: number, localAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: "127.0.0.1", localAddress });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

describe("serve() with proxyProtocol", () => {
  it("v1 header and SOCKS greeting in one segment: the header's client is the record's", async () => {
    const { server, logged } = await proxy();
    try {
      const c = await RawClient.open(server.port);
      c.send(
        new Uint8Array([
          ...v1("PROXY TCP4 198.51.100.7 127.0.0.1 4242 1080"),
          ...socks5ConnectBytes(echo.port),
        ]),
      );
      assert.match(toHex(await c.readExactly(12)), GRANTED);
      await tunnelWorks(c);
      const r = await logged(1);
      assert.equal(r.client, "198.51.100.7:4242");
      assert.equal(r.outcome, "tunnel_done");
      assert.equal(r.up, 4);
    } finally {
      await server.close();
    }
  });

  it("v2 header, then the SOCKS bytes one write at a time; TCP6 gives an IPv6 client", async () => {
    const { server, logged } = await proxy();
    try {
      const c = await RawClient.open(server.port);
      const bytes = new Uint8Array([...v2("203.0.113.9", 50000), ...socks5ConnectBytes(echo.port)]);
      for (const b of bytes) {
        c.send(Uint8Array.of(b));
        await sleep(1);
      }
      assert.match(toHex(await c.readExactly(12)), GRANTED);
      await tunnelWorks(c);
      assert.equal((await logged(1)).client, "203.0.113.9:50000");
      const d = await RawClient.open(server.port);
      d.send(new Uint8Array([...v1("PROXY TCP6 2001:db8::1 ::1 1 1080"), ...socks5ConnectBytes(echo.port)]));
      assert.match(toHex(await d.readExactly(12)), GRANTED);
      await tunnelWorks(d);
      assert.equal((await logged(2)).client, "[2001:db8::1]:1");
    } finally {
      await server.close();
    }
  });

  it("v2 LOCAL (a health check) and v1 UNKNOWN keep the real peer", async () => {
    const { server, logged } = await proxy();
    try {
      for (const [i, header] of [hex(`${SIG} 20 00 0000`), v1("PROXY UNKNOWN")].entries()) {
        const c = await RawClient.open(server.port);
        const local = c.socket.localPort;
        c.send(new Uint8Array([...header, ...socks5ConnectBytes(echo.port)]));
        assert.match(toHex(await c.readExactly(12)), GRANTED);
        await tunnelWorks(c);
        assert.equal((await logged(i + 1)).client, `127.0.0.1:${local}`);
      }
    } finally {
      await server.close();
    }
  });

  it("client rules judge the header's client: refused with no reply; another client passes", async () => {
    const { server, logged } = await proxy({
      clientPolicy: { rules: [{ action: "deny", cidr: parseCidr("198.51.100.0/24") }] },
    });
    try {
      const denied = new Uint8Array([...v2("198.51.100.7", 1), ...socks5ConnectBytes(echo.port)]);
      assert.equal(toHex(await RawClient.exchange(server.port, denied)), "");
      const r = await logged(1);
      assert.deepEqual([r.client, r.outcome], ["198.51.100.7:1", "refused_client"]);
      const c = await RawClient.open(server.port);
      c.send(new Uint8Array([...v2("198.51.101.7", 1), ...socks5ConnectBytes(echo.port)]));
      assert.match(toHex(await c.readExactly(12)), GRANTED);
      await tunnelWorks(c);
    } finally {
      await server.close();
    }
  });

  it("per-client caps count the header's client, not the balancer", async () => {
    const { server, logged } = await proxy({ maxConnectionsPerClient: 1 });
    try {
      const first = await RawClient.open(server.port);
      first.send(new Uint8Array([...v2("198.51.100.7", 1), ...socks5ConnectBytes(echo.port)]));
      assert.match(toHex(await first.readExactly(12)), GRANTED);
      // Same client through the same balancer: over its cap.
      const again = new Uint8Array([...v2("198.51.100.7", 2), ...socks5ConnectBytes(echo.port)]);
      assert.equal(toHex(await RawClient.exchange(server.port, again)), "");
      const r = await logged(1);
      assert.deepEqual([r.client, r.outcome, r.reason], [
        "198.51.100.7:2",
        "refused_limit",
        "per-client connection limit reached",
      ]);
      // Another client through the same balancer: served.
      const other = await RawClient.open(server.port);
      other.send(new Uint8Array([...v2("198.51.100.8", 1), ...socks5ConnectBytes(echo.port)]));
      assert.match(toHex(await other.readExactly(12)), GRANTED);
      await tunnelWorks(other);
      await tunnelWorks(first);
      await until(2_000, () => `${server.activeConnections} open`, () => server.activeConnections === 0);
    } finally {
      await server.close();
    }
  });

  it("a peer not in `from` is closed at once, no reply, recorded as itself", async () => {
    const { server, logged } = await proxy({ proxyProtocol: { from: [parseCidr("127.0.0.1/32")] } });
    try {
      const s = await openFrom(server.port, "127.0.0.2");
      const local = s.localPort;
      const got: Buffer[] = [];
      s.on("data", (c) => got.push(c));
      s.on("error", () => {});
      s.write(new Uint8Array([...v2("198.51.100.7", 1), ...socks5ConnectBytes(echo.port)]));
      await new Promise((r) => s.once("close", r));
      assert.equal(Buffer.concat(got).length, 0);
      const r = await logged(1);
      assert.deepEqual([r.client, r.outcome, r.reply], [
        `127.0.0.2:${local}`,
        "refused_proxy_source",
        "none",
      ]);
      assert.match(r.reason, /127\.0\.0\.2:\d+ may not send a PROXY header/);
    } finally {
      await server.close();
    }
  });

  it("no header (a SOCKS client straight in), a malformed one: closed, no reply, proxy_header_invalid", async () => {
    const { server, logged } = await proxy();
    try {
      assert.equal(toHex(await RawClient.exchange(server.port, socks5ConnectBytes(echo.port))), "");
      const r = await logged(1);
      assert.deepEqual([r.outcome, r.reply, r.reason], [
        "proxy_header_invalid",
        "none",
        "not a PROXY protocol header",
      ]);
      assert.match(r.client ?? "", /^127\.0\.0\.1:\d+$/);
      const bad = v1("PROXY TCP4 198.51.100.07 127.0.0.1 1 1080");
      assert.equal(toHex(await RawClient.exchange(server.port, bad)), "");
      assert.equal((await logged(2)).reason, "PROXY protocol v1 address is not IPv4");
    } finally {
      await server.close();
    }
  });

  it("a header not complete within the deadline: closed, proxy_header_timeout", async () => {
    const { server, logged } = await proxy({ proxyProtocol: { timeout: 300 } });
    try {
      const c = await RawClient.open(server.port);
      const t0 = Date.now();
      c.send(hex(`${SIG} 21 11`));
      assert.equal((await c.readToEnd(5_000)).length, 0);
      assert.ok(Date.now() - t0 >= 250, `closed after ${Date.now() - t0} ms`);
      const r = await logged(1);
      assert.deepEqual([r.outcome, r.reason], [
        "proxy_header_timeout",
        "no complete PROXY header within 0.3 s",
      ]);
    } finally {
      await server.close();
    }
  });

  it("close() ends a connection still waiting for its header", async () => {
    const { server, logged } = await proxy();
    const c = await RawClient.open(server.port);
    c.send("PROXY TCP4 ");
    await until(2_000, () => "accepted", () => server.activeConnections === 1);
    await server.close();
    assert.equal((await c.readToEnd()).length, 0);
    assert.equal((await logged(1)).outcome, "shutdown");
  });

  it("per listener: one requires the header, the other serves SOCKS directly", async () => {
    const { server, logs } = await proxy({
      proxyProtocol: undefined,
      listen: [{ host: "127.0.0.1", port: 0, proxyProtocol: true }, { host: "127.0.0.1", port: 0 }],
    });
    try {
      const [pp, direct] = server.addresses.map((a) => a.port);
      const c = await RawClient.open(direct);
      c.send(socks5ConnectBytes(echo.port));
      assert.match(toHex(await c.readExactly(12)), GRANTED);
      await tunnelWorks(c);
      assert.equal(toHex(await RawClient.exchange(pp, socks5ConnectBytes(echo.port))), "");
      await until(2_000, () => JSON.stringify(logs), () => logs.length === 2);
      assert.deepEqual(logs.map((l) => l.outcome).sort(), ["proxy_header_invalid", "tunnel_done"]);
    } finally {
      await server.close();
    }
  });
});

describe("--proxy-protocol, the program", () => {
  it("one log line per closed connection, with its outcome: untrusted peer, late header", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--proxy-protocol",
      "--proxy-protocol-from",
      "127.0.0.1/32",
      "--proxy-protocol-timeout",
      "0.3",
      "--log",
      "text",
    ]);
    try {
      assert.match(proxy.startup, /\(auth: none, PROXY protocol required\)$/);
      const s = await openFrom(proxy.port, "127.0.0.2");
      s.on("error", () => {});
      s.write(v1("PROXY TCP4 198.51.100.7 127.0.0.1 1 1080"));
      await new Promise((r) => s.once("close", r));
      const late = await RawClient.open(proxy.port);
      late.send("PROXY TCP4 ");
      assert.equal((await late.readToEnd()).length, 0);
      await until(5_000, () => proxy.output(), () => proxy.output().split("\n").length >= 4);
      const lines = proxy.output().split("\n").slice(1, 3);
      assert.match(
        lines[0],
        /^\S+ 127\.0\.0\.2:\d+ - - - reply=none outcome=refused_proxy_source up=0 down=0 ms=\d+ reason="127\.0\.0\.2:\d+ may not send a PROXY header \(not in --proxy-protocol-from\)"$/,
      );
      assert.match(
        lines[1],
        /^\S+ 127\.0\.0\.1:\d+ - - - reply=none outcome=proxy_header_timeout up=0 down=0 ms=\d+ reason="no complete PROXY header within 0\.3 s"$/,
      );
    } finally {
      assert.equal(await proxy.stop(), 0);
    }
  });
});
