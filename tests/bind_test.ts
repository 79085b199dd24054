// BIND (--bind), SOCKS5 and SOCKS4, through the real server on this runtime: the two replies byte by
// byte, the peer from the wrong address refused, the listener closed on every path; then real clients:
// the npm `socks` client's bind, and Dante's socksify running tnftp (Debian's ftp) in active mode against pyftpdlib.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { connect, type Socket } from "node:net";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { parseRule } from "../lib/policy.ts";
import type { ConnectionLog } from "../lib/record.ts";
import {
  hex,
  RawClient,
  ROOT,
  run,
  runtimeCommand,
  spawnProxy,
  startProxy,
  toHex,
  until,
  within,
} from "./_fixtures.ts";

const GREETING = hex("05 01 00");
const bind5 = (host = "127.0.0.1", port = 0) =>
  Uint8Array.of(5, 2, 0, 1, ...host.split(".").map(Number), port >> 8, port & 0xff);
const bind4 = (host = "127.0.0.1", port = 0) =>
  Uint8Array.of(4, 2, port >> 8, port & 0xff, ...host.split(".").map(Number), 0);
const portOf = (reply: Uint8Array, at: number) => reply[at] << 8 | reply[at + 1];
const hexPort = (port: number) => port.toString(16).padStart(4, "0");

/** A TCP connection to 127.0.0.1:`port` from `from` (e.g. 127.0.0.2), half-open allowed. */
function peer(port: number, from = "127.0.0.1"): Promise<Socket> {
  return within(
    5_000,
    `peer connect from ${from}`,
    new Promise((resolve, reject) => {
      const s = connect({ port, host: "127.0.0.1", localAddress: from, allowHalfOpen: true });
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    }),
  );
}

/** What a socket receives until its peer's FIN or a reset (bounded). */
function readAll(s: Socket, ms = 5_000): Promise<{ data: string; reset: boolean }> {
  return within(
    ms,
    "read to end",
    new Promise((resolve) => {
      let data = "";
      s.on("data", (d) => (data += d));
      s.once("end", () => resolve({ data, reset: false }));
      s.once("error", () => resolve({ data, reset: true }));
    }),
  );
}

/**
 * True once nothing listens on 127.0.0.1:`port` any more (a connect is refused). Probes from
 * 127.0.0.2, an address that may never be the peer, so the probe cannot end the wait itself.
 */
async function refused(port: number): Promise<boolean> {
  try {
    const s = await peer(port, "127.0.0.2");
    s.destroy();
    return false;
  } catch (error) {
    return (error as { code?: string }).code === "ECONNREFUSED";
  }
}

