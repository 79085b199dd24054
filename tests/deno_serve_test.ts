/**
 * The `deno serve` edge (lib/cli/deno_serve.ts), end to end on loopback:
 * real clients (curl, nc.openbsd, socat, a raw SOCKS5 client) → `edgesocks
 * bridge` on the runtime under test → `deno serve` running the module
 * (always Deno, a child process, configured by environment variables) →
 * targets started here.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
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
import { type DohFixture, startDoh } from "./_doh_fixture.ts";
import type { DenoServeHandler } from "../lib/cli/deno_serve.ts";

// What `deno serve` takes as a default export (checked by `deno check`; a type only, erased elsewhere).
export const asServeDefaultExport = (handler: DenoServeHandler): Deno.ServeDefaultExport => handler;

const MODULE = join(ROOT, "lib/cli/deno_serve.ts");
const DENO = join(ROOT, "node_modules/.bin/deno");
const EDGE_LINE = /SOCKS over WebSocket at 127\.0\.0\.1:(\d+)\/socks /;
const TOKEN = "s3cret-token";
const MiB = 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), "edgesocks-deno-serve-"));
const TOKEN_FILE = join(dir, "token"), WRONG_FILE = join(dir, "wrong");
writeFileSync(TOKEN_FILE, `${TOKEN}\n`);
writeFileSync(WRONG_FILE, "not-the-token\n");

/** `deno serve` on 127.0.0.1, port 0, running the module with these variables (and the token, path). */
const startEdge = (env: Record<string, string>): Promise<ProxyProcess> =>
  spawnProxy([], {
    cmd: DENO,
    args: ["serve", "-A", "--host", "127.0.0.1", "--port", "0", MODULE],
    env: { EDGESOCKS_WS_TOKEN: TOKEN, EDGESOCKS_WS_PATH: "/socks", ...env },
    startup: EDGE_LINE,
    startupMs: 30_000,
  });

/** `edgesocks bridge` on the runtime under test, to `edge`'s /socks. */
const bridgeTo = (edge: ProxyProcess, tokenFile = TOKEN_FILE): Promise<ProxyProcess> =>
  startBridge(`ws://127.0.0.1:${edge.port}/socks`, ["--token-file", tokenFile, "--log", "text"]);

/** An upgrade request sent by curl straight to the edge: the status line, the body. */
async function upgrade(port: number, headers: string[], path = "/socks") {
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
    `http://127.0.0.1:${port}${path}`,
  ]);
  const text = r.stdout.replace(/\r/g, "");
  return { status: text.split("\n")[0].replace(/ +$/, ""), body: text.slice(text.indexOf("\n\n") + 2) };
}

/** A target that answers once it has the client's FIN: with what it got, then its own FIN. */
const startAnswerAfterFin = () =>
  startTcp((s: Socket) => {
    const got: Buffer[] = [];
    s.on("data", (d: Buffer) => got.push(d));
    s.on("end", () => s.end(`after your FIN: ${Buffer.concat(got)}`));
  });

