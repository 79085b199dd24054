/**
 * End to end through real TCP on 127.0.0.1, on the runtime running this file:
 * the proxy on that runtime's adapter, driven by real clients (curl, OpenBSD
 * netcat, socat, tor-resolve, a Python client, the npm `socks` client) and by
 * raw bytes, against a local HTTP server, echo servers and a dnsmasq DNS server
 * started here.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import type { ConnectionLog } from "../lib/session.ts";
import { createRequire } from "node:module";
import {
  closedPort,
  curl,
  hex,
  HTTP_BODY,
  RawClient,
  run,
  type RunResult,
  RUNTIME,
  sleep,
  socks5ConnectBytes,
  startDns,
  startEcho,
  startHttp,
  startProxy,
  startTcp,
  toHex,
  until,
  within,
} from "./_fixtures.ts";

type Awaited2<T> = T extends Promise<infer U> ? U : T;

/**
 * curl failed in the SOCKS handshake (exit 97, CURLE_PROXY) with a message matching `message`, which
 * names the reply it got; a crash, a timeout or another reply fails.
 */
function assertCurlRefused(r: RunResult, message: RegExp, what = ""): void {
  assert.equal(r.stdout, "", `${what}: went through`);
  assert.match(r.stderr, message, what);
  assert.equal(r.code, 97, `${what}: ${r.stderr}`);
}

const USER = "alice";
const PASSWORD = "s3cret pass:x";