describe("BIND through the server", () => {
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let short: Awaited<ReturnType<typeof startProxy>>;
  let plain: Awaited<ReturnType<typeof startProxy>>;
  let strict: Awaited<ReturnType<typeof startProxy>>;
  const logs: ConnectionLog[] = [];
  before(async () => {
    const onLog = (e: ConnectionLog) => logs.push(e);
    proxy = await startProxy({ bind: true, policy: { allowPrivate: true }, onLog });
    short = await startProxy({
      bind: true,
      policy: { allowPrivate: true },
      timeouts: { connect: 400 },
      onLog,
    });
    plain = await startProxy({ policy: { allowPrivate: true } });
    strict = await startProxy({
      bind: true,
      policy: { allowPrivate: true, rules: [parseRule("deny", "bind@127.0.0.3")] },
    });
  });
  after(async () => {
    await Promise.all([proxy.close(), short.close(), plain.close(), strict.close()]);
  });

  it("SOCKS5: first reply with the listening address, a peer from another IP refused, the right one relayed", async () => {
    const c = await RawClient.open(proxy.port);
    try {
      c.send(GREETING);
      c.send(bind5());
      assert.equal(toHex(await c.readExactly(2)), "05 00");
      const first = await c.readExactly(10);
      const port = portOf(first, 8);
      assert.notEqual(port, 0);
      assert.equal(toHex(first), `05 00 00 01 7f 00 00 01 ${toHex(Uint8Array.of(port >> 8, port & 0xff))}`);
      // From 127.0.0.2: closed at once, not a byte sent, and the wait goes on.
      const wrong = await peer(port, "127.0.0.2");
      const seen = await readAll(wrong);
      assert.equal(seen.data, "");
      // The right one: the second reply names it, then bytes both ways with half-close.
      const right = await peer(port);
      const second = await c.readExactly(10);
      assert.equal(toHex(second), toHex(hex(`05 00 00 01 7f000001 ${hexPort(right.localPort!)}`)));
      const rightSees = readAll(right);
      c.send("up bytes");
      right.end("down bytes");
      assert.equal(String(await c.readExactly(10)), "down bytes");
      c.end();
      assert.deepEqual(await rightSees, { data: "up bytes", reset: false });
      assert.equal(String(await c.readToEnd()), "");
      // Exactly one connection: the listener is gone.
      assert.equal(await refused(port), true);
    } finally {
      c.destroy();
    }
    const record = await within(
      5_000,
      "record",
      (async () => {
        for (;;) {
          const r = logs.find((l) => l.command === "bind" && l.outcome === "tunnel_done");
          if (r) return r;
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
    assert.equal(record.protocol, "socks5");
    assert.equal(record.target, "127.0.0.1:0");
    assert.equal(record.dialed, "127.0.0.1");
    assert.equal(record.up, 8);
    assert.equal(record.down, 10);
  });

  it("SOCKS4: the same two replies, byte by byte", async () => {
    const c = await RawClient.open(proxy.port);
    try {
      c.send(bind4("127.0.0.1", 21));
      const first = await c.readExactly(8);
      const port = portOf(first, 2);
      assert.equal(toHex(first), toHex(hex(`00 5a ${hexPort(port)} 7f000001`)));
      const right = await peer(port);
      assert.equal(toHex(await c.readExactly(8)), toHex(hex(`00 5a ${hexPort(right.localPort!)} 7f000001`)));
      right.write("hello");
      assert.equal(String(await c.readExactly(5)), "hello");
      right.destroy();
    } finally {
      c.destroy();
    }
  });

  it("no peer within the connect timeout: 0x06 (SOCKS4 0x5B), the listener closed", async () => {
    const c = await RawClient.open(short.port);
    c.send(GREETING);
    c.send(bind5());
    await c.readExactly(2);
    const port = portOf(await c.readExactly(10), 8);
    // A wrong peer inside the wait changes nothing.
    const wrong = await peer(port, "127.0.0.2");
    assert.equal((await readAll(wrong)).data, "");
    assert.equal(toHex(await c.readToEnd()), "05 06 00 01 00 00 00 00 00 00");
    c.destroy();
    assert.equal(await refused(port), true);

    const c4 = await RawClient.open(short.port);
    c4.send(bind4());
    const port4 = portOf(await c4.readExactly(8), 2);
    assert.equal(toHex(await c4.readToEnd()), "00 5b 00 00 00 00 00 00");
    c4.destroy();
    assert.equal(await refused(port4), true);
  });

  it("the control connection closing ends the wait and closes the listener", async () => {
    const c = await RawClient.open(proxy.port);
    c.send(GREETING);
    c.send(bind5());
    await c.readExactly(2);
    const port = portOf(await c.readExactly(10), 8);
    c.end();
    c.destroy();
    let closed = false;
    for (let i = 0; i < 50 && !closed; i++) {
      closed = await refused(port);
      if (!closed) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(closed, true);
    await within(
      5_000,
      "record",
      (async () => {
        while (!logs.some((l) => l.command === "bind" && l.outcome === "client_closed")) {
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
  });

  it("--bind-address: the listener is on that address, whatever the client reached", async () => {
    const fixed = await startProxy({ bind: true, bindAddress: "127.0.0.2", policy: { allowPrivate: true } });
    try {
      const c = await RawClient.open(fixed.port);
      c.send(GREETING);
      c.send(bind5());
      await c.readExactly(2);
      const first = await c.readExactly(10);
      const port = portOf(first, 8);
      assert.equal(toHex(first), toHex(hex(`05 00 00 01 7f000002 ${hexPort(port)}`)));
      const right = await within(
        5_000,
        "peer to 127.0.0.2",
        new Promise<Socket>((resolve, reject) => {
          const s = connect({ port, host: "127.0.0.2", localAddress: "127.0.0.1" }, () => resolve(s));
          s.once("error", reject);
        }),
      );
      assert.equal(
        toHex(await c.readExactly(10)),
        toHex(hex(`05 00 00 01 7f000001 ${hexPort(right.localPort!)}`)),
      );
      right.destroy();
      c.destroy();
    } finally {
      await fixed.close();
    }
    const { cmd, args } = runtimeCommand();
    const r = await run(cmd, [...args, "--bind-address", "nope"]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'edgesocks: --bind-address needs an IP address, got "nope"');
  });

  it("a server shutting down ends the wait: 0x01, the listener closed, close() resolves", async () => {
    const stopping = await startProxy({ bind: true, policy: { allowPrivate: true } });
    const c = await RawClient.open(stopping.port);
    c.send(GREETING);
    c.send(bind5());
    await c.readExactly(2);
    const port = portOf(await c.readExactly(10), 8);
    await within(10_000, "server close", stopping.close());
    assert.equal(toHex(await c.readToEnd()), "05 01 00 01 00 00 00 00 00 00");
    c.destroy();
    assert.equal(await refused(port), true);
  });

  it("the destination policy decides who may connect back; 0.0.0.0 is nobody; without --bind 0x07", async () => {
    assert.equal(
      toHex(await RawClient.exchange(strict.port, Uint8Array.of(...GREETING, ...bind5("127.0.0.3")))),
      "05 00 05 02 00 01 00 00 00 00 00 00",
    );
    assert.equal(
      toHex(await RawClient.exchange(proxy.port, Uint8Array.of(...GREETING, ...bind5("0.0.0.0")))),
      "05 00 05 02 00 01 00 00 00 00 00 00",
    );
    const closedDefault = await startProxy({ bind: true }); // loopback refused by default
    try {
      assert.equal(
        toHex(await RawClient.exchange(closedDefault.port, Uint8Array.of(...GREETING, ...bind5()))),
        "05 00 05 02 00 01 00 00 00 00 00 00",
      );
    } finally {
      await closedDefault.close();
    }
    assert.equal(
      toHex(await RawClient.exchange(plain.port, Uint8Array.of(...GREETING, ...bind5()))),
      "05 00 05 07 00 01 00 00 00 00 00 00",
    );
    assert.equal(toHex(await RawClient.exchange(plain.port, bind4())), "00 5b 00 00 00 00 00 00");
  });

  it("over IPv6: the listener and both replies are IPv6; SOCKS4 (4-byte addresses) gets 0x5B", async () => {
    const v6 = await startProxy({
      bind: true,
      policy: { allowPrivate: true },
      listen: [{ host: "::1", port: 0 }],
    });
    try {
      const c = await RawClient.open(v6.port, "::1");
      c.send(GREETING);
      c.send(hex("05 02 00 04 00000000000000000000000000000001 0000"));
      assert.equal(toHex(await c.readExactly(2)), "05 00");
      const first = await c.readExactly(22);
      const port = portOf(first, 20);
      assert.equal(toHex(first), toHex(hex(`05 00 00 04 00000000000000000000000000000001 ${hexPort(port)}`)));
      const right = await within(
        5_000,
        "v6 peer",
        new Promise<Socket>((resolve, reject) => {
          const s = connect({ port, host: "::1" }, () => resolve(s));
          s.once("error", reject);
        }),
      );
      const second = await c.readExactly(22);
      assert.equal(
        toHex(second),
        toHex(hex(`05 00 00 04 00000000000000000000000000000001 ${hexPort(right.localPort!)}`)),
      );
      right.destroy();
      c.destroy();
      const c4 = await RawClient.open(v6.port, "::1");
      c4.send(bind4());
      assert.equal(toHex(await c4.readToEnd()), "00 5b 00 00 00 00 00 00");
      c4.destroy();
    } finally {
      await v6.close();
    }
  });

  it("the npm socks client's bind: 'bound', then 'established' once the peer connects", async () => {
    const require = createRequire(import.meta.url);
    const { SocksClient } = require("socks") as typeof import("socks");
    const client = new SocksClient({
      proxy: { host: "127.0.0.1", port: proxy.port, type: 5 },
      command: "bind",
      destination: { host: "127.0.0.1", port: 0 },
      timeout: 5_000,
    });
    let peerSocket: Socket | undefined;
    const established = within(
      10_000,
      "socks bind",
      new Promise<{ socket: Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
        client.on("bound", (info) => {
          assert.equal(info.remoteHost?.host, "127.0.0.1");
          peer(info.remoteHost!.port).then((s) => (peerSocket = s), reject);
        });
        client.on("established", (info) => resolve(info as never));
        client.on("error", reject);
        client.connect();
      }),
    );
    const info = await established;
    try {
      assert.equal(info.remoteHost?.host, "127.0.0.1");
      assert.equal(info.remoteHost?.port, peerSocket!.localPort);
      peerSocket!.write("from the peer");
      const got = await within(
        5_000,
        "data",
        new Promise<string>((r) => info.socket.once("data", (d) => r(String(d)))),
      );
      assert.equal(got, "from the peer");
    } finally {
      info.socket.destroy();
      peerSocket?.destroy();
    }
  });
});

describe("BIND with real clients: socksify tnftp -A (active FTP) through the CLI's --bind", () => {
  let dir: string;
  let ftp: { port: number; stop(): void };
  const payload = randomBytes(300_000);
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-bind-"));
    writeFileSync(join(dir, "file.bin"), payload);
    ftp = await within(
      15_000,
      "pyftpdlib",
      new Promise((resolve, reject) => {
        const child = spawn("/usr/bin/python3", [join(ROOT, "tests/_ftp_server.py"), dir, "0", "60"], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stdout!.on("data", (d) => {
          out += d;
          const m = /PORT (\d+)/.exec(out);
          if (m) resolve({ port: Number(m[1]), stop: () => child.kill("SIGKILL") });
        });
        child.stderr!.on("data", (d) => (err += d));
        child.on("error", reject);
        child.on("exit", (code) => reject(new Error(`pyftpdlib exited ${code}: ${err}`)));
      }),
    );
  });
  after(() => {
    ftp?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const protocol of ["socks_v5", "socks_v4"]) {
    it(`${protocol}: CONNECT for the control connection, BIND for the data; the file arrives byte-exact`, async () => {
      const proxy = await spawnProxy([
        "--listen",
        "127.0.0.1:0",
        "--bind",
        "--allow-private",
        "--log",
        "text",
      ]);
      const conf = join(dir, `socks-${protocol}.conf`);
      const got = join(dir, `got-${protocol}.bin`);
      writeFileSync(
        conf,
        `route { from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = ${proxy.port}\n` +
          `  proxyprotocol: ${protocol}\n  method: none\n}\n`,
      );
      try {
        const r = await run("sh", [
          "-c",
          `SOCKS_CONF=${conf} SOCKS_AUTOADD_LANROUTES=no exec socksify tnftp -A -n -v ` +
          `ftp://anonymous:x@127.0.0.1:${ftp.port}/`,
        ], { input: `binary\nget file.bin ${got}\nquit\n`, timeoutMs: 30_000 });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /200 Active data connection established/);
        assert.match(r.stdout, /226 Transfer complete/);
        assert.ok(Buffer.from(readFileSync(got)).equals(payload), "the file arrived intact");
        // It went through BIND (not a direct data connection).
        await until(
          5_000,
          () => proxy.output(),
          () => / bind 127\.0\.0\.1:\d+ .*outcome=tunnel_done/.test(proxy.output()),
        );
      } finally {
        await proxy.stop();
      }
    });
  }
});
