/**
 * SOCKS over WebSocket end to end, loopback only: real clients (curl, a raw
 * SOCKS5 client) → `edgesocks bridge` on the runtime under test → a
 * `--listen-ws` edge on each of Deno, Bun and Node (child processes) →
 * targets started here. Each pair runs once in CI: in the run of the
 * runtime that is its bridge. Plus wss:// with a CA the test generates, and
 * the 401s.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { closePayload, encodeFrame, Opcode } from "../lib/core/websocket_frames.ts";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import {
  curl,
  HTTP_BODY,
  openWithTokenProtocol,
  type ProxyProcess,
  RawClient,
  ROOT,
  run,
  RUNTIME,
  sleep,
  socks5ConnectBytes,
  spawnProxy,
  startBridge,
  startHttp,
  startTcp,
  until,
  within,
} from "./_fixtures.ts";

type Runtime = "deno" | "bun" | "node";
const RUNTIMES: Runtime[] = ["deno", "bun", "node"];
const MOD = join(ROOT, "mod.ts");
const program = (r: Runtime) => ({
  cmd: join(ROOT, "node_modules/.bin", r),
  args: r === "deno" ? ["run", "-A", MOD] : [MOD],
});

/** Starts `r` running mod.ts with `args`; waits for a startup line `pattern` matches (its group 1: the port). */
const start = (r: Runtime, args: string[], pattern: RegExp): Promise<ProxyProcess> =>
  spawnProxy(args, { ...program(r), startup: pattern, startupMs: 30_000 });

const EDGE_LINE = /ws:\/\/127\.0\.0\.1:(\d+)\/socks/;
const WSS_LINE = /wss:\/\/127\.0\.0\.1:(\d+)\/socks/;

const dir = mkdtempSync(join(tmpdir(), "edgesocks-ws-"));
const TOKEN = join(dir, "token"), WRONG = join(dir, "wrong");
writeFileSync(TOKEN, "s3cret-token\n");
writeFileSync(WRONG, "not-the-token\n");

const MiB = 1024 * 1024;

/** An upgrade request sent by curl straight to the edge: the status line, the body. */
async function upgrade(port: number, headers: string[]) {
  const r = await curl([
    "-i",
    "-H",
    "Connection: Upgrade",
    "-H",
    "Upgrade: websocket",
    "-H",
    "Sec-WebSocket-Version: 13",
    "-H",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ...headers.flatMap((h) => ["-H", h]),
    `http://127.0.0.1:${port}/socks`,
  ]);
  const text = r.stdout.replace(/\r/g, "");
  return {
    status: text.split("\n")[0].replace(/ +$/, ""),
    body: text.slice(text.indexOf("\n\n") + 2),
    code: r.code,
    stderr: r.stderr,
  };
}

