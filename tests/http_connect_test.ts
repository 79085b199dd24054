// HTTP CONNECT on the SOCKS port (--http-connect): the machine byte by byte (any chunking), then the real
// server on this runtime driven by curl, ncat and a raw pipelined client; the flag off keeps the 501 page.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeBase64, HTTP_MAX_HEAD, HttpConnectMachine, parseAuthority } from "../lib/core/http_connect.ts";
import { SniffingMachine } from "../lib/core/sniff.ts";
import { SocksServerMachine } from "../lib/core/socks_server.ts";
import type { Step } from "../lib/core/request.ts";
import { HTTP_RESISTANCE_RESPONSE } from "../lib/core/replies.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { createAuthenticator } from "../lib/auth.ts";
import { SocksError } from "../lib/core/errors.ts";
import type { ConnectionLog } from "../lib/record.ts";
import type { RuntimeAdapter } from "../lib/runtime.ts";
import {
  closedPort,
  curl,
  HTTP_BODY,
  RawClient,
  run,
  spawnProxy,
  startEcho,
  startHttp,
  startProxy,
  within,
} from "./_fixtures.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder("latin1").decode(b);
const written = (step: Step) => step.write.map(text).join("");

const USERS = new Map([["alice", "s3cret"]]);
const basic = (user: string, password: string) =>
  `Proxy-Authorization: Basic ${btoa(`${user}:${password}`)}\r\n`;

const R403 = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const R502 = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const R504 = "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const R400 = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const R407 = "HTTP/1.1 407 Proxy Authentication Required\r\n" +
  'Proxy-Authenticate: Basic realm="edgesocks"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
const R431 = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const R200 = "HTTP/1.1 200 Connection established\r\n\r\n";