describe(`deno serve edge, bridge on ${RUNTIME}`, () => {
  /** allow-private, no users, logs. */
  let open: ProxyProcess;
  /** EDGESOCKS_USERS, allow-private. */
  let users: ProxyProcess;
  /** The default policy: private destinations refused. */
  let strict: ProxyProcess;
  const bridges: Record<"open" | "wrong" | "users" | "strict", ProxyProcess> = {} as never;
  let http: Awaited<ReturnType<typeof startHttp>>;
  let doh: DohFixture;

  before(async () => {
    [http, doh] = await Promise.all([startHttp(), startDoh()]);
    [open, users, strict] = await Promise.all([
      startEdge({
        EDGESOCKS_ALLOW_PRIVATE: "true",
        EDGESOCKS_LOG: "text",
        EDGESOCKS_DOH: doh.url,
        EDGESOCKS_RULES: "# a comment\ndeny 127.0.0.2\n",
      }),
      startEdge({ EDGESOCKS_ALLOW_PRIVATE: "true", EDGESOCKS_USERS: "alice:wonder land\nbob:builder\n" }),
      startEdge({}),
    ]);
    [bridges.open, bridges.wrong, bridges.users, bridges.strict] = await Promise.all([
      bridgeTo(open),
      bridgeTo(open, WRONG_FILE),
      bridgeTo(users),
      bridgeTo(strict),
    ]);
  });

  after(async () => {
    await Promise.all([open, users, strict, ...Object.values(bridges)].map((p) => p?.stop()));
    await Promise.all([http?.close(), doh?.close()]);
  });

  it("says where it serves, and what it asks for", () => {
    assert.match(
      open.startup,
      /^edgesocks \S+ on deno \S+ \(deno serve\): SOCKS over WebSocket at 127\.0\.0\.1:\d+\/socks \(auth: none, WebSocket token required, private destinations allowed\)$/,
    );
    assert.match(users.startup, /\(auth: username\/password \(2 users\), WebSocket token required, private/);
    assert.match(strict.startup, /\(auth: none, WebSocket token required\)$/);
  });

  it("curl fetches through the bridge: --socks5-hostname, --socks5, --socks4a; the edge logs it", async () => {
    for (const flag of ["--socks5-hostname", "--socks5", "--socks4a"]) {
      const r = await curl([flag, `127.0.0.1:${bridges.open.port}`, `http://127.0.0.1:${http.port}/`]);
      assert.deepEqual(
        { code: r.code, body: r.stdout, err: r.stderr },
        { code: 0, body: HTTP_BODY, err: "" },
        flag,
      );
    }
    await until(
      5_000,
      () => open.output(),
      () => open.output().split("\n").filter((l) => /outcome=tunnel_done/.test(l)).length >= 3,
    );
    assert.match(
      open.output(),
      new RegExp(
        `127\\.0\\.0\\.1:\\d+ socks5 connect 127\\.0\\.0\\.1:${http.port} .*reply=granted outcome=tunnel_done up=\\d+ down=\\d+`,
      ),
    );
  });

  it("the edge's HTTP answers: 401 for a wrong or missing token, 404 on another path, 426 without an upgrade", async () => {
    assert.deepEqual(await upgrade(open.port, ["Authorization: Bearer not-the-token"]), {
      status: "HTTP/1.1 401 Unauthorized",
      body: "wrong token\n",
    });
    assert.deepEqual(await upgrade(open.port, []), {
      status: "HTTP/1.1 401 Unauthorized",
      body: "missing token\n",
    });
    assert.deepEqual(await upgrade(open.port, [`Authorization: Bearer ${TOKEN}`], "/other"), {
      status: "HTTP/1.1 404 Not Found",
      body: "not found\n",
    });
    // An upgrade without Sec-WebSocket-Key: Deno's upgradeWebSocket refuses it.
    const broken = await curl([
      "-i",
      "-H",
      "Connection: Upgrade",
      "-H",
      "Upgrade: websocket",
      "-H",
      `Authorization: Bearer ${TOKEN}`,
      `http://127.0.0.1:${open.port}/socks`,
    ]);
    assert.match(
      broken.stdout.replace(/\r/g, ""),
      /^HTTP\/1\.1 400 Bad Request\n[\s\S]*\n\nbad WebSocket handshake\n$/,
    );
    const plain = await curl(["-i", `http://127.0.0.1:${open.port}/socks`]);
    assert.match(
      plain.stdout.replace(/\r/g, ""),
      /^HTTP\/1\.1 426 Upgrade Required\n[\s\S]*\n\na WebSocket upgrade is required\n$/,
    );
  });

  it("a wrong token: the bridge's client gets no byte, and the bridge says why", async () => {
    const wrong = bridges.wrong;
    const c = await RawClient.open(wrong.port);
    c.send(socks5ConnectBytes(http.port));
    assert.equal((await c.readToEnd(10_000)).length, 0, wrong.errors());
    c.destroy();
    await until(5_000, () => wrong.errors(), () => /tunnel to .* failed/.test(wrong.errors()));
    assert.equal(wrong.child.exitCode, null, "the bridge keeps running");
  });

  it("a token in the subprotocol (a WHATWG client): accepted, edgesocks selected", async () => {
    // base64url("s3cret-token") = czNjcmV0LXRva2Vu.
    const opened = await openWithTokenProtocol(`ws://127.0.0.1:${open.port}/socks`, "s3cret-token");
    assert.equal(opened, "edgesocks");
  });

  it("half-close, the client's FIN first: nc.openbsd -N (SOCKS5, SOCKS4) and socat (SOCKS4A) get the answer sent after it", async () => {
    const target = await startAnswerAfterFin();
    try {
      for (const version of ["5", "4"]) {
        const r = await run("nc.openbsd", [
          "-N",
          "-X",
          version,
          "-x",
          `127.0.0.1:${bridges.open.port}`,
          "127.0.0.1",
          String(target.port),
        ], { input: `hello over socks${version}\n` });
        assert.deepEqual([r.stdout, r.code], [`after your FIN: hello over socks${version}\n`, 0], r.stderr);
      }
      const r = await run("socat", [
        "-t",
        "10",
        "-",
        `SOCKS4A:127.0.0.1:127.0.0.1:${target.port},socksport=${bridges.open.port}`,
      ], { input: "hello over SOCKS4A\n" });
      assert.deepEqual([r.stdout, r.code], ["after your FIN: hello over SOCKS4A\n", 0], r.stderr);
    } finally {
      await target.close();
    }
  });

  it("half-close, the target's FIN first: the client's bytes after it still arrive", async () => {
    let uploaded = 0;
    let finished!: () => void;
    const done = new Promise<void>((r) => (finished = r));
    const target = await startTcp((s: Socket) => {
      s.end("banner then FIN");
      s.on("data", (d) => (uploaded += d.length));
      s.on("end", finished);
    });
    try {
      const c = await RawClient.open(bridges.open.port);
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

  it("curl downloads 100 MiB byte-exact", async () => {
    const block = randomBytes(MiB);
    const total = 100 * MiB;
    const expected = createHash("sha256");
    for (let i = 0; i < 100; i++) expected.update(block);
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += block.length;
          if (!res.write(block)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
    });
    const port = await new Promise<number>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
    );
    const file = join(dir, "download");
    try {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "120",
        "--socks5-hostname",
        `127.0.0.1:${bridges.open.port}`,
        "-o",
        file,
        `http://127.0.0.1:${port}/`,
      ], { timeoutMs: 130_000 });
      assert.deepEqual([r.code, r.stderr], [0, ""]);
      const got = readFileSync(file);
      assert.equal(got.length, total);
      assert.equal(createHash("sha256").update(got).digest("hex"), expected.digest("hex"));
    } finally {
      (server as unknown as { closeAllConnections(): void }).closeAllConnections();
      server.close();
      rmSync(file, { force: true });
    }
  });

  it("a slow reader: the target is held back (downloads are paced by bufferedAmount), then every byte arrives", async () => {
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
      const c = await RawClient.open(bridges.open.port);
      c.socket.pause();
      c.send(socks5ConnectBytes(target.port));
      await until(30_000, () => "the target never started writing", () => written > 0);
      for (let last = -1; written !== last && written < total;) {
        last = written;
        await sleep(700);
      }
      assert.ok(written < 48 * MiB, `the target wrote ${written >> 20} MiB to a client that reads nothing`);
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

  it("an upload faster than the target: the edge closes at its 8 MiB bound (1008) instead of queueing on, and ends the target's connection at once", async () => {
    let received = 0;
    let target: Socket | undefined;
    let targetEnded = "";
    const sink = await startTcp((s: Socket) => {
      target = s;
      s.pause();
      s.on("data", (d) => (received += d.length));
      s.on("end", () => (targetEnded ||= "end"));
      s.on("error", (e: Error & { code?: string }) => (targetEnded ||= e.code ?? "error"));
    });
    try {
      const c = await RawClient.open(bridges.open.port);
      c.send(socks5ConnectBytes(sink.port));
      await c.readExactly(12, 10_000);
      let written = 0;
      const block = randomBytes(64 * 1024);
      await within(
        60_000,
        "the edge ending the tunnel",
        (async () => {
          while (!c.ended && written < 256 * MiB) {
            written += block.length;
            if (!c.socket.write(block)) {
              await new Promise<void>((r) => {
                c.socket.once("drain", r);
                c.socket.once("close", r);
              });
            }
          }
        })(),
      );
      assert.ok(c.ended, `the client wrote ${written >> 20} MiB and the tunnel is still open`);
      assert.ok(written < 64 * MiB, `the client wrote ${written >> 20} MiB before the tunnel ended`);
      await until(
        10_000,
        () => bridges.open.errors(),
        () => /tunnel to .* failed/.test(bridges.open.errors().split("\n").slice(-3).join("\n")),
      );
      c.destroy();
      // The edge's relay was stuck writing to the target, which reads nothing: the 1008 ends the tunnel
      // all the same, the target's connection is closed (Deno cannot reset it: once the target reads
      // again it gets what its kernel holds, then the FIN), and the record says why. (It stayed open
      // until the target went away or the idle timeout, and then said ConnectionReset.)
      assert.ok(target, "the target was reached");
      const line = () =>
        open.output().split("\n").find((l) => /outcome=tunnel_error/.test(l) && /not yet read/.test(l));
      await until(10_000, () => open.output(), () => line() !== undefined);
      assert.match(line()!, /WebSocketClosedError: more than 8388608 bytes received and not yet read/);
      target!.resume();
      await until(
        10_000,
        () => `the target's connection is still open (${received >> 20} MiB read)`,
        () => targetEnded !== "",
      );
      assert.equal(targetEnded, "end");
    } finally {
      await sink.close();
    }
    assert.ok(received < 64 * MiB);
  });

  it("EDGESOCKS_DOH: RESOLVE, RESOLVE_PTR (tor-resolve) and CONNECT by name (curl) go through it", async () => {
    const proxy = `127.0.0.1:${bridges.open.port}`;
    const cases: [string[], string][] = [
      [["-5", "web.test"], "127.0.0.1\n"],
      [["-4", "alias.test"], "127.0.0.1\n"],
      [["-5", "-x", "192.0.2.55"], "ptr.test\n"],
    ];
    for (const [args, answer] of cases) {
      const r = await run("tor-resolve", [...args, proxy]);
      assert.deepEqual([r.stdout, r.code], [answer, 0], `tor-resolve ${args.join(" ")}: ${r.stderr}`);
    }
    const before = doh.requests.length;
    const r = await curl(["--socks5-hostname", proxy, `http://web.test:${http.port}/`]);
    assert.deepEqual({ code: r.code, body: r.stdout, err: r.stderr }, { code: 0, body: HTTP_BODY, err: "" });
    assert.ok(doh.requests.slice(before).some((q) => q.name === "web.test"), "the DoH fixture was asked");
  });

  it("EDGESOCKS_USERS: SOCKS5 needs the login (curl with and without), SOCKS4 is refused", async () => {
    const url = `http://127.0.0.1:${http.port}/`;
    const ok = await curl([
      "--socks5-hostname",
      `127.0.0.1:${bridges.users.port}`,
      "--proxy-user",
      "alice:wonder land",
      url,
    ]);
    assert.deepEqual({ code: ok.code, body: ok.stdout, err: ok.stderr }, {
      code: 0,
      body: HTTP_BODY,
      err: "",
    });
    const wrong = await curl([
      "--socks5-hostname",
      `127.0.0.1:${bridges.users.port}`,
      "--proxy-user",
      "alice:nope",
      url,
    ]);
    assert.equal(wrong.code, 97, wrong.stderr);
    // No login offered: the edge answers "no acceptable method"; SOCKS4: 0x5B.
    assert.equal(
      (await RawClient.exchange(bridges.users.port, Uint8Array.of(5, 1, 0))).toString("hex"),
      "05ff",
    );
    const socks4 = await RawClient.exchange(
      bridges.users.port,
      Uint8Array.of(4, 1, http.port >> 8, http.port & 0xff, 127, 0, 0, 1, 0),
    );
    assert.equal(socks4.subarray(0, 2).toString("hex"), "005b");
  });

  it("EDGESOCKS_RULES: a denied destination gets reply 0x02", async () => {
    const c = await RawClient.open(bridges.open.port);
    c.send(socks5ConnectBytes(http.port, "127.0.0.2"));
    assert.equal((await c.readExactly(12, 10_000)).toString("hex"), "0500" + "05020001000000000000");
    c.destroy();
  });

  it("the default policy: 127.0.0.1 without EDGESOCKS_ALLOW_PRIVATE gets reply 0x02", async () => {
    const c = await RawClient.open(bridges.strict.port);
    c.send(socks5ConnectBytes(http.port));
    assert.equal((await c.readExactly(12, 10_000)).toString("hex"), "0500" + "05020001000000000000");
    c.destroy();
    const r = await curl([
      "--socks5-hostname",
      `127.0.0.1:${bridges.strict.port}`,
      `http://127.0.0.1:${http.port}/`,
    ]);
    assert.equal(r.code, 97, r.stderr);
  });
});

describe("deno serve edge: the module by URL", () => {
  it("deno serve runs it from a URL (a static file server of the repository, on loopback)", async () => {
    const files = createHttpServer((req, res) => {
      const path = join(ROOT, decodeURIComponent(new URL(req.url!, "http://x").pathname));
      if (!path.startsWith(ROOT) || !/\.(ts|json)$/.test(path)) return void res.writeHead(404).end();
      try {
        res.writeHead(200, { "content-type": "application/typescript" }).end(readFileSync(path));
      } catch {
        res.writeHead(404).end();
      }
    });
    const port = await new Promise<number>((resolve) =>
      files.listen(0, "127.0.0.1", () => resolve((files.address() as { port: number }).port))
    );
    const http = await startHttp();
    const edge = await spawnProxy([], {
      cmd: DENO,
      args: [
        "serve",
        "-A",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        `http://127.0.0.1:${port}/lib/cli/deno_serve.ts`,
      ],
      env: { EDGESOCKS_WS_TOKEN: TOKEN, EDGESOCKS_WS_PATH: "/socks", EDGESOCKS_ALLOW_PRIVATE: "true" },
      startup: EDGE_LINE,
      startupMs: 60_000,
    });
    let bridge: ProxyProcess | undefined;
    try {
      bridge = await bridgeTo(edge);
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${bridge.port}`,
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.deepEqual({ code: r.code, body: r.stdout, err: r.stderr }, {
        code: 0,
        body: HTTP_BODY,
        err: "",
      });
    } finally {
      await Promise.all([edge.stop(), bridge?.stop()]);
      await http.close();
      (files as unknown as { closeAllConnections(): void }).closeAllConnections();
      files.close();
    }
  });
});

describe("deno serve edge: a wrong variable", () => {
  it("is said on standard error and ends deno serve with exit code 2", async () => {
    await assert.rejects(
      startEdge({ EDGESOCKS_RULES: "allow *\nlet 127.0.0.1" }),
      /exited with 2: edgesocks: environment variable EDGESOCKS_RULES line 2: expected "allow RULE" or "deny RULE"/,
    );
    await assert.rejects(
      startEdge({ EDGESOCKS_WS_TOKEN: "" }),
      /exited with 2: edgesocks: environment variable EDGESOCKS_WS_TOKEN is required/,
    );
  });
});

after(() => rmSync(dir, { recursive: true, force: true }));