describe(`SOCKS over WebSocket: bridge on ${RUNTIME} to each edge`, () => {
  const edges = new Map<Runtime, ProxyProcess>();
  const bridges = new Map<Runtime, ProxyProcess>();
  const wrongBridges = new Map<Runtime, ProxyProcess>();
  let http: Awaited<ReturnType<typeof startHttp>>;

  before(async () => {
    http = await startHttp();
    await Promise.all(RUNTIMES.map(async (e) => {
      const edge = await start(e, [
        "--listen-ws",
        "127.0.0.1:0/socks",
        "--ws-token-file",
        TOKEN,
        "--allow-private",
      ], EDGE_LINE);
      edges.set(e, edge);
      const to = `ws://127.0.0.1:${edge.port}/socks`;
      bridges.set(e, await startBridge(to, ["--log", "text", "--token-file", TOKEN]));
      wrongBridges.set(e, await startBridge(to, ["--log", "text", "--token-file", WRONG]));
    }));
  });

  after(async () => {
    await Promise.all(
      [...edges.values(), ...bridges.values(), ...wrongBridges.values()].map((c) => c.stop()),
    );
    await http?.close();
  });

  for (const e of RUNTIMES) {
    describe(`bridge ${RUNTIME} → edge ${e}`, () => {
      const bridge = () => bridges.get(e)!.port;

      it("curl fetches through it: --socks5-hostname, --socks5, --socks4a", async () => {
        for (const flag of ["--socks5-hostname", "--socks5", "--socks4a"]) {
          const r = await curl([flag, `127.0.0.1:${bridge()}`, `http://127.0.0.1:${http.port}/`]);
          assert.deepEqual({ code: r.code, body: r.stdout, err: r.stderr }, {
            code: 0,
            body: HTTP_BODY,
            err: "",
          }, flag);
        }
      });

      it("half-close both ways: the target's FIN first, then the client's", async () => {
        let uploaded = 0;
        let finished!: () => void;
        const done = new Promise<void>((r) => (finished = r));
        const target = await startTcp((s: Socket) => {
          s.end("banner then FIN");
          s.on("data", (d) => (uploaded += d.length));
          s.on("end", finished);
        });
        try {
          const c = await RawClient.open(bridge());
          c.send(socks5ConnectBytes(target.port));
          assert.equal((await c.readExactly(12, 10_000)).subarray(0, 4).toString("hex"), "05000500");
          assert.equal(String(await c.readToEnd(10_000)), "banner then FIN");
          c.send(randomBytes(300_000));
          c.end();
          await within(10_000, "the upload after the target's FIN", done);
          assert.equal(uploaded, 300_000);
          c.destroy();
        } finally {
          await target.close();
        }
      });

      it("half-close both ways: the client's FIN first; the target answers after it", async () => {
        const target = await startTcp((s: Socket) => {
          let n = 0;
          s.on("data", (d) => (n += d.length));
          s.on("end", () => s.end(`got ${n}`));
        });
        try {
          const c = await RawClient.open(bridge());
          c.send(Buffer.concat([socks5ConnectBytes(target.port), Buffer.alloc(5000, 1)]));
          c.end();
          assert.equal((await c.readExactly(12, 10_000)).subarray(0, 4).toString("hex"), "05000500");
          assert.equal(String(await c.readToEnd(10_000)), "got 5000");
          c.destroy();
        } finally {
          await target.close();
        }
      });

      it("100 MiB byte-exact each way", async () => {
        const block = randomBytes(MiB);
        const total = 100 * MiB;
        const expected = createHash("sha256");
        for (let i = 0; i < 100; i++) expected.update(block);
        const digest = expected.digest("hex");
        // Up: the target hashes what it got and answers with the digest after the client's FIN.
        const up = await startTcp((s: Socket) => {
          const h = createHash("sha256");
          let n = 0;
          s.on("data", (d) => (h.update(d), n += d.length));
          s.on("end", () => s.end(`${n} ${h.digest("hex")}`));
        });
        // Down: the target sends 100 MiB and its FIN.
        const down = await startTcp((s: Socket) => {
          let sent = 0;
          const pump = () => {
            while (sent < total) {
              sent += block.length;
              if (!s.write(block)) return void s.once("drain", pump);
            }
            s.end();
          };
          pump();
          s.on("data", () => {});
        });
        try {
          const c = await RawClient.open(bridge());
          c.send(socks5ConnectBytes(up.port));
          await c.readExactly(12, 10_000);
          await within(
            120_000,
            "upload 100 MiB",
            (async () => {
              for (let i = 0; i < 100; i++) {
                if (!c.socket.write(block)) await new Promise((r) => c.socket.once("drain", r));
              }
            })(),
          );
          c.end();
          assert.equal(String(await c.readToEnd(120_000)), `${total} ${digest}`);
          c.destroy();
          const d = await RawClient.open(bridge());
          // (No FIN from this client before the end: Deno's node:net stops reading a socket it has
          // half-closed after some 4 MiB, with or without edgesocks on the way.)
          d.send(socks5ConnectBytes(down.port));
          const got = createHash("sha256");
          let n = 0;
          await within(
            120_000,
            "download 100 MiB",
            new Promise<void>((resolve, reject) => {
              d.socket.removeAllListeners("data");
              d.socket.on("data", (b: Buffer) => {
                got.update(b.subarray(Math.max(0, 12 - n)));
                n += b.length;
              });
              d.socket.on("end", resolve);
              d.socket.on("error", reject);
            }),
          );
          assert.equal(n, total + 12);
          assert.equal(got.digest("hex"), digest);
          d.destroy();
        } finally {
          await up.close();
          await down.close();
        }
      });

      it("a wrong token: the edge answers 401 and the SOCKS client gets no byte", async () => {
        const direct = await upgrade(edges.get(e)!.port, ["Authorization: Bearer not-the-token"]);
        assert.deepEqual(
          [direct.status.replace(/ Unauthorized$/, ""), direct.body],
          ["HTTP/1.1 401", "wrong token\n"],
          JSON.stringify(direct),
        );
        const wrong = wrongBridges.get(e)!;
        assert.equal(wrong.child.exitCode, null, `the bridge exited: ${wrong.errors()}`);
        const c = await RawClient.open(wrong.port);
        c.send(socks5ConnectBytes(http.port));
        assert.equal((await c.readToEnd(10_000)).length, 0, wrong.errors());
        c.destroy();
        await until(
          5_000,
          () => wrongBridges.get(e)!.errors(),
          () => /tunnel to .* failed/.test(wrongBridges.get(e)!.errors()),
        );
      });

      it("a missing token: 401; a token in the subprotocol: accepted, edgesocks selected", async () => {
        const missing = await upgrade(edges.get(e)!.port, []);
        assert.deepEqual([missing.status.replace(/ Unauthorized$/, ""), missing.body], [
          "HTTP/1.1 401",
          "missing token\n",
        ]);
        // base64url("s3cret-token") = czNjcmV0LXRva2Vu: a WHATWG client, which cannot set headers.
        const opened = await openWithTokenProtocol(
          `ws://127.0.0.1:${edges.get(e)!.port}/socks`,
          "s3cret-token",
        );
        assert.equal(opened, "edgesocks");
      });

      it("a slow target: the client's upload is held back (bounded memory), then every byte arrives", async () => {
        const total = 96 * MiB;
        let received = 0;
        let target!: Socket;
        let finished!: () => void;
        const done = new Promise<void>((r) => (finished = r));
        const sink = await startTcp((s: Socket) => {
          target = s;
          s.pause();
          s.on("data", (d) => (received += d.length));
          s.on("end", () => (finished(), s.end()));
        });
        try {
          const c = await RawClient.open(bridge());
          c.send(socks5ConnectBytes(sink.port));
          await c.readExactly(12, 10_000);
          let written = 0;
          const block = randomBytes(64 * 1024);
          const pump = (async () => {
            while (written < total) {
              written += block.length;
              if (!c.socket.write(block)) await new Promise((r) => c.socket.once("drain", r));
            }
            c.end();
          })();
          for (let last = -1; written !== last && written < total;) {
            last = written;
            await sleep(700);
          }
          assert.ok(
            written < 48 * MiB,
            `the client wrote ${written >> 20} MiB to a target that reads nothing`,
          );
          target.resume();
          await within(120_000, "the upload", Promise.all([pump, done]));
          assert.equal(received, total);
          c.destroy();
        } finally {
          await sink.close();
        }
      });

      it("a slow reader: the edge's target is held back (bounded memory), then every byte arrives", async () => {
        const total = 96 * MiB;
        let written = 0;
        const block = randomBytes(64 * 1024);
        const target = await startTcp((s: Socket) => {
          const pump = () => {
            while (written < total) {
              written += block.length;
              if (!s.write(block)) return void s.once("drain", pump);
            }
            s.end();
          };
          pump();
          s.on("data", () => {});
        });
        try {
          const c = await RawClient.open(bridge());
          c.socket.pause();
          c.send(socks5ConnectBytes(target.port));
          await until(30_000, () => "the target never started writing", () => written > 0);
          for (let last = -1; written !== last && written < total;) {
            last = written;
            await sleep(700);
          }
          assert.ok(
            written < 48 * MiB,
            `the target wrote ${written >> 20} MiB to a client that reads nothing`,
          );
          let n = 0;
          const ended = await within(
            120_000,
            "drain",
            new Promise<string>((resolve) => {
              c.socket.removeAllListeners("data");
              c.socket.on("data", (b: Buffer) => (n += b.length));
              c.socket.on("end", () => resolve("end"));
              c.socket.on("error", () => resolve("error"));
              c.socket.resume();
            }),
          );
          assert.deepEqual([ended, n], ["end", total + 12]);
          c.destroy();
        } finally {
          await target.close();
        }
      });
    });
  }
});