describe("HttpConnectMachine: bytes in, responses out", () => {
  it("a CONNECT by name is a connect request; 200 only once the driver says connected", () => {
    const m = new HttpConnectMachine();
    const step = m.receive(enc("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"));
    assert.deepEqual(step.write, []);
    assert.deepEqual(step.action, {
      type: "request",
      request: {
        version: 5,
        kind: "connect",
        target: { host: "example.org", type: "domain", port: 443 },
        protocol: "http",
      },
      early: new Uint8Array(0),
    });
    const granted = m.answer({ type: "connected", bound: { host: "192.0.2.1", port: 4000 } });
    assert.equal(written(granted), R200);
    assert.deepEqual(granted.action, { type: "relay" });
    assert.equal(granted.reply, 0);
    assert.equal(granted.status, 200);
  });

  it("bytes after the head (pipelined in the same segment) come back as early", () => {
    const m = new HttpConnectMachine();
    const step = m.receive(enc("CONNECT 192.0.2.7:22 HTTP/1.0\r\n\r\nSSH-2.0-x\r\n"));
    assert.equal(step.action.type, "request");
    if (step.action.type !== "request") return;
    assert.deepEqual(step.action.request.target, { host: "192.0.2.7", type: "ipv4", port: 22 });
    assert.equal(text(step.action.early), "SSH-2.0-x\r\n");
  });

  it("IPv6 targets in brackets; bare LF line ends are read too", () => {
    const step = new HttpConnectMachine().receive(enc("CONNECT [2001:DB8::1]:8443 HTTP/1.1\nHost: x\n\n"));
    assert.equal(step.action.type, "request");
    if (step.action.type === "request") {
      assert.deepEqual(step.action.request.target, { host: "2001:db8::1", type: "ipv6", port: 8443 });
    }
  });

  it("targets: authority-form only, a port from 1 to 65535 always", () => {
    assert.deepEqual(parseAuthority("a.example:1"), { host: "a.example", type: "domain", port: 1 });
    assert.deepEqual(parseAuthority("[::1]:65535"), { host: "::1", type: "ipv6", port: 65535 });
    for (
      const bad of [
        "example.org", // no port
        "example.org:", // empty port
        "example.org:0",
        "example.org:65536",
        "example.org:+80",
        "example.org:8o",
        "example.org:123456",
        "::1:443", // IPv6 without brackets
        "[::1]443",
        "[example.org]:443",
        "[1.2.3.4]:443",
        "http://example.org:80/", // absolute-form
        "example.org:80/path",
        "user@example.org:443", // userinfo
        "exa%41mple.org:443",
        ":443",
        `${"a".repeat(256)}:443`,
      ]
    ) {
      assert.equal(parseAuthority(bad), null, bad);
      const m = new HttpConnectMachine();
      const step = m.receive(enc(`CONNECT ${bad} HTTP/1.1\r\n\r\n`));
      assert.equal(written(step), R400, bad);
      assert.deepEqual(step.action, {
        type: "close",
        code: "protocol_error",
        reason: "CONNECT target is not host:port",
      });
      assert.equal(step.status, 400);
    }
  });

  it("a malformed request line or header is 400", () => {
    for (
      const head of [
        "CONNECT a.example:443\r\n\r\n",
        "CONNECT a.example:443 HTTP/2.0\r\n\r\n",
        "CONNECT  a.example:443 HTTP/1.1\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1 x\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\nNo colon here\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\n" + basic("a", "b") + basic("a", "b") + "\r\n",
      ]
    ) {
      const step = new HttpConnectMachine().receive(enc(head));
      assert.equal(written(step), R400, JSON.stringify(head));
      assert.equal(step.action.type, "close");
    }
  });

  it("refusals map from the SOCKS reply codes: 403 refused, 504 timed out, 502 anything else", () => {
    const cases: [number, string][] = [
      [ReplyCode.NotAllowed, R403],
      [ReplyCode.TtlExpired, R504],
      [ReplyCode.ConnectionRefused, R502],
      [ReplyCode.HostUnreachable, R502],
      [ReplyCode.NetworkUnreachable, R502],
      [ReplyCode.GeneralFailure, R502],
    ];
    for (const [reply, expected] of cases) {
      const m = new HttpConnectMachine();
      m.receive(enc("CONNECT a.example:443 HTTP/1.1\r\n\r\n"));
      const step = m.answer({ type: "rejected", reply: reply as ReplyCode });
      assert.equal(written(step), expected);
      assert.equal(step.reply, reply);
      assert.equal(step.action.type, "close");
      if (step.action.type === "close") assert.equal(step.action.code, "answered");
    }
  });

  it("with users: 407 and Proxy-Authenticate when credentials are missing or wrong; the user when right", () => {
    const authenticate = createAuthenticator(USERS);
    const head = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n";
    const missing = new HttpConnectMachine({ authenticate }).receive(enc(head + "\r\n"));
    assert.equal(written(missing), R407);
    assert.deepEqual(missing.action, {
      type: "close",
      code: "auth_unavailable",
      reason: "no Proxy-Authorization",
    });
    const bearer = new HttpConnectMachine({ authenticate }).receive(
      enc(head + "Proxy-Authorization: Bearer abc\r\n\r\n"),
    );
    assert.equal(written(bearer), R407);
    const wrong = new HttpConnectMachine({ authenticate }).receive(
      enc(head + basic("alice", "nope") + "\r\n"),
    );
    assert.equal(written(wrong), R407);
    assert.deepEqual(wrong.action, {
      type: "close",
      code: "auth_failed",
      reason: "authentication failed",
      user: "alice",
    });
    const garbage = new HttpConnectMachine({ authenticate }).receive(
      enc(head + "Proxy-Authorization: Basic !!!!\r\n\r\n"),
    );
    assert.equal(written(garbage), R407);
    const right = new HttpConnectMachine({ authenticate }).receive(
      enc(head + "proxy-authorization: basic " + btoa("alice:s3cret") + "\r\n\r\n"),
    );
    assert.equal(right.action.type, "request");
    if (right.action.type === "request") assert.equal(right.action.request.user, "alice");
  });

  it("the head is bounded: 8 KiB pass, one byte more is 431", () => {
    const line = "CONNECT a.example:443 HTTP/1.1\r\n";
    const pad = (n: number) => `X-Pad: ${"p".repeat(n)}\r\n`;
    const fixed = line.length + pad(0).length + 2;
    const exact = line + pad(HTTP_MAX_HEAD - fixed) + "\r\n";
    assert.equal(exact.length, HTTP_MAX_HEAD);
    assert.equal(new HttpConnectMachine().receive(enc(exact)).action.type, "request");
    const over = line + pad(HTTP_MAX_HEAD - fixed + 1) + "\r\n";
    assert.equal(written(new HttpConnectMachine().receive(enc(over))), R431);
    // Never terminated: cut as soon as more than 8 KiB are held, byte by byte.
    const m = new HttpConnectMachine();
    let step: Step = m.receive(enc(line));
    for (let i = 0; step.action.type === "need_more"; i++) {
      step = m.receive(enc("h"));
      assert.ok(m.buffered <= HTTP_MAX_HEAD);
      assert.ok(i < HTTP_MAX_HEAD);
    }
    assert.equal(written(step), R431);
  });

  it("other methods get the SOCKS port's 501 page as soon as the method is known", () => {
    for (const head of ["COPY / HTTP/1.1\r\n\r\n", "CONNECTX a:1 HTTP/1.1\r\n\r\n", "CONN\r\n"]) {
      const step = new HttpConnectMachine().receive(enc(head));
      assert.deepEqual(step.write, [HTTP_RESISTANCE_RESPONSE], head);
      assert.deepEqual(step.action, {
        type: "close",
        code: "http_request",
        reason: "HTTP request other than CONNECT",
      });
    }
    assert.equal(new HttpConnectMachine().receive(enc("CONNEC")).action.type, "need_more");
  });

  it("misuse by the driver throws a TypeError", () => {
    const m = new HttpConnectMachine();
    assert.throws(() => m.answer({ type: "connected", bound: { host: "0.0.0.0", port: 0 } }), TypeError);
    m.receive(enc("CONNECT a.example:443 HTTP/1.1\r\n\r\n"));
    assert.throws(() => m.receive(enc("x")), TypeError);
    assert.throws(() => m.answer({ type: "bound", bound: { host: "0.0.0.0", port: 0 } }), TypeError);
    assert.throws(() => m.answer({ type: "resolved", address: "192.0.2.1" }), TypeError);
    m.answer({ type: "connected", bound: { host: "0.0.0.0", port: 0 } });
    assert.throws(() => m.answer({ type: "connected", bound: { host: "0.0.0.0", port: 0 } }), TypeError);
  });

  it("base64 decoding (RFC 4648) and its refusals", () => {
    assert.equal(text(decodeBase64(btoa("alice:s3cret"))!), "alice:s3cret");
    assert.equal(text(decodeBase64(btoa("a:b1"))!), "a:b1");
    assert.equal(text(decodeBase64(btoa("ab:c"))!), "ab:c");
    for (const bad of ["abc", "a===", "ab=c", "=abc", "ab!c"]) assert.equal(decodeBase64(bad), null, bad);
  });

  it("chunking never changes the outcome (fast-check over split points)", () => {
    const authenticate = createAuthenticator(USERS);
    const heads = [
      "CONNECT 127.0.0.1:8080 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + basic("alice", "s3cret") + "\r\nearly",
      "CONNECT [::1]:443 HTTP/1.1\r\n" + basic("alice", "bad") + "\r\n",
      "CONNECT a.example:0 HTTP/1.1\r\n\r\n",
      "COPY / HTTP/1.1\r\n\r\n",
      "CONNECT a.example:443 HTTP/1.1\r\n\r\n\r\n",
    ];
    const outcome = (chunks: Uint8Array[]) => {
      const m = new HttpConnectMachine({ authenticate });
      let write = "";
      for (let i = 0; i < chunks.length; i++) {
        const step = m.receive(chunks[i]);
        write += written(step);
        if (step.action.type !== "need_more") {
          // Bytes after the head: early in the same chunk, else read by the relay later: the same stream.
          const after = step.action.type === "request"
            ? text(step.action.early) + chunks.slice(i + 1).map(text).join("")
            : "";
          const action = step.action.type === "request" ? { ...step.action, early: undefined } : step.action;
          return JSON.stringify({ write, action, after, reply: step.reply, status: step.status });
        }
      }
      return "need_more";
    };
    fc.assert(
      fc.property(
        fc.constantFrom(...heads),
        fc.array(fc.nat(), { maxLength: 12 }),
        (head, cuts) => {
          const bytes = enc(head);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          const chunks: Uint8Array[] = [];
          let at = 0;
          for (const p of [...points, bytes.length]) {
            chunks.push(bytes.subarray(at, p));
            at = p;
          }
          assert.equal(outcome(chunks), outcome([bytes]));
        },
      ),
      { numRuns: 2_000, seed: 14 },
    );
  });

  it("arbitrary bytes after CONNECT never throw and never buffer more than the bound", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 3_000 }), { maxLength: 6 }), (chunks) => {
        const m = new HttpConnectMachine({ authenticate: createAuthenticator(USERS) });
        for (const chunk of [enc("CONNECT "), ...chunks]) {
          const step = m.receive(chunk);
          assert.ok(m.buffered <= HTTP_MAX_HEAD);
          if (step.action.type !== "need_more") return;
        }
      }),
      { numRuns: 500, seed: 15 },
    );
  });
});