describe(`end to end on ${RUNTIME}`, () => {
  let http: Awaited2<ReturnType<typeof startHttp>>;
  let echo: Awaited2<ReturnType<typeof startEcho>>;
  let dns: Awaited2<ReturnType<typeof startDns>>;
  let open: Awaited2<ReturnType<typeof startProxy>>; // allow-private, no auth
  let authed: Awaited2<ReturnType<typeof startProxy>>; // allow-private, users
  let strict: Awaited2<ReturnType<typeof startProxy>>; // default policy

  before(async () => {
    http = await startHttp();
    echo = await startEcho();
    dns = await startDns();
    const base = { dns: { host: dns.host, port: dns.port } };
    open = await startProxy({ ...base, policy: { allowPrivate: true } });
    authed = await startProxy({
      ...base,
      policy: { allowPrivate: true },
      users: new Map([[USER, PASSWORD]]),
    });
    strict = await startProxy(base);
  });

  // Every raw client goes in here, and `after` destroys them all, also those of a test that failed:
  // a half-open socket left behind would keep the runtime from exiting.
  const clients = new Set<RawClient>();
  const client = async (port: number) => {
    const c = await RawClient.open(port);
    clients.add(c);
    return c;
  };

  after(async () => {
    for (const c of clients) c.destroy();
    await Promise.all([open?.close(), authed?.close(), strict?.close()]);
    await Promise.all([http?.close(), echo?.close(), dns?.stop()]);
  });

  const url = (host = "127.0.0.1") => `http://${host}:${http.port}/`;

  describe("curl", () => {
    for (
      const [flag, host] of [
        ["--socks4", "127.0.0.1"],
        ["--socks4a", "web.test"],
        ["--socks5", "127.0.0.1"],
        ["--socks5-hostname", "web.test"],
        ["--socks5-hostname", "127.0.0.1"],
      ]
    ) {
      it(`${flag} fetches ${host}`, async () => {
        const r = await curl([flag, `127.0.0.1:${open.port}`, url(host)]);
        assert.equal(r.stderr, "");
        assert.equal(r.stdout, HTTP_BODY);
        assert.equal(r.code, 0);
      });
    }

    it("--socks5-hostname with a user and password", async () => {
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${authed.port}`,
        "--proxy-user",
        `${USER}:${PASSWORD}`,
        url("web.test"),
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    });

    it("--socks5 with a user and password in the proxy URL", async () => {
      const r = await curl([
        "-x",
        `socks5://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${authed.port}`,
        url(),
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    });

    it("a wrong password fails, as does no password at all", async () => {
      const wrong = await curl([
        "--socks5-hostname",
        `127.0.0.1:${authed.port}`,
        "--proxy-user",
        `${USER}:nope`,
        url("web.test"),
      ]);
      // curl's exit code 97 is "proxy handshake failed"; its message names the reply it got.
      assertCurlRefused(wrong, /User was rejected by the SOCKS5 server \(1 1\)/);
      const none = await curl(["--socks5-hostname", `127.0.0.1:${authed.port}`, url("web.test")]);
      assertCurlRefused(none, /No authentication method was acceptable/);
      const v4 = await curl(["--socks4", `127.0.0.1:${authed.port}`, url()]);
      assertCurlRefused(v4, /SOCKS4 connection .*\(91\), request rejected/);
    });

    it("the default policy refuses loopback destinations, by address and by name", async () => {
      for (
        const [flag, host] of [["--socks5", "127.0.0.1"], ["--socks5-hostname", "web.test"], [
          "--socks4a",
          "web.test",
        ]]
      ) {
        const r = await curl([flag, `127.0.0.1:${strict.port}`, url(host)]);
        // 02 "connection not allowed by ruleset" (SOCKS5), 91 "rejected or failed" (SOCKS4A).
        assertCurlRefused(
          r,
          flag === "--socks4a"
            ? /SOCKS4 connection .*\(91\), request rejected/
            : new RegExp(`SOCKS5 connection to ${host.replaceAll(".", "\\.")}\\. \\(2\\)`),
          `${flag} ${host}`,
        );
      }
    });

    it("an unknown name fails cleanly", async () => {
      const r = await curl(["--socks5-hostname", `127.0.0.1:${open.port}`, url("nx.test")]);
      // 04 "host unreachable", as the DNS server said NXDOMAIN.
      assertCurlRefused(r, /SOCKS5 connection to nx\.test\. \(4\)/);
    });

    it("HTTP sent to the SOCKS port gets the 501 page", async () => {
      const direct = await run("curl", ["-s", "-i", "--max-time", "10", `http://127.0.0.1:${open.port}/`]);
      assert.match(direct.stdout, /^HTTP\/1\.0 501 /);
      assert.match(direct.stdout, /SOCKS proxy/);
      const asHttpProxy = await run("curl", [
        "-s",
        "-i",
        "--max-time",
        "10",
        "-x",
        `http://127.0.0.1:${open.port}`,
        url("web.test"),
      ]);
      assert.match(asHttpProxy.stdout, /^HTTP\/1\.0 501 /);
    });

    it("an IPv6 destination", async () => {
      const v6 = await startTcp((s) => s.end("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nv6\n"), "::1");
      const port = v6.port;
      try {
        const literal = await curl(["--socks5", `127.0.0.1:${open.port}`, `http://[::1]:${port}/`]);
        assert.equal(literal.stdout, "v6\n", literal.stderr);
        const byName = await curl([
          "--socks5-hostname",
          `127.0.0.1:${open.port}`,
          `http://web6.test:${port}/`,
        ]);
        assert.equal(byName.stdout, "v6\n", byName.stderr);
      } finally {
        await v6.close();
      }
    });
  });

  describe("other real clients", () => {
    /**
     * A destination that answers only once it has the client's FIN: with what it got, then its own FIN.
     * A client prints that answer only if the proxy forwarded its FIN and kept the other way open.
     */
    const startAnswerAfterFin = () =>
      startTcp((s) => {
        const got: Buffer[] = [];
        s.on("data", (d: Buffer) => got.push(d));
        s.on("end", () => s.end(`after your FIN: ${Buffer.concat(got)}`));
      });

    it("OpenBSD netcat (nc.openbsd -N) over SOCKS5 and SOCKS4: its FIN reaches the destination, whose answer still arrives", async () => {
      const target = await startAnswerAfterFin();
      try {
        for (const version of ["5", "4"]) {
          // nc.openbsd by name: Debian's ncat package may own `nc`, and Ncat has no -N.
          const r = await run("nc.openbsd", [
            "-N",
            "-X",
            version,
            "-x",
            `127.0.0.1:${open.port}`,
            "127.0.0.1",
            String(target.port),
          ], { input: `hello over socks${version}\n` });
          assert.equal(r.stdout, `after your FIN: hello over socks${version}\n`, r.stderr);
          assert.equal(r.code, 0);
        }
      } finally {
        await target.close();
      }
    });

    it("socat over SOCKS4A and SOCKS4: its FIN reaches the destination, whose answer still arrives", async () => {
      const target = await startAnswerAfterFin();
      try {
        for (const [kind, host] of [["SOCKS4A", "web.test"], ["SOCKS4", "127.0.0.1"]]) {
          // -t 10: after stdin's EOF, socat sends its FIN and reads the other way for up to 10 s.
          const r = await run("socat", [
            "-t",
            "10",
            "-",
            `${kind}:127.0.0.1:${host}:${target.port},socksport=${open.port}`,
          ], { input: `hello over ${kind}\n` });
          assert.equal(r.stdout, `after your FIN: hello over ${kind}\n`, r.stderr);
          assert.equal(r.code, 0);
        }
      } finally {
        await target.close();
      }
    });

    it("tor-resolve: RESOLVE over SOCKS4A and SOCKS5, RESOLVE_PTR for IPv4 and IPv6, failures", async () => {
      const logs: ConnectionLog[] = [];
      const proxy = await startProxy({
        dns: { host: dns.host, port: dns.port },
        policy: { allowPrivate: true },
        onLog: (l) => logs.push(l),
      });
      try {
        // tor-resolve speaks SOCKS4A with -4, SOCKS5 with -5 (its default); -x (reverse) is SOCKS5 only.
        const cases: [string[], string, string][] = [
          [["-4", "web.test"], "127.0.0.1\n", "resolve"],
          [["-5", "web.test"], "127.0.0.1\n", "resolve"],
          [["-5", "web6.test"], "::1\n", "resolve"],
          [["-4", "other.test"], "127.0.0.2\n", "resolve"],
          [["-5", "-x", "192.0.2.55"], "ptr.test\n", "resolve_ptr"],
          [["-5", "-x", "2001:db8::55"], "ptr.test\n", "resolve_ptr"],
        ];
        for (const [args, answer] of cases) {
          const r = await run("tor-resolve", [...args, `127.0.0.1:${proxy.port}`]);
          assert.deepEqual([r.stdout, r.code], [answer, 0], `tor-resolve ${args.join(" ")}: ${r.stderr}`);
        }
        const failures: [string[], RegExp][] = [
          [["-5", "nx.test"], /status response '4': host is unreachable/],
          [["-5", "-x", "192.0.2.99"], /status response '4': host is unreachable/],
          [["-4", "nx.test"], /status response '91': socks request failed/],
        ];
        for (const [args, message] of failures) {
          const r = await run("tor-resolve", [...args, `127.0.0.1:${proxy.port}`]);
          assert.equal(r.stdout, "", `tor-resolve ${args.join(" ")} answered`);
          assert.match(r.stderr, message, `tor-resolve ${args.join(" ")}`);
          assert.equal(r.code, 1);
        }
        await until(5_000, () => `${logs.length} log records`, () => logs.length === 9);
        assert.deepEqual(
          logs.map((l) => l.command),
          [...cases.map(([, , command]) => command), "resolve", "resolve_ptr", "resolve"],
        );
      } finally {
        await proxy.close();
      }
    });

    it("a Python client that pipelines greeting, auth, request and data in one sendall()", async () => {
      // Standard library only. One sendall() of a few dozen bytes with TCP_NODELAY leaves as one segment,
      // so the proxy gets the whole handshake and early data in one read.
      const script = `
import socket, sys
port, dest, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4].encode()
name = b"web.test"
hello = bytes([5, 1, 2, 1, len(user)]) + user + bytes([len(password)]) + password if user else bytes([5, 1, 0])
request = bytes([5, 1, 0, 3, len(name)]) + name + dest.to_bytes(2, "big")
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(hello + request + b"pipelined early data")
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
sys.stdout.write(got.hex())
`;
      const data = Buffer.from("pipelined early data").toString("hex");
      for (
        const [proxy, user, password, replies] of [
          [open, "", "", "0500"],
          [authed, USER, PASSWORD, "0502" + "0100"],
        ] as const
      ) {
        const r = await run("python3", ["-c", script, String(proxy.port), String(echo.port), user, password]);
        // The replies (the bound address is 127.0.0.1 and the outbound socket's port), then the echo.
        assert.match(r.stdout, new RegExp(`^${replies}050000017f000001[0-9a-f]{4}${data}$`), r.stderr);
        assert.equal(r.code, 0);
      }
    });

    it("the npm socks client, SOCKS5 with user/password, and SOCKS4", async () => {
      const require = createRequire(import.meta.url);
      const { SocksClient } = require("socks") as typeof import("socks");
      for (
        const proxy of [
          { host: "127.0.0.1", port: authed.port, type: 5 as const, userId: USER, password: PASSWORD },
          { host: "127.0.0.1", port: open.port, type: 4 as const },
        ]
      ) {
        const { socket } = await within(
          5_000,
          "socks client",
          SocksClient.createConnection({
            proxy,
            command: "connect",
            destination: { host: proxy.type === 5 ? "web.test" : "127.0.0.1", port: echo.port },
          }),
        );
        try {
          socket.write("ping");
          const got = await within(
            5_000,
            "echo",
            new Promise<string>((r) => socket.once("data", (d) => r(String(d)))),
          );
          assert.equal(got, "ping");
        } finally {
          socket.destroy();
        }
      }
    });
  });

  describe("raw bytes over TCP", () => {
    const connectReply = /^05 00 00 01 7f 00 00 01 [0-9a-f]{2} [0-9a-f]{2}$/;

    it("pipelined greeting + request + data in one segment reach the destination intact", async () => {
      const c = await client(open.port);
      const payload = randomBytes(100_000);
      c.send(Buffer.concat([socks5ConnectBytes(echo.port), payload]));
      assert.equal(toHex(await c.readExactly(2)), "05 00");
      assert.match(toHex(await c.readExactly(10)), connectReply);
      assert.ok((await c.readExactly(payload.length)).equals(payload));
      c.end();
      assert.equal((await c.readToEnd()).length, 0);
    });

    it("greeting, auth and request in one segment", async () => {
      const c = await client(authed.port);
      const u = Buffer.from(USER), p = Buffer.from(PASSWORD);
      c.send(
        Buffer.concat([
          hex("05 01 02 01"),
          Buffer.of(u.length),
          u,
          Buffer.of(p.length),
          p,
          hex(`05 01 00 01 7f 00 00 01`),
          Buffer.of(echo.port >> 8, echo.port & 0xff),
          Buffer.from("x"),
        ]),
      );
      assert.equal(toHex(await c.readExactly(4)), "05 02 01 00");
      assert.match(toHex(await c.readExactly(10)), connectReply);
      assert.equal(String(await c.readExactly(1)), "x");
      c.destroy();
    });

    it("the bound address in the reply is the outbound socket's", async () => {
      let seenPort = -1;
      const target = await startTcp((s) => {
        seenPort = s.remotePort!;
        s.end();
      });
      try {
        const c = await client(open.port);
        c.send(socks5ConnectBytes(target.port));
        const reply = await c.readExactly(12);
        assert.equal(toHex(reply.subarray(2, 8)), "05 00 00 01 7f 00");
        await c.readToEnd();
        assert.equal(reply.readUInt16BE(10), seenPort);
      } finally {
        await target.close();
      }
    });

    it("tunnels run on the runtime's own relay (the one the tests in this file exercise)", async () => {
      let taken = 0, declined = 0;
      const proxy = await startProxy({ policy: { allowPrivate: true } }, (adapter) => ({
        ...adapter,
        relay: (client, upstream, options) => {
          const p = adapter.relay?.(client, upstream, options);
          if (p) taken++;
          else declined++;
          return p;
        },
      }));
      try {
        const data = randomBytes(1_000_000);
        const c = await client(proxy.port);
        c.send(Buffer.concat([socks5ConnectBytes(echo.port), data.subarray(0, 1000)]));
        await c.readExactly(12);
        c.send(data.subarray(1000));
        c.end();
        assert.ok((await c.readToEnd()).equals(data));
        assert.deepEqual({ taken, declined }, { taken: 1, declined: 0 });
      } finally {
        await proxy.close();
      }
    });

    it("half-close: the client's FIN reaches the destination, which still answers", async () => {
      let received = 0;
      const target = await startTcp((s) => {
        s.on("data", (d) => (received += d.length));
        s.on("end", () => s.end(`got ${received}`));
      });
      try {
        const c = await client(open.port);
        c.send(socks5ConnectBytes(target.port));
        await c.readExactly(12);
        c.send(randomBytes(300_000));
        c.end();
        assert.equal(String(await c.readToEnd()), "got 300000");
      } finally {
        await target.close();
      }
    });

    it("half-close: the destination's FIN reaches the client, which can still send", async () => {
      let upload = 0;
      let uploadDone: () => void;
      const finished = new Promise<void>((r) => (uploadDone = r));
      const target = await startTcp((s) => {
        s.end("banner then FIN");
        s.on("data", (d) => (upload += d.length));
        s.on("end", () => uploadDone());
      });
      try {
        const c = await client(open.port);
        c.send(socks5ConnectBytes(target.port));
        await c.readExactly(12);
        assert.equal(String(await c.readToEnd()), "banner then FIN");
        c.send(randomBytes(200_000));
        c.end();
        await within(5_000, "upload after FIN", finished);
        assert.equal(upload, 200_000);
      } finally {
        await target.close();
      }
    });

    it("a slow reader: the proxy buffers a bounded amount, then every byte arrives", async () => {
      const total = 256 * 1024 * 1024;
      let written = 0;
      const hash = createHash("sha256");
      const target = await startTcp((s: Socket) => {
        const chunk = randomBytes(64 * 1024);
        const pump = () => {
          while (written < total) {
            written += chunk.length;
            hash.update(chunk);
            if (!s.write(chunk)) return void s.once("drain", pump);
          }
          s.end();
        };
        pump();
      });
      try {
        const c = await client(open.port);
        c.socket.pause();
        c.send(socks5ConnectBytes(target.port));
        // Wait for the event, not for a time: the destination's writes stall (no progress for 500 ms), or
        // it wrote everything. Kernel socket buffers on both hops hold a few MiB; a proxy without
        // backpressure would take it all.
        await until(30_000, () => "the destination never started writing", () => written > 0);
        for (let last = -1; written !== last && written < total;) {
          last = written;
          await sleep(500);
        }
        assert.ok(
          written < 64 * 1024 * 1024,
          `destination wrote ${written >> 20} MiB to a client that reads nothing`,
        );
        const got = createHash("sha256");
        let n = 0;
        c.socket.removeAllListeners("data");
        await within(
          60_000,
          "drain",
          new Promise<void>((resolve, reject) => {
            c.socket.on("data", (d: Buffer) => {
              // The first 12 bytes are the SOCKS replies, the rest the payload.
              got.update(d.subarray(Math.max(0, 12 - n)));
              n += d.length;
            });
            c.socket.on("end", resolve);
            c.socket.on("error", reject);
            c.socket.resume();
          }),
        );
        assert.equal(n, total + 12);
        assert.equal(got.digest("hex"), hash.digest("hex"));
        c.destroy();
      } finally {
        await target.close();
      }
    });

    it("a destination that does not read: the client's writes stall at a bounded amount, then every byte arrives", async () => {
      const total = 256 * 1024 * 1024;
      let dest: Socket | undefined;
      const got = createHash("sha256");
      let received = 0;
      const target = await startTcp((s: Socket) => {
        s.pause();
        dest = s;
      });
      try {
        const c = await client(open.port);
        c.send(socks5ConnectBytes(target.port));
        assert.deepEqual([...await c.readExactly(12)].slice(0, 2), [5, 0]);
        await until(10_000, () => "the destination never got the connection", () => dest !== undefined);
        const chunk = randomBytes(64 * 1024);
        const hash = createHash("sha256");
        let written = 0;
        let pumping = true;
        const pump = () => {
          while (written < total) {
            written += chunk.length;
            hash.update(chunk);
            if (!c.socket.write(chunk)) return void c.socket.once("drain", pump);
          }
          pumping = false;
          c.socket.end();
        };
        pump();
        // As above, the other way: kernel buffers on both hops hold a few MiB; a proxy that kept reading
        // the client while the destination reads nothing would take it all.
        for (let last = -1; written !== last && pumping;) {
          last = written;
          await sleep(500);
        }
        assert.ok(
          written < 64 * 1024 * 1024,
          `the client wrote ${written >> 20} MiB towards a destination that reads nothing`,
        );
        await within(
          60_000,
          "drain",
          new Promise<void>((resolve, reject) => {
            dest!.on("data", (d: Buffer) => {
              got.update(d);
              received += d.length;
            });
            dest!.on("end", resolve);
            dest!.on("error", reject);
            dest!.resume();
          }),
        );
        assert.equal(received, total);
        assert.equal(got.digest("hex"), hash.digest("hex"));
        c.destroy();
      } finally {
        await target.close();
      }
    });

    it("the log counts every byte each way, early data included; an idle tunnel is closed", async () => {
      const logs: ConnectionLog[] = [];
      const proxy = await startProxy({
        policy: { allowPrivate: true },
        timeouts: { idle: 300 },
        onLog: (l) => logs.push(l),
      });
      const target = await startTcp((s) => {
        let n = 0;
        s.on("data", (d) => (n += d.length));
        s.on("end", () => s.end(Buffer.alloc(n * 2, 7)));
      });
      try {
        const c = await client(proxy.port);
        c.send(Buffer.concat([socks5ConnectBytes(target.port), Buffer.alloc(1000, 1)]));
        await c.readExactly(12);
        c.send(Buffer.alloc(4000, 2));
        c.end();
        assert.equal((await c.readToEnd()).length, 10_000);
        await until(5_000, () => "no log record", () => logs.length > 0);
        assert.deepEqual([logs[0]?.up, logs[0]?.down, logs[0]?.reason], [5000, 10_000, "done"]);

        const idle = await client(proxy.port);
        // Taken before the request: the proxy's idle timer cannot start earlier, so however slow the
        // machine, a close at the timeout comes at least 300 ms later (a few ms of clock granularity aside).
        const t0 = Date.now();
        idle.send(socks5ConnectBytes(target.port));
        await idle.readExactly(12);
        await idle.readToEnd(10_000);
        const closedAfter = Date.now() - t0;
        assert.ok(
          closedAfter >= 290,
          `closed ${closedAfter} ms after the request, before the 300 ms idle timeout`,
        );
        await until(5_000, () => "no second log record", () => logs.length > 1);
        assert.equal(logs[1]?.reason, "idle timeout");
      } finally {
        await proxy.close();
        await target.close();
      }
    });

    it("bytes flowing one way only, either way, keep a tunnel open past the idle timeout", async () => {
      const logs: ConnectionLog[] = [];
      // 1 s, ten times the gap between bytes: a loaded machine that delays a timer by a few hundred ms
      // does not make a one-way tunnel look idle.
      const IDLE_MS = 1_000;
      const proxy = await startProxy({
        policy: { allowPrivate: true },
        timeouts: { idle: IDLE_MS },
        onLog: (l) => logs.push(l),
      });
      // The target drips a byte every 100 ms while it reads nothing, or swallows what it gets.
      const dripping = await startTcp((s) => {
        const t = setInterval(() => s.write("d"), 100);
        s.on("close", () => clearInterval(t));
      });
      const sink = await startTcp((s) => s.resume());
      try {
        const down = await client(proxy.port);
        down.send(socks5ConnectBytes(dripping.port));
        await down.readExactly(12);
        const up = await client(proxy.port);
        up.send(socks5ConnectBytes(sink.port));
        await up.readExactly(12);
        // Three idle timeouts by the clock (not by a count of sleeps, which a loaded machine stretches).
        for (const t0 = Date.now(); Date.now() - t0 < 3 * IDLE_MS;) {
          up.send("u");
          await sleep(100);
        }
        // Both tunnels are still open, and both carried their bytes.
        assert.equal(down.ended || up.ended, false, "a one-way tunnel was cut as idle");
        assert.ok((await down.readExactly(8)).every((b) => b === 0x64));
        assert.deepEqual(logs, []);
        down.destroy();
        up.destroy();
      } finally {
        await proxy.close();
        await Promise.all([dripping.close(), sink.close()]);
      }
    });

    it("RESOLVE over SOCKS5 and SOCKS4A through the DNS server", async () => {
      const ask = async (bytes: Uint8Array) => toHex(await RawClient.exchange(open.port, bytes));
      const name5 = (n: string) =>
        Buffer.concat([hex("05 01 00 05 f0 00 03"), Buffer.of(n.length), Buffer.from(n), hex("00 00")]);
      const name4 = (n: string) =>
        Buffer.concat([hex("04 f0 00 00 00 00 00 01 00"), Buffer.from(n), hex("00")]);
      assert.equal(await ask(name5("web.test")), "05 00 05 00 00 01 7f 00 00 01 00 00");
      assert.equal(
        await ask(name5("web6.test")),
        "05 00 05 00 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00",
      );
      assert.equal(await ask(name5("dual.test")), "05 00 05 00 00 01 7f 00 00 03 00 00");
      assert.equal(await ask(name5("nx.test")), "05 00 05 04 00 01 00 00 00 00 00 00");
      assert.equal(await ask(name4("other.test")), "00 5a 00 00 7f 00 00 02");
      assert.equal(await ask(name4("web6.test")), "00 5b 00 00 00 00 00 00");
      assert.equal(await ask(name4("nx.test")), "00 5b 00 00 00 00 00 00");
    });

    it("RESOLVE_PTR for IPv4 and IPv6 through the DNS server", async () => {
      const ask = (bytes: string) => RawClient.exchange(open.port, hex(bytes));
      const v4 = await ask("05 01 00 05 f1 00 01 c0 00 02 37 00 00");
      assert.equal(toHex(v4.subarray(0, 6)), "05 00 05 00 00 03");
      assert.equal(String(v4.subarray(7, 7 + v4[6])), "ptr.test");
      const v6 = await ask("05 01 00 05 f1 00 04 20010db8000000000000000000000055 00 00");
      assert.equal(String(v6.subarray(7, 7 + v6[6])), "ptr.test");
      const miss = await ask("05 01 00 05 f1 00 01 c0 00 02 63 00 00");
      assert.equal(toHex(miss), "05 00 05 04 00 01 00 00 00 00 00 00");
    });

    it("CONNECT_DIR tunnels like CONNECT", async () => {
      const c = await client(open.port);
      c.send(
        Buffer.concat([
          hex("05 01 00 05 f2 00 01 7f 00 00 01"),
          Buffer.of(echo.port >> 8, echo.port & 0xff),
          Buffer.from("dir"),
        ]),
      );
      await c.readExactly(2);
      assert.match(toHex(await c.readExactly(10)), connectReply);
      assert.equal(String(await c.readExactly(3)), "dir");
      c.destroy();
    });

    it("error replies: refused 05, BIND and UDP ASSOCIATE 07, bad address type 08, unknown version closes", async () => {
      const port = await closedPort();
      const ask = async (bytes: Uint8Array) => toHex(await RawClient.exchange(open.port, bytes));
      assert.equal(await ask(socks5ConnectBytes(port)), "05 00 05 05 00 01 00 00 00 00 00 00");
      assert.equal(
        await ask(hex("05 01 00 05 02 00 01 7f 00 00 01 00 50")),
        "05 00 05 07 00 01 00 00 00 00 00 00",
      );
      assert.equal(
        await ask(hex("05 01 00 05 03 00 01 7f 00 00 01 00 50")),
        "05 00 05 07 00 01 00 00 00 00 00 00",
      );
      assert.equal(
        await ask(hex("05 01 00 05 01 00 09 7f 00 00 01 00 50")),
        "05 00 05 08 00 01 00 00 00 00 00 00",
      );
      assert.equal(await ask(hex("04 02 00 50 7f 00 00 01 00")), "00 5b 00 00 00 00 00 00");
      assert.equal(await ask(hex("07 01 00")), "");
      assert.equal(await ask(hex("05 01 00 05 01 00 03 00 00 50")), "05 00 05 01 00 01 00 00 00 00 00 00");
    });

    it("truncated requests and clients that vanish leave the server serving", async () => {
      const proxy = await startProxy({ policy: { allowPrivate: true } });
      try {
        for (
          const bytes of ["05", "05 02 00", "05 01 00 05 01 00 03 10 61 62", "04 01 00 50 7f 00 00 01 61 62"]
        ) {
          const c = await client(proxy.port);
          c.send(hex(bytes));
          await sleep(20);
          c.destroy();
        }
        const r = await curl(["--socks5", `127.0.0.1:${proxy.port}`, url()]);
        assert.equal(r.stdout, HTTP_BODY);
        await until(
          10_000,
          () => `${proxy.activeConnections} connections still open`,
          () => proxy.activeConnections === 0,
        );
      } finally {
        await proxy.close();
      }
    });
  });
});