describe(`SOCKS over WebSocket: wss:// with a private CA, bridge and edge on ${RUNTIME}`, () => {
  it("the bridge trusts the edge's certificate with --ca, and refuses it without", async () => {
    const ca = join(dir, "ca"), key = join(dir, "key.pem"), cert = join(dir, "cert.pem");
    const ssl = async (args: string[]) => {
      const r = await run("openssl", args, { timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stderr);
    };
    await ssl([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.pem`,
      "-days",
      "2",
      "-subj",
      "/CN=edgesocks test CA",
    ]);
    await ssl([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      `${dir}/req.csr`,
      "-subj",
      "/CN=127.0.0.1",
    ]);
    writeFileSync(`${dir}/ext`, "subjectAltName=IP:127.0.0.1\n");
    await ssl([
      "x509",
      "-req",
      "-in",
      `${dir}/req.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      cert,
      "-days",
      "2",
      "-extfile",
      `${dir}/ext`,
    ]);
    const http = await startHttp();
    const edge = await start(RUNTIME, [
      "--listen-ws",
      "127.0.0.1:0/socks",
      "--ws-token-file",
      TOKEN,
      "--ws-cert",
      cert,
      "--ws-key",
      key,
      "--allow-private",
    ], WSS_LINE);
    const to = `wss://127.0.0.1:${edge.port}/socks`;
    const trusting = await startBridge(to, ["--token-file", TOKEN, "--ca", `${ca}.pem`]);
    const untrusting = await startBridge(to, ["--token-file", TOKEN, "--log", "text"]);
    try {
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${trusting.port}`,
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.deepEqual({ code: r.code, body: r.stdout }, { code: 0, body: HTTP_BODY });
      const c = await RawClient.open(untrusting.port);
      c.send(socks5ConnectBytes(http.port));
      assert.equal((await c.readToEnd(10_000)).length, 0, "no byte without trusting the CA");
      c.destroy();
    } finally {
      await Promise.all([edge.stop(), trusting.stop(), untrusting.stop()]);
      await http.close();
    }
  });
});

describe(`SOCKS over WebSocket: --workers 2 on ${RUNTIME}`, () => {
  it("the workers share the --listen-ws port (SO_REUSEPORT)", async () => {
    const free = await startTcp(() => {});
    const port = free.port;
    await free.close();
    const http = await startHttp();
    const edge = await start(RUNTIME, [
      "--workers",
      "2",
      "--listen-ws",
      `127.0.0.1:${port}/socks`,
      "--ws-token-file",
      TOKEN,
      "--allow-private",
    ], /ws:\/\/127\.0\.0\.1:(\d+)\/socks .*2 workers/);
    const bridge = await startBridge(`ws://127.0.0.1:${port}/socks`, ["--token-file", TOKEN]);
    try {
      assert.equal(edge.port, port);
      for (let i = 0; i < 4; i++) {
        const r = await curl([
          "--socks5-hostname",
          `127.0.0.1:${bridge.port}`,
          `http://127.0.0.1:${http.port}/`,
        ]);
        assert.deepEqual({ code: r.code, body: r.stdout }, { code: 0, body: HTTP_BODY });
      }
    } finally {
      await Promise.all([edge.stop(), bridge.stop()]);
      await http.close();
    }
  });
});

describe(`SOCKS over WebSocket: the bridge's upgrade request on ${RUNTIME}`, () => {
  it("offers no extension: no permessage-deflate (a tunnel's bytes do not compress; workerd would accept it)", async () => {
    let resolveHead!: (head: string) => void;
    const head = new Promise<string>((r) => (resolveHead = r));
    const edge = await startTcp((s: Socket) => {
      let text = "";
      s.on("data", (d: Buffer) => {
        text += d.toString("latin1");
        if (text.includes("\r\n\r\n")) resolveHead(text.slice(0, text.indexOf("\r\n\r\n")));
      });
    });
    const bridge = await startBridge(`ws://127.0.0.1:${edge.port}/socks`, ["--token-file", TOKEN]);
    try {
      const c = await RawClient.open(bridge.port);
      c.send(socks5ConnectBytes(9)); // (the fake edge answers nothing)
      const lines = (await within(10_000, "the upgrade request", head)).split("\r\n");
      c.destroy();
      assert.match(lines[0], /^GET \/socks HTTP\/1\.1$/);
      const headers = lines.slice(1).map((l) => l.slice(0, l.indexOf(":")).toLowerCase());
      assert.ok(headers.includes("upgrade"), lines.join("\n"));
      assert.ok(!headers.includes("sec-websocket-extensions"), lines.join("\n"));
    } finally {
      await bridge.stop();
      await edge.close();
    }
  });
});

/** What the bridge's local client sees when the edge fails its tunnel: Bun and Node reset, Deno closes at once. */
const CUT_SEEN: Record<Runtime, string> = { bun: "ECONNRESET", node: "ECONNRESET", deno: "end" };

describe(`SOCKS over WebSocket: the edge fails a tunnel mid-download, bridge on ${RUNTIME}`, () => {
  /**
   * A fake edge: it accepts the upgrade, sends 4 MiB as 64 KiB binary messages (a download under way), then
   * closes with `code`, as an edge does when its target resets (1011) or its bound is crossed (1008).
   */
  let edges = 0;
  const fakeEdge = (code: () => number) =>
    startTcp((s: Socket) => {
      let head = "";
      const onData = (d: Buffer) => {
        head += d.toString("latin1");
        const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1];
        if (!head.includes("\r\n\r\n") || !key) return;
        s.off("data", onData);
        s.on("data", () => {}); // the client's frames (its SOCKS bytes, its close): read and dropped
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest(
          "base64",
        );
        s.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: edgesocks\r\n\r\n`,
        );
        const block = encodeFrame(Opcode.Binary, randomBytes(64 * 1024));
        for (let i = 0; i < 64; i++) s.write(block);
        s.write(encodeFrame(Opcode.Close, closePayload(code(), "the tunnel failed")));
        // Its TCP FIN at once, or after the bridge had time to answer the close.
        if (++edges % 2) s.end();
        else setTimeout(() => s.end(), 200);
      };
      s.on("data", onData);
    });

  it(`1011 and 1008, 3 times each: the local client sees ${CUT_SEEN[RUNTIME]}, and the bridge says why`, async () => {
    let code = 1011;
    const edge = await fakeEdge(() => code);
    const bridge = await startBridge(`ws://127.0.0.1:${edge.port}/socks`, ["--log", "text"]);
    try {
      const seen: string[] = [];
      for (const c of [1011, 1011, 1011, 1008, 1008, 1008]) {
        code = c;
        const client = await RawClient.open(bridge.port);
        client.send(socks5ConnectBytes(9)); // (the fake edge answers with its download whatever this is)
        let n = 0;
        const end = await within(
          20_000,
          `the local connection's end after ${c}`,
          new Promise<string>((resolve) => {
            client.socket.removeAllListeners("data");
            client.socket.on("data", (b: Buffer) => (n += b.length));
            client.socket.on("end", () => resolve("end"));
            client.socket.on("error", (e: Error & { code?: string }) => resolve(e.code ?? String(e)));
          }),
        );
        client.destroy();
        seen.push(`${c} ${end}`);
        assert.ok(n <= 4 * MiB, `${n} bytes`);
        await until(
          10_000,
          () => bridge.errors(),
          () =>
            bridge.errors().includes(`failed: WebSocket closed by the peer with ${c} (the tunnel failed)`),
        );
      }
      const want = CUT_SEEN[RUNTIME];
      assert.deepEqual(seen, [1011, 1011, 1011, 1008, 1008, 1008].map((c) => `${c} ${want}`));
    } finally {
      await bridge.stop();
      await edge.close();
    }
  });
});

describe("SOCKS over WebSocket: the CLI's checks", () => {
  it("a non-loopback --listen-ws without a token is refused; a bridge without --to too", async () => {
    const p = program(RUNTIME);
    const r = await run(p.cmd, [...p.args, "--listen-ws", "0.0.0.0:0/socks"]);
    assert.deepEqual([r.code, r.stderr.trim()], [
      2,
      "edgesocks: --listen-ws 0.0.0.0:0/socks is not a loopback address: it needs --ws-token-file",
    ]);
    const b = await run(p.cmd, [...p.args, "bridge", "--listen", "127.0.0.1:0"]);
    assert.deepEqual([b.code, b.stderr.trim()], [2, "edgesocks: bridge: --to ws[s]://HOST/PATH is required"]);
  });
});

after(() => rmSync(dir, { recursive: true, force: true }));