describe("SniffingMachine: the first byte picks the protocol", () => {
  it("C goes to HTTP CONNECT when served, else everything HTTP gets the 501 page", () => {
    const on = new SniffingMachine({ httpConnect: true });
    assert.equal(on.receive(enc("CONNECT a.example:443 HTTP/1.1\r\n\r\n")).action.type, "request");
    assert.equal(on.protocol, "http");
    const get = new SniffingMachine({ httpConnect: true });
    assert.deepEqual(get.receive(enc("GET / HTTP/1.1\r\n\r\n")).write, [HTTP_RESISTANCE_RESPONSE]);
    for (const off of [new SniffingMachine({}), new SocksServerMachine()]) {
      assert.deepEqual(off.receive(enc("CONNECT a.example:443 HTTP/1.1\r\n\r\n")).write, [
        HTTP_RESISTANCE_RESPONSE,
      ]);
    }
    const socks = new SniffingMachine({ httpConnect: true });
    assert.equal(written(socks.receive(Uint8Array.of(5, 1, 0))), "\x05\x00");
    assert.equal(socks.protocol, "socks5");
  });
});

describe("HTTP CONNECT through the server", () => {
  let http: Awaited<ReturnType<typeof startHttp>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let open: Awaited<ReturnType<typeof startProxy>>;
  let authed: Awaited<ReturnType<typeof startProxy>>;
  let off: Awaited<ReturnType<typeof startProxy>>;
  let strict: Awaited<ReturnType<typeof startProxy>>;
  const logs: ConnectionLog[] = [];
  before(async () => {
    http = await startHttp();
    echo = await startEcho();
    const onLog = (e: ConnectionLog) => logs.push(e);
    open = await startProxy({ httpConnect: true, policy: { allowPrivate: true }, onLog });
    authed = await startProxy({
      httpConnect: true,
      policy: { allowPrivate: true },
      users: USERS,
      authBackoff: { failures: 3, windowMs: 60_000, blockMs: 60_000 },
      onLog,
    });
    off = await startProxy({ policy: { allowPrivate: true } });
    strict = await startProxy({ httpConnect: true }); // default policy: loopback refused
  });
  after(async () => {
    await Promise.all([open.close(), authed.close(), off.close(), strict.close()]);
    await Promise.all([http.close(), echo.close()]);
  });

  it("curl -p -x http:// tunnels a request; the record carries the protocol", async () => {
    const r = await curl(["-p", "-x", `http://127.0.0.1:${open.port}`, `http://127.0.0.1:${http.port}/`]);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    assert.equal(r.stdout, HTTP_BODY);
    const record = await within(
      5_000,
      "record",
      (async () => {
        for (;;) {
          const found = logs.find((l) => l.target === `127.0.0.1:${http.port}` && l.protocol === "http");
          if (found) return found;
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
    assert.equal(record.command, "connect");
    assert.equal(record.status, 200);
    assert.equal(record.reply, "granted");
    assert.equal(record.version, undefined);
  });

  it("curl --proxy-user: right credentials pass; wrong ones get exactly 407 (curl exit 56)", async () => {
    const base = ["-p", "-x", `http://127.0.0.1:${authed.port}`, `http://127.0.0.1:${http.port}/`];
    const ok = await curl(["--proxy-user", "alice:s3cret", ...base]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, HTTP_BODY);
    const bad = await curl(["--proxy-user", "alice:wrong", "-w", "%{http_connect}", ...base]);
    assert.equal(bad.code, 56);
    assert.equal(bad.stdout, "407");
    assert.match(bad.stderr, /CONNECT tunnel failed, response 407/);
    const none = await curl(["-w", "%{http_connect}", ...base]);
    assert.equal(none.code, 56);
    assert.equal(none.stdout, "407");
    const failed = logs.filter((l) => l.outcome === "auth_failed" && l.protocol === "http");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].user, "alice");
    assert.equal(failed[0].status, 407);
  });

  it("ncat --proxy-type http carries bytes both ways", async () => {
    const r = await run("ncat", [
      "--proxy",
      `127.0.0.1:${open.port}`,
      "--proxy-type",
      "http",
      "127.0.0.1",
      String(echo.port),
    ], { input: "ping through ncat\n", timeoutMs: 10_000 });
    assert.equal(r.stdout, "ping through ncat\n", r.stderr);
    assert.equal(r.code, 0);
  });

  it("ncat --proxy-auth: Basic credentials from a second real client", async () => {
    const args = [
      "--proxy",
      `127.0.0.1:${authed.port}`,
      "--proxy-type",
      "http",
      "127.0.0.1",
      String(echo.port),
    ];
    const ok = await run("ncat", ["--proxy-auth", "alice:s3cret", ...args], {
      input: "authed\n",
      timeoutMs: 10_000,
    });
    assert.equal(ok.stdout, "authed\n", ok.stderr);
    assert.equal(ok.code, 0);
    const bad = await run("ncat", ["--proxy-auth", "alice:nope", ...args], {
      input: "x\n",
      timeoutMs: 10_000,
    });
    assert.equal(bad.stdout, "");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Proxy returned status code 407/);
  });

  it("a pipelined client: CONNECT and early bytes in one write, echoed after the 200", async () => {
    const c = await RawClient.open(open.port);
    try {
      c.send(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\nearly bytes`);
      assert.equal(String(await c.readExactly(R200.length + 11)), R200 + "early bytes");
      c.end();
      assert.equal(String(await c.readToEnd()), "");
    } finally {
      c.destroy();
    }
  });

  it("refused, failed and timed-out targets: exact status lines", async () => {
    assert.equal(
      String(await RawClient.exchange(strict.port, enc(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`))),
      R403,
    );
    const dead = await closedPort();
    assert.equal(
      String(await RawClient.exchange(open.port, enc(`CONNECT 127.0.0.1:${dead} HTTP/1.1\r\n\r\n`))),
      R502,
    );
    assert.equal(
      String(await RawClient.exchange(open.port, enc(`CONNECT 127.0.0.1:${echo.port}/x HTTP/1.1\r\n\r\n`))),
      R400,
    );
    // A dial that never answers, cut by a short connect timeout.
    const hanging = await startProxy(
      { httpConnect: true, policy: { allowPrivate: true }, timeouts: { connect: 300 } },
      (adapter: RuntimeAdapter) => ({
        ...adapter,
        dial: ({ signal }) =>
          new Promise((_, reject) =>
            signal?.addEventListener("abort", () => reject(new SocksError(ReplyCode.TtlExpired, "timed out")))
          ),
      }),
    );
    try {
      assert.equal(
        String(
          await RawClient.exchange(hanging.port, enc(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`)),
        ),
        R504,
      );
    } finally {
      await hanging.close();
    }
  });

  it("a head over 8 KiB is 431; a slow head is cut by the handshake timeout", async () => {
    const big = `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nX: ${"x".repeat(HTTP_MAX_HEAD)}\r\n\r\n`;
    assert.equal(String(await RawClient.exchange(open.port, enc(big))), R431);
    const slow = await startProxy({ httpConnect: true, timeouts: { handshake: 300 } });
    try {
      const c = await RawClient.open(slow.port);
      c.send("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n");
      assert.equal(String(await c.readToEnd(5_000)), "");
      c.destroy();
    } finally {
      await slow.close();
    }
  });

  it("failed logins count for the backoff like SOCKS ones", async () => {
    const backoff = await startProxy({
      httpConnect: true,
      users: USERS,
      authBackoff: { failures: 2, windowMs: 60_000, blockMs: 60_000 },
    });
    try {
      const wrong = enc(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n${basic("alice", "x")}\r\n`);
      assert.equal(String(await RawClient.exchange(backoff.port, wrong)), R407);
      assert.equal(String(await RawClient.exchange(backoff.port, wrong)), R407);
      // Blocked now: closed before a byte is read, even with the right password.
      const right = enc(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n${basic("alice", "s3cret")}\r\n`);
      assert.equal(String(await RawClient.exchange(backoff.port, right)), "");
    } finally {
      await backoff.close();
    }
  });

  it("without --http-connect, and for other methods, the 501 page", async () => {
    const page = text(HTTP_RESISTANCE_RESPONSE);
    const connect = enc(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
    assert.equal(String(await RawClient.exchange(off.port, connect)), page);
    assert.equal(String(await RawClient.exchange(open.port, enc("GET / HTTP/1.1\r\n\r\n"))), page);
    await within(
      5_000,
      "501 record",
      (async () => {
        while (!logs.some((l) => l.outcome === "http_request" && l.protocol === "http" && l.status === 501)) {
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
    const r = await curl(["-p", "-x", `http://127.0.0.1:${off.port}`, `http://127.0.0.1:${http.port}/`]);
    assert.equal(r.code, 56);
  });

  it("the CLI's --http-connect", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--http-connect", "--allow-private"]);
    try {
      const r = await curl(["-p", "-x", `http://127.0.0.1:${proxy.port}`, `http://127.0.0.1:${http.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, HTTP_BODY);
    } finally {
      await proxy.stop();
    }
  });
});
