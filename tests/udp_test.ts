/**
 * UDP ASSOCIATE end to end, on loopback only: the proxy as a CLI subprocess
 * on the runtime under test (Deno with --unstable-net, which its
 * Deno.listenDatagram still needs), driven by raw SOCKS5 bytes and node:dgram
 * sockets, by real clients (PySocks, the npm socks client, Dante's socksify),
 * and a real DNS query to dnsmasq through the association. The limits run
 * in-process where the runtime's adapter has UDP (Node, Bun; Deno's test
 * runner runs without --unstable-net, where the reply stays 0x07, checked too).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { Buffer } from "node:buffer";
import process from "node:process";
import { join } from "node:path";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import {
  type ProxyProcess,
  RawClient,
  ROOT,
  run,
  RUNTIME,
  runtimeCommand,
  sleep,
  spawnProxy,
  startDns,
  startProxy,
  toHex,
  until,
  usersFile,
  within,
} from "./_fixtures.ts";
import { currentRuntime } from "../lib/cli/detect.ts";
import type { ConnectionLog } from "../lib/record.ts";

const PYTHON = "/usr/bin/python3";

/** mod.ts on the runtime under test, with UDP available (Deno: --unstable-net). */
function udpCommand(unstableNet = true): { cmd: string; args: string[]; env: Record<string, string> } {
  const { cmd, args } = runtimeCommand();
  const env = { DENO_NO_UPDATE_CHECK: "1" };
  if (RUNTIME !== "deno") return { cmd, args, env };
  return { cmd, args: ["run", "-A", ...(unstableNet ? ["--unstable-net"] : []), join(ROOT, "mod.ts")], env };
}

/** A node:dgram socket with a queue of what it received. */
class Udp {
  readonly socket: UdpSocket;
  readonly got: { data: Buffer; from: RemoteInfo }[] = [];
  #waiters: (() => void)[] = [];
  private constructor(socket: UdpSocket) {
    this.socket = socket;
    socket.on("message", (data, from) => {
      this.got.push({ data, from });
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  static open(host = "127.0.0.1", port = 0): Promise<Udp> {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, host, () => resolve(new Udp(socket)));
    });
  }
  get port(): number {
    return this.socket.address().port;
  }
  send(bytes: Uint8Array, port: number, host = "127.0.0.1"): void {
    this.socket.send(bytes, port, host);
  }
  /** The next datagram, within `ms`. */
  async next(ms = 5_000): Promise<{ data: Buffer; from: RemoteInfo }> {
    await within(
      ms,
      `a datagram on ${this.port}`,
      (async () => {
        while (this.got.length === 0) await new Promise<void>((r) => this.#waiters.push(r));
      })(),
    );
    return this.got.shift()!;
  }
  /** Asserts that nothing arrives for `ms`. */
  async nothing(ms = 400): Promise<void> {
    await sleep(ms);
    assert.equal(this.got.length, 0, `unexpected datagram: ${this.got[0] && toHex(this.got[0].data)}`);
  }
  close(): void {
    try {
      this.socket.close();
    } catch { /* closed */ }
  }
}

/** A UDP echo server that counts what it echoed. */
async function udpEcho(host = "127.0.0.1"): Promise<Udp> {
  const echo = await Udp.open(host);
  echo.socket.on("message", (data, from) => echo.socket.send(data, from.port, from.address));
  return echo;
}

/** RFC 1928 §7 header + data, with any FRAG and an IPv4 or name target. */
function frame(host: string, port: number, data: Uint8Array | string, frag = 0): Buffer {
  const v4 = /^\d+\.\d+\.\d+\.\d+$/.test(host);
  const addr = v4 ? Buffer.from(host.split(".").map(Number)) : Buffer.concat([
    Buffer.of(host.length),
    Buffer.from(host),
  ]);
  return Buffer.concat([
    Buffer.of(0, 0, frag, v4 ? 1 : 3),
    addr,
    Buffer.of(port >> 8, port & 0xff),
    Buffer.from(data),
  ]);
}

/** A SOCKS5 UDP ASSOCIATE (no auth): the control connection, the reply, and the relay it names. */
async function associate(
  proxyPort: number,
  dst: [number, number, number, number, number] = [0, 0, 0, 0, 0],
): Promise<{ control: RawClient; reply: string; relay: { host: string; port: number } }> {
  const control = await RawClient.open(proxyPort);
  const [a, b, c, d, port] = dst;
  control.send(Uint8Array.of(5, 1, 0, 5, 3, 0, 1, a, b, c, d, port >> 8, port & 0xff));
  assert.equal(toHex(await control.readExactly(2)), "05 00");
  const reply = await control.readExactly(10);
  return {
    control,
    reply: toHex(reply),
    relay: { host: [...reply.subarray(4, 8)].join("."), port: reply.readUInt16BE(8) },
  };
}

/** The UDP ASSOCIATE records a proxy has logged (--log json). */
function udpRecords(proxy: ProxyProcess): ConnectionLog[] {
  return proxy.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
    .filter((r: ConnectionLog) => r.command === "udp_associate");
}

/** Waits for the proxy's `n`th UDP ASSOCIATE record. */
async function recordNumber(proxy: ProxyProcess, n: number): Promise<ConnectionLog> {
  await until(5_000, () => `record ${n} of ${udpRecords(proxy).length}`, () => udpRecords(proxy).length >= n);
  return udpRecords(proxy)[n - 1];
}

/** A DNS query for `name` (type A), id 0x1234. */
function dnsQuery(name: string): Buffer {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.of(l.length), Buffer.from(l)]));
  return Buffer.concat([hexBuf("12 34 01 00 00 01 00 00 00 00 00 00"), ...labels, hexBuf("00 00 01 00 01")]);
}
function hexBuf(text: string): Buffer {
  return Buffer.from(text.replace(/ /g, ""), "hex");
}

describe(`UDP ASSOCIATE through the CLI on ${RUNTIME}`, () => {
  let dns: Awaited<ReturnType<typeof startDns>>;
  let echo: Udp, other: Udp;
  let open: ProxyProcess, strict: ProxyProcess;
  let assocs = 0;
  const opened = () => ++assocs;

  /**
   * An association on `proxy` and a client socket: `body` runs with them, then both are closed. `n`, also
   * returned, is its number among `open`'s associations, which are counted (0 on another proxy).
   */
  async function withAssociation(
    body: (
      a: { client: Udp; relay: { host: string; port: number }; control: RawClient; n: number },
    ) => Promise<void>,
    proxy: ProxyProcess = open,
  ): Promise<number> {
    const { control, relay } = await associate(proxy.port);
    const n = proxy === open ? opened() : 0;
    const client = await Udp.open();
    try {
      await body({ client, relay, control, n });
    } finally {
      client.close();
      control.destroy();
    }
    return n;
  }

  before(async () => {
    dns = await startDns();
    echo = await udpEcho();
    other = await udpEcho();
    open = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--udp",
      "--allow-private",
      "--log",
      "json",
      "--dns",
      `127.0.0.1:${dns.port}`,
      "--idle-timeout",
      "1.5",
      "--deny",
      `udp@127.0.0.1:${other.port}`,
    ], udpCommand());
    // No --allow-private: only the rule's one destination passes; the reply advertises another address.
    strict = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--udp",
      "--allow",
      `udp@127.0.0.1:${echo.port}`,
      "--udp-advertise",
      "192.0.2.10",
      "--udp-ports",
      "47000-47099",
      "--log",
      "json",
    ], udpCommand());
  });

  after(async () => {
    await open?.stop();
    await strict?.stop();
    echo?.close();
    other?.close();
    await dns?.stop();
  });

  it("the startup line says UDP ASSOCIATE is on", () => {
    assert.match(open.startup, /UDP ASSOCIATE on\)$/);
  });

  it("reply: granted, BND is the address the client connected to and the relay's port (never 0.0.0.0)", async () => {
    const { control, reply, relay } = await associate(open.port);
    opened();
    assert.match(reply, /^05 00 00 01 7f 00 00 01 [0-9a-f]{2} [0-9a-f]{2}$/);
    assert.notEqual(relay.port, 0);
    control.destroy();
    const s = await associate(strict.port);
    assert.match(s.reply, /^05 00 00 01 c0 00 02 0a [0-9a-f]{2} [0-9a-f]{2}$/, "--udp-advertise 192.0.2.10");
    assert.ok(s.relay.port >= 47000 && s.relay.port <= 47099, `--udp-ports: ${s.relay.port}`);
    s.control.destroy();
  });

  it("a datagram reaches the target and its answer comes back from the target's IP and port (ATYP 1)", async () => {
    const n = await withAssociation(async ({ client, relay }) => {
      client.send(frame("127.0.0.1", echo.port, "ping"), relay.port);
      const { data, from } = await client.next();
      assert.equal(from.port, relay.port, "from the relay socket");
      const port = [echo.port >> 8, echo.port & 0xff].map((b) => b.toString(16).padStart(2, "0")).join(" ");
      assert.equal(toHex(data), `00 00 00 01 7f 00 00 01 ${port} 70 69 6e 67`);
    });
    const record = await recordNumber(open, n);
    assert.equal(record.outcome, "tunnel_done");
    assert.equal(record.up, 4);
    assert.equal(record.down, 4);
    assert.match(record.reason, /udp: 1 datagrams up, 1 down$/);
  });

  it("an IPv6 target from an IPv4 association: through a second socket, answered from the relay with ATYP 4", async () => {
    await withAssociation(async ({ client, relay }) => {
      const echo6 = await udpEcho("::1");
      try {
        const target = Buffer.concat([
          Buffer.of(0, 0, 0, 4),
          Buffer.alloc(15),
          Buffer.of(1, echo6.port >> 8, echo6.port & 0xff),
        ]);
        client.send(Buffer.concat([target, Buffer.from("v6 target")]), relay.port);
        const { data, from } = await client.next();
        assert.equal(from.port, relay.port);
        assert.equal(toHex(data), toHex(Buffer.concat([target, Buffer.from("v6 target")])));
      } finally {
        echo6.close();
      }
    });
  });

  it("a name in DST.ADDR is resolved by the proxy; the answer carries the IP (ATYP 1)", async () => {
    await withAssociation(async ({ client, relay }) => {
      for (const payload of ["first", "cached"]) {
        client.send(frame("web.test", echo.port, payload), relay.port);
        const { data } = await client.next();
        assert.equal(toHex(data.subarray(0, 8)), "00 00 00 01 7f 00 00 01");
        assert.equal(data.subarray(10).toString(), payload);
      }
    });
  });

  it("a real DNS query to dnsmasq through the association", async () => {
    await withAssociation(async ({ client, relay }) => {
      client.send(frame("127.0.0.1", dns.port, dnsQuery("web.test")), relay.port);
      const answer = (await client.next()).data.subarray(10);
      assert.equal(toHex(answer.subarray(0, 4)), "12 34 85 80", "id, response, authoritative, no error");
      assert.equal(answer.readUInt16BE(6), 1, "one answer");
      assert.equal(toHex(answer.subarray(answer.length - 4)), "7f 00 00 01", "web.test is 127.0.0.1");
    });
  });

  it("FRAG != 0 and malformed datagrams are dropped; the association goes on", async () => {
    const n = await withAssociation(async ({ client, relay, control }) => {
      client.send(frame("127.0.0.1", echo.port, "fragment", 1), relay.port);
      client.send(hexBuf("00 00 00 09 01 02"), relay.port);
      client.send(frame("127.0.0.1", 0, "port zero"), relay.port);
      await client.nothing();
      assert.equal(control.ended, false, "the control connection is still open");
      client.send(frame("127.0.0.1", echo.port, "whole"), relay.port);
      assert.equal((await client.next()).data.subarray(10).toString(), "whole");
    });
    const record = await recordNumber(open, n);
    assert.match(record.reason, /udp: 1 datagrams up, 1 down, dropped: 2 malformed, 1 fragment$/);
  });

  it("datagrams from another source are ignored (another IP, and another port of the client's IP)", async () => {
    const n = await withAssociation(async ({ client, relay }) => {
      const strangerIp = await Udp.open("127.0.0.2");
      const strangerPort = await Udp.open("127.0.0.1");
      const target = await udpEcho();
      try {
        // The first datagram from the client's IP fixes its port (the request said 0.0.0.0:0).
        client.send(frame("127.0.0.1", echo.port, "mine"), relay.port);
        await client.next();
        strangerIp.send(frame("127.0.0.1", target.port, "not yours"), relay.port);
        strangerPort.send(frame("127.0.0.1", target.port, "nor yours"), relay.port);
        await sleep(400);
        assert.equal(target.got.length, 0, "nothing reached the target");
        await client.nothing(0);
        await strangerIp.nothing(0);
        await strangerPort.nothing(0);
        client.send(frame("127.0.0.1", echo.port, "still mine"), relay.port);
        assert.equal((await client.next()).data.subarray(10).toString(), "still mine");
      } finally {
        for (const s of [strangerIp, strangerPort, target]) s.close();
      }
    });
    const record = await recordNumber(open, n);
    assert.match(record.reason, /dropped: 2 source$/);
  });

  it("DST.PORT of the request names the client's port: another port of its IP is ignored", async () => {
    const client = await Udp.open();
    const sibling = await Udp.open();
    const { control, relay } = await associate(open.port, [127, 0, 0, 1, client.port]);
    opened();
    try {
      sibling.send(frame("127.0.0.1", echo.port, "sibling"), relay.port);
      await sibling.nothing();
      client.send(frame("127.0.0.1", echo.port, "declared"), relay.port);
      assert.equal((await client.next()).data.subarray(10).toString(), "declared");
    } finally {
      client.close();
      sibling.close();
      control.destroy();
    }
  });

  it("the association ends with the TCP control connection: the relay socket is closed", async () => {
    await withAssociation(async ({ client, relay, control, n }) => {
      client.send(frame("127.0.0.1", echo.port, "before"), relay.port);
      await client.next();
      control.end();
      const record = await recordNumber(open, n);
      assert.equal(record.outcome, "tunnel_done");
      client.send(frame("127.0.0.1", echo.port, "after"), relay.port);
      await client.nothing();
      // The port is free again: the proxy holds no socket on it.
      const again = await Udp.open("127.0.0.1", relay.port);
      again.close();
    });
  });

  it("--idle-timeout: not cut while datagrams flow; ended (control closed by the proxy) once idle", async () => {
    await withAssociation(async ({ client, relay, control, n }) => {
      // 2.4 s of traffic against a 1.5 s idle timeout.
      for (let i = 0; i < 8; i++) {
        client.send(frame("127.0.0.1", echo.port, `tick ${i}`), relay.port);
        await client.next();
        await sleep(300);
      }
      assert.equal(control.ended, false, "the control connection outlived the idle timeout");
      await control.readToEnd(6_000);
      const record = await recordNumber(open, n);
      assert.equal(record.outcome, "tunnel_idle");
    });
  });

  it("the destination policy per datagram: a private target dropped, the allowed one served, same association", async () => {
    await withAssociation(async ({ client, relay }) => {
      client.send(frame("127.0.0.1", other.port, "private"), relay.port);
      await client.nothing();
      assert.equal(other.got.length, 0);
      client.send(frame("127.0.0.1", echo.port, "allowed by rule"), relay.port);
      assert.equal((await client.next()).data.subarray(10).toString(), "allowed by rule");
    }, strict);
    const record =
      (await until(5_000, () => "strict record", () => udpRecords(strict).length >= 2),
        udpRecords(strict).at(-1)!);
    assert.match(record.reason, /udp: 1 datagrams up, 1 down, dropped: 1 policy$/);
  });

  it("a deny rule (udp@127.0.0.1:PORT) drops datagrams to that target; another works in the same association", async () => {
    const n = await withAssociation(async ({ client, relay }) => {
      client.send(frame("127.0.0.1", other.port, "denied"), relay.port);
      client.send(frame("127.0.0.1", echo.port, "allowed"), relay.port);
      assert.equal((await client.next()).data.subarray(10).toString(), "allowed");
      await client.nothing();
      assert.equal(other.got.length, 0);
    });
    const record = await recordNumber(open, n);
    assert.match(record.reason, /udp: 1 datagrams up, 1 down, dropped: 1 policy$/);
  });

  it("PySocks (python3-socks): a datagram to the echo and a DNS query to dnsmasq", async () => {
    const script = `
import socket, sys, socks
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]))
s.settimeout(5)
s.sendto(b"pysocks", ("127.0.0.1", int(sys.argv[2])))
data, source = s.recvfrom(1000)
print(data.decode(), source[1] == int(sys.argv[2]))
s.sendto(bytes.fromhex(sys.argv[4]), ("127.0.0.1", int(sys.argv[3])))
answer, _ = s.recvfrom(1000)
print(answer[:4].hex(), ".".join(str(b) for b in answer[-4:]))
`;
    const r = await run(PYTHON, [
      "-c",
      script,
      String(open.port),
      String(echo.port),
      String(dns.port),
      dnsQuery("web.test").toString("hex"),
    ]);
    assert.equal(r.stdout, "pysocks True\n12348580 127.0.0.1\n", r.stderr);
    assert.equal(r.code, 0);
    opened();
  });

  it("without --log (the client address is not looked up at accept) the association still knows its client", async () => {
    const quiet = await spawnProxy(["--listen", "127.0.0.1:0", "--udp", "--allow-private"], udpCommand());
    const client = await Udp.open();
    try {
      const { control, reply, relay } = await associate(quiet.port);
      assert.match(reply, /^05 00 00 01 7f 00 00 01/);
      client.send(frame("127.0.0.1", echo.port, "quiet"), relay.port);
      assert.equal((await client.next()).data.subarray(10).toString(), "quiet");
      control.destroy();
    } finally {
      client.close();
      await quiet.stop();
    }
  });

  it("IPv6: control over ::1, the relay on ::1 (ATYP 4 reply), a target on ::1 answered with ATYP 4", async () => {
    const v6 = await spawnProxy(["--listen", "[::1]:0", "--udp", "--allow-private"], udpCommand());
    const echo6 = await udpEcho("::1");
    const client = await Udp.open("::1");
    const control = await RawClient.open(v6.port, "::1");
    try {
      control.send(Uint8Array.of(5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
      assert.equal(toHex(await control.readExactly(2)), "05 00");
      const reply = await control.readExactly(22);
      assert.match(toHex(reply), /^05 00 00 04 (00 ){15}01 [0-9a-f]{2} [0-9a-f]{2}$/);
      const relayPort = reply.readUInt16BE(20);
      const loopback6 = Buffer.alloc(16);
      loopback6[15] = 1;
      const port = Buffer.of(echo6.port >> 8, echo6.port & 0xff);
      client.send(
        Buffer.concat([Buffer.of(0, 0, 0, 4), loopback6, port, Buffer.from("six")]),
        relayPort,
        "::1",
      );
      const { data } = await client.next();
      assert.equal(
        toHex(data),
        toHex(Buffer.concat([Buffer.of(0, 0, 0, 4), loopback6, port, Buffer.from("six")])),
      );
      // An IPv4 target from the IPv6 relay: through a second socket; the answer still comes from the relay.
      client.send(frame("127.0.0.1", echo.port, "four"), relayPort, "::1");
      const four = await client.next();
      assert.equal(four.from.port, relayPort);
      assert.equal(toHex(four.data.subarray(0, 8)), "00 00 00 01 7f 00 00 01");
      assert.equal(four.data.subarray(10).toString(), "four");
    } finally {
      control.destroy();
      client.close();
      echo6.close();
      await v6.stop();
    }
  });

  it("with --users: PySocks logs in and relays (the user is in the log); SIGINT ends an open association", async () => {
    const users = usersFile("alice:s3cret\n");
    const authed = await spawnProxy(
      ["--listen", "127.0.0.1:0", "--udp", "--allow-private", "--users", users.path, "--log", "json"],
      udpCommand(),
    );
    try {
      const script = `
import socket, sys, socks
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]), username="alice", password="s3cret")
s.settimeout(5)
s.sendto(b"logged in", ("127.0.0.1", int(sys.argv[2])))
print(s.recvfrom(100)[0].decode())
`;
      const r = await run(PYTHON, ["-c", script, String(authed.port), String(echo.port)]);
      assert.equal(r.stdout, "logged in\n", r.stderr);
      const record = await recordNumber(authed, 1);
      assert.equal(record.user, "alice");
      assert.equal(record.up, "logged in".length);
      // Without credentials: no method acceptable.
      const anonymous = await RawClient.open(authed.port);
      anonymous.send(Uint8Array.of(5, 1, 0));
      assert.equal(toHex(await anonymous.readToEnd()), "05 ff");
      anonymous.destroy();
      // An association open at shutdown is closed, and counted.
      const control = await RawClient.open(authed.port);
      control.send(Uint8Array.of(5, 1, 2, 1, 5, ...Buffer.from("alice"), 6, ...Buffer.from("s3cret")));
      assert.equal(toHex(await control.readExactly(4)), "05 02 01 00");
      control.send(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
      assert.match(toHex(await control.readExactly(10)), /^05 00 00 01 7f 00 00 01/);
      // (SIGINT stops at once; SIGTERM would drain, giving the association --drain-timeout to end.)
      assert.equal(await authed.stop("SIGINT"), 0);
      assert.match(authed.errors(), /stopping \(SIGINT\), closed 1 open connection\n/);
      await control.readToEnd();
      const last = udpRecords(authed).at(-1)!;
      assert.equal(last.outcome, "shutdown");
    } finally {
      await authed.stop();
      users.remove();
    }
  });

  it("the npm socks client: associate, createUDPFrame / parseUDPFrame", async () => {
    const require = createRequire(import.meta.url);
    const { SocksClient } = require("socks") as typeof import("socks");
    const client = new SocksClient({
      proxy: { host: "127.0.0.1", port: open.port, type: 5 },
      command: "associate",
      destination: { host: "0.0.0.0", port: 0 },
    });
    const established = await within(
      5_000,
      "socks associate",
      new Promise<{ remoteHost?: { host: string; port: number }; socket: { destroy(): void } }>(
        (resolve, reject) => {
          client.on("established", resolve);
          client.on("error", reject);
          client.connect();
        },
      ),
    );
    opened();
    const udp = await Udp.open();
    try {
      const relay = established.remoteHost!;
      assert.equal(relay.host, "127.0.0.1");
      udp.send(
        SocksClient.createUDPFrame({
          remoteHost: { host: "127.0.0.1", port: echo.port },
          data: Buffer.from("npm socks"),
        }),
        relay.port,
        relay.host,
      );
      const parsed = SocksClient.parseUDPFrame((await udp.next()).data);
      assert.deepEqual(parsed.remoteHost, { host: "127.0.0.1", port: echo.port });
      assert.equal(parsed.frameNumber, 0);
      assert.equal(parsed.data.toString(), "npm socks");
    } finally {
      udp.close();
      established.socket.destroy();
    }
  });

  it("Dante's socksify: a plain UDP program, socksified", async () => {
    const dir = mkdtempSync(join(tmpdir(), "edgesocks-socksify-"));
    const conf = join(dir, "socks.conf");
    writeFileSync(
      conf,
      `route {\n  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = ${open.port}\n` +
        "  protocol: tcp udp\n  proxyprotocol: socks_v5\n  method: none\n}\n",
    );
    // Every association before this one has its record: the next one is socksify's.
    await recordNumber(open, assocs);
    const before = assocs;
    try {
      const script = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"socksified", ("127.0.0.1", int(sys.argv[1])))
data, source = s.recvfrom(1000)
print(data.decode(), source)
`;
      const r = await runWithEnv("socksify", [PYTHON, "-c", script, String(echo.port)], {
        SOCKS_CONF: conf,
        SOCKS_AUTOADD_LANROUTES: "no",
      });
      assert.equal(r.stdout, `socksified ('127.0.0.1', ${echo.port})\n`, r.stderr);
      assert.equal(r.code, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // It went through the proxy: one more association, with the datagram both ways.
    const record = await recordNumber(open, before + 1);
    assert.equal(record.outcome, "tunnel_done");
    assert.equal(record.up, "socksified".length);
    assert.equal(record.down, "socksified".length);
    opened();
  });
});

/** `run` with extra environment variables. */
async function runWithEnv(cmd: string, args: string[], env: Record<string, string>) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await run(cmd, args);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** A UDP ASSOCIATE to the proxy on `port` is refused 0x07 (command not supported), and nothing more comes. */
async function assertNoUdp(port: number): Promise<void> {
  const c = await RawClient.open(port);
  c.send(Uint8Array.of(5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
  assert.equal(toHex(await c.readToEnd()), "05 00 05 07 00 01 00 00 00 00 00 00");
  c.destroy();
}

describe(`UDP ASSOCIATE in-process on ${RUNTIME}`, () => {
  it("without the udp option the reply is 0x07", async () => {
    const proxy = await startProxy({ policy: { allowPrivate: true } });
    try {
      await assertNoUdp(proxy.port);
    } finally {
      await proxy.close();
    }
  });

  it("on a runtime without UDP (adapter.udp absent) the reply stays 0x07", async () => {
    const proxy = await startProxy({ udp: {} }, (a) => ({ ...a, udp: undefined }));
    try {
      await assertNoUdp(proxy.port);
    } finally {
      await proxy.close();
    }
  });

  if (RUNTIME === "deno") {
    it("Deno without --unstable-net: the startup line says why UDP is off, and the reply is 0x07", async () => {
      const { adapter } = await currentRuntime();
      // The test runner runs without --unstable-net: the adapter says so instead of offering udp.
      assert.equal(adapter.udp, undefined);
      assert.match(adapter.udpUnavailable ?? "", /needs --unstable-net/);
      const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--udp"], udpCommand(false));
      try {
        assert.match(
          proxy.startup,
          /UDP ASSOCIATE off: Deno\.listenDatagram needs --unstable-net \(deno run --unstable-net \.\.\.\)\)$/,
        );
        await assertNoUdp(proxy.port);
      } finally {
        await proxy.stop();
      }
    });

    it("Deno --workers without --unstable-net: the workers run with it, serve UDP, and the line says so", async () => {
      const proxy = await spawnProxy(
        ["--listen", "127.0.0.1:0", "--udp", "--workers", "2"],
        udpCommand(false),
      );
      try {
        assert.match(proxy.startup, /UDP ASSOCIATE on, 2 workers\)$/);
        const { control, reply } = await associate(proxy.port);
        assert.match(reply, /^05 00 00 01 7f 00 00 01/);
        control.destroy();
      } finally {
        await proxy.stop();
      }
    });
  }
});
