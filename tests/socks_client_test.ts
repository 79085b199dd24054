// The SOCKS client machine byte for byte, the server machine's passthrough options, upstream URLs and
// routes: pure code, no sockets.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { SocksClientMachine, type SocksClientRequest } from "../lib/core/socks_client.ts";
import { SocksServerMachine } from "../lib/core/socks_server.ts";
import { parseHop } from "../lib/upstream/hop.ts";
import { checkChain, parseRoute, routeFor } from "../lib/upstream/route.ts";
import { connectHandshake, encodeConnect, httpStatusReply } from "../lib/upstream/http.ts";
import { hex, toHex } from "./_hex.ts";

const te = new TextEncoder();
/** Hex as toHex writes it, from hex() notation. */
const hx = (text: string) => toHex(hex(text));
const name = (host: string, port = 80) => ({ host, type: "domain" as const, port });

function client(req: Partial<SocksClientRequest>): SocksClientMachine {
  return new SocksClientMachine({ protocol: "socks5", command: "connect", target: name("web.test"), ...req });
}

describe("SOCKS client machine: SOCKS5", () => {
  it("no auth: greeting, request by name, reply; the target's early bytes come back", () => {
    const m = client({});
    assert.deepEqual(m.start().write.map(toHex), [hx("050100")]);
    const s1 = m.receive(hex("05 00"));
    assert.deepEqual(s1.write.map(toHex), [toHex(hex("05 01 00 03 08 'web.test' 0050"))]);
    assert.equal(s1.action.type, "need_more");
    // The reply in two pieces, with the target's first bytes after it.
    assert.equal(m.receive(hex("05 00 00 01 7f00")).action.type, "need_more");
    const s2 = m.receive(hex("0001 1f90 'hi'"));
    assert.deepEqual(s2.action, {
      type: "connected",
      bound: { host: "127.0.0.1", port: 8080 },
      early: hex("'hi'"),
    });
  });

  it("RFC 1929: the login byte for byte, Tor's <torS0X> prefix and a non-UTF-8 byte intact", () => {
    const user = Uint8Array.of(...te.encode("<torS0X>0"));
    const password = Uint8Array.of(0xff, 0x00, 0x41);
    const m = client({ login: { user, password } });
    assert.deepEqual(m.start().write.map(toHex), [hx("050102")]);
    const s = m.receive(hex("05 02"));
    assert.deepEqual(s.write.map(toHex), [toHex(hex("01 09 '<torS0X>0' 03 ff0041"))]);
    // Status and reply in one chunk: the request goes out at once.
    const s2 = m.receive(hex("01 00"));
    assert.deepEqual(s2.write.map(toHex), [toHex(hex("05 01 00 03 08 'web.test' 0050"))]);
  });

  it("passes the upstream's failure codes on, Tor's extended ones too; an unknown one is 0x01", () => {
    for (
      const [rep, mine] of [
        [0x02, 0x02],
        [0x03, 0x03],
        [0x04, 0x04],
        [0x05, 0x05],
        [0x06, 0x06],
        [0xf0, 0xf0],
        [0xf7, 0xf7],
        [0x09, 0x01],
        [0x80, 0x01],
      ]
    ) {
      const m = client({ target: { host: "192.0.2.1", type: "ipv4", port: 443 } });
      m.start();
      assert.deepEqual(m.receive(hex("05 00")).write.map(toHex), [hx("050100 01c0000201 01bb")]);
      const step = m.receive(Uint8Array.of(5, rep, 0, 1, 0, 0, 0, 0, 0, 0));
      assert.equal(step.action.type, "failed");
      if (step.action.type === "failed") {
        assert.equal(step.action.reply, mine, `upstream 0x${rep.toString(16)}`);
        assert.equal(step.action.upstreamReply, rep);
        assert.equal(step.action.failure, "refused");
      }
    }
  });

  it("refused credentials, no acceptable method, a method not offered, not SOCKS, closed early", () => {
    const login = { user: te.encode("a"), password: te.encode("b") };
    let m = client({ login });
    m.start();
    m.receive(hex("05 02"));
    assert.deepEqual(m.receive(hex("01 01")).action, {
      type: "failed",
      failure: "auth_failed",
      reply: 0x02,
      reason: "upstream refused the credentials",
    });
    m = client({});
    m.start();
    const none = m.receive(hex("05 ff")).action;
    assert.ok(none.type === "failed" && none.failure === "auth_unavailable" && none.reply === 0x02);
    m = client({});
    m.start();
    const other = m.receive(hex("05 02")).action; // we offered no auth only
    assert.ok(other.type === "failed" && other.failure === "auth_unavailable");
    m = client({});
    m.start();
    const http = m.receive(hex("'HTTP/1.1 400'")).action;
    assert.ok(http.type === "failed" && http.failure === "protocol_error" && http.reply === 0x01);
    m = client({});
    m.start();
    m.receive(hex("05"));
    const closed = m.closed().action;
    assert.ok(closed.type === "failed" && closed.failure === "protocol_error");
    assert.throws(() => m.receive(hex("00")), TypeError);
  });

  it("RESOLVE and RESOLVE_PTR (Tor's 0xF0, 0xF1)", () => {
    let m = client({ command: "resolve", target: name("web.test", 0) });
    m.start();
    assert.deepEqual(m.receive(hex("05 00")).write.map(toHex), [
      toHex(hex("05 f0 00 03 08 'web.test' 0000")),
    ]);
    assert.deepEqual(m.receive(hex("05 00 00 01 c0000201 0000")).action, {
      type: "resolved",
      address: "192.0.2.1",
    });
    m = client({ command: "resolve_ptr", target: { host: "192.0.2.1", type: "ipv4", port: 0 } });
    m.start();
    assert.deepEqual(m.receive(hex("05 00")).write.map(toHex), [toHex(hex("05 f1 00 01 c0000201 0000"))]);
    assert.deepEqual(m.receive(hex("05 00 00 03 08 'web.test' 0000")).action, {
      type: "resolved_name",
      name: "web.test",
    });
    m = client({ command: "resolve", target: name("nx.test", 0) });
    m.start();
    m.receive(hex("05 00"));
    const nx = m.receive(hex("05 04 00 01 00000000 0000")).action;
    assert.ok(nx.type === "failed" && nx.reply === 0x04);
  });

  it("IPv6 targets go as ATYP 4", () => {
    const m = client({ target: { host: "2001:db8::1", type: "ipv6", port: 443 } });
    m.start();
    assert.deepEqual(m.receive(hex("05 00")).write.map(toHex), [
      toHex(hex("05 01 00 04 20010db8000000000000000000000001 01bb")),
    ]);
  });
});

describe("SOCKS client machine: SOCKS4 and 4A", () => {
  it("SOCKS4: one request with the user id; granted", () => {
    const m = new SocksClientMachine({
      protocol: "socks4",
      command: "connect",
      target: { host: "192.0.2.1", type: "ipv4", port: 80 },
      userId: te.encode("alice"),
    });
    assert.deepEqual(m.start().write.map(toHex), [toHex(hex("04 01 0050 c0000201 'alice' 00"))]);
    assert.deepEqual(m.receive(hex("00 5a 0050 c0000201")).action, {
      type: "connected",
      bound: { host: "192.0.2.1", port: 80 },
      early: new Uint8Array(0),
    });
  });

  it("SOCKS4A: the name after the user id; a refusal is 0x01, an identd failure 0x02", () => {
    const m = new SocksClientMachine({ protocol: "socks4a", command: "connect", target: name("web.test") });
    assert.deepEqual(m.start().write.map(toHex), [toHex(hex("04 01 0050 00000001 00 'web.test' 00"))]);
    const r = m.receive(hex("00 5b 0000 00000000")).action;
    assert.ok(r.type === "failed" && r.reply === 0x01 && r.upstreamReply === 0x5b);
    const m2 = new SocksClientMachine({
      protocol: "socks4a",
      command: "resolve",
      target: name("web.test", 0),
    });
    assert.deepEqual(m2.start().write.map(toHex), [toHex(hex("04 f0 0000 00000001 00 'web.test' 00"))]);
    const id = m2.receive(hex("00 5c 0000 00000000")).action;
    assert.ok(id.type === "failed" && id.reply === 0x02);
  });

  it("refuses what the protocol cannot carry (a TypeError, nothing sent)", () => {
    assert.throws(
      () => new SocksClientMachine({ protocol: "socks4", command: "connect", target: name("web.test") }),
      TypeError,
    );
    assert.throws(
      () =>
        new SocksClientMachine({
          protocol: "socks4a",
          command: "resolve_ptr",
          target: { host: "192.0.2.1", type: "ipv4", port: 0 },
        }),
      TypeError,
    );
    assert.throws(() => client({ login: { user: new Uint8Array(0), password: te.encode("x") } }), TypeError);
  });
});

describe("server machine: passthrough", () => {
  it("acceptAnyLogin + keepLogin: a client offering 00 and 02 is asked for its login; any is accepted and kept", () => {
    const m = new SocksServerMachine({ acceptAnyLogin: true, keepLogin: true });
    const step = m.receive(hex("05 02 00 02  01 09 '<torS0X>0' 03 ff0041  05 01 00 01 c0000201 0050"));
    assert.deepEqual(step.write.map(toHex), [hx("0502"), hx("0100")]);
    assert.equal(step.action.type, "request");
    if (step.action.type === "request") {
      assert.equal(step.action.request.user, "<torS0X>0");
      assert.deepEqual(step.action.request.login, {
        user: te.encode("<torS0X>0"),
        password: Uint8Array.of(0xff, 0, 0x41),
      });
    }
  });

  it("acceptAnyLogin: a client offering only no-auth gets it, and its request carries no login", () => {
    const m = new SocksServerMachine({ acceptAnyLogin: true, keepLogin: true });
    const step = m.receive(hex("05 01 00  05 01 00 01 c0000201 0050"));
    assert.deepEqual(step.write.map(toHex), [hx("0500")]);
    assert.ok(step.action.type === "request" && step.action.request.login === undefined);
  });

  it("without the options the login is neither asked for nor kept", () => {
    const m = new SocksServerMachine({});
    const step = m.receive(hex("05 02 00 02  05 01 00 01 c0000201 0050"));
    assert.deepEqual(step.write.map(toHex), [hx("0500")]);
    const auth = new SocksServerMachine({ authenticate: () => true });
    const s2 = auth.receive(hex("05 01 02  01 01 'a' 01 'b'  05 01 00 01 c0000201 0050"));
    assert.ok(s2.action.type === "request" && s2.action.request.login === undefined);
  });

  it("passes Tor's extended codes 0xF0-0xF7 on to a SOCKS5 client, and 0x5B to SOCKS4", () => {
    const m = new SocksServerMachine({});
    m.receive(hex("05 01 00  05 01 00 03 09 'xyz.onion' 0050"));
    assert.deepEqual(m.rejected(0xf0 as 0x01).write.map(toHex), [hx("05f00001000000000000")]);
    const m4 = new SocksServerMachine({});
    m4.receive(hex("04 01 0050 00000001 00 'xyz.onion' 00"));
    assert.deepEqual(m4.rejected(0xf0 as 0x01).write.map(toHex), [hx("005b000000000000")]);
  });
});

describe("upstream URLs and routes", () => {
  it("parses every scheme, credentials percent-decoded to bytes, ?tor, default ports", () => {
    const h = parseHop("tor", "socks5h://%3CtorS0X%3E0:k%FFy@127.0.0.1:9050?tor");
    assert.equal(h.protocol, "socks5h");
    assert.deepEqual(h.address, { host: "127.0.0.1", port: 9050 });
    assert.deepEqual(h.user, te.encode("<torS0X>0"));
    assert.deepEqual(h.password, Uint8Array.of(0x6b, 0xff, 0x79));
    assert.equal(h.tor, true);
    assert.equal(h.display, "socks5h://%3CtorS0X%3E0:***@127.0.0.1:9050?tor");
    assert.deepEqual(parseHop("a", "socks4a://[::1]").address, { host: "::1", port: 1080 });
    assert.deepEqual(parseHop("a", "http://proxy.example:3128").address, {
      host: "proxy.example",
      port: 3128,
    });
    assert.equal(parseHop("a", "HTTP://u:p@h").address.port, 8080);
    assert.deepEqual(parseHop("a", "socks4://bob@127.0.0.1:1080").user, te.encode("bob"));
  });

  it("bad URLs: clear errors naming the upstream, never the password", () => {
    const cases: [string, string, RegExp][] = [
      ["x", "ftp://127.0.0.1", /upstream "x": unknown scheme "ftp"/],
      ["x", "127.0.0.1:1080", /expected SCHEME:\/\//],
      ["x", "socks5://127.0.0.1:0", /bad port "0"/],
      ["x", "socks5://127.0.0.1:70000", /bad port/],
      ["x", "socks5://u@127.0.0.1", /needs a password/],
      ["x", "socks4://u:secretpw@127.0.0.1", /SOCKS4 has a user id but no password/],
      ["x", "http://127.0.0.1?tor", /\?tor is for socks5h/],
      ["x", "socks5h://127.0.0.1?foo", /unknown parameter "foo"/],
      ["x", "socks5h://u:p%zz@127.0.0.1", /bad percent escape in the password/],
      ["x", "socks5h://[fe80::1%eth0]:1", /bad/],
      ["direct", "socks5h://127.0.0.1", /built-in name/],
      ["a b", "socks5h://127.0.0.1", /a name is/],
    ];
    for (const [n, url, re] of cases) {
      assert.throws(() => parseHop(n, url), (e: Error) => {
        assert.ok(e instanceof TypeError);
        assert.match(e.message, re, url);
        assert.ok(!e.message.includes("secretpw"));
        return true;
      });
    }
  });

  it("routes: the rule syntax of --allow, first match wins, unknown names refused at start", () => {
    const routes = [
      parseRoute("*.onion=tor"),
      parseRoute("resolve@*=tor"),
      parseRoute("connect@10.0.0.0/8:22=jump,direct"),
      parseRoute("connect@*.corp.example:443-444=corp"),
    ];
    const req = (kind: "connect" | "resolve" | "resolve_ptr", host: string, port = 80) => ({
      version: 5 as const,
      kind,
      target: { host, type: (/^[\d.]+$/.test(host) ? "ipv4" : "domain") as "ipv4" | "domain", port },
    });
    assert.equal(routeFor(req("connect", "abc.onion"), routes)?.text, "*.onion=tor");
    assert.equal(routeFor(req("resolve", "example.org", 0), routes)?.text, "resolve@*=tor");
    assert.equal(routeFor(req("resolve_ptr", "192.0.2.1", 0), routes)?.text, "resolve@*=tor");
    assert.deepEqual(routeFor(req("connect", "10.1.2.3", 22), routes)?.via, ["jump", "direct"]);
    assert.equal(routeFor(req("connect", "10.1.2.3", 23), routes), undefined);
    // An address range matches address literals only: a name is not resolved to pick its route.
    assert.equal(routeFor(req("connect", "ten.example", 22), routes), undefined);
    assert.equal(
      routeFor(req("connect", "git.corp.example", 444), routes)?.text,
      "connect@*.corp.example:443-444=corp",
    );
    assert.equal(routeFor(req("connect", "git.corp.example", 80), routes), undefined);
    assert.throws(() => parseRoute("*.onion"), /expected RULE=NAME/);
    assert.throws(() => parseRoute("bogus@*=tor"), /commands are connect/);
    assert.throws(() => parseRoute("*=a b"), /upstream names/);
    assert.throws(
      () =>
        checkChain({
          upstreams: [parseHop("tor", "socks5h://127.0.0.1:9050")],
          routes: [parseRoute("*=tr")],
        }),
      /route "\*=tr" names upstream "tr", which no --upstream defines \(known: tor, direct\)/,
    );
    assert.throws(
      () =>
        checkChain({
          upstreams: [parseHop("a", "socks5h://127.0.0.1"), parseHop("a", "http://127.0.0.1")],
          routes: [],
        }),
      /defined twice/,
    );
    checkChain({ upstreams: [], routes: [parseRoute("*=direct")] });
  });
});

describe("HTTP CONNECT codec", () => {
  it("the request, with Basic credentials as bytes; IPv6 in brackets", () => {
    const bytes = encodeConnect("2001:db8::1", 443, {
      user: te.encode("alice"),
      password: te.encode("s:cret"),
    });
    assert.equal(
      new TextDecoder().decode(bytes),
      "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\nProxy-Authorization: Basic YWxpY2U6czpjcmV0\r\n\r\n",
    );
  });

  it("reads the response head in pieces; bytes after it are the target's", () => {
    const h = connectHandshake(new Uint8Array(0));
    h.start();
    assert.equal(h.receive(te.encode("HTTP/1.1 200 Connection established\r\nX: y\r")).result, undefined);
    assert.deepEqual(h.receive(te.encode("\n\r\nSSH-2.0")).result, {
      type: "connected",
      early: te.encode("SSH-2.0"),
    });
    const r = connectHandshake(new Uint8Array(0));
    assert.deepEqual(r.receive(te.encode("HTTP/1.0 407 Proxy Authentication Required\r\n\r\n")).result, {
      type: "refused",
      status: 407,
      reply: 0x02,
      reason: "407 Proxy Authentication Required",
    });
    assert.equal(
      connectHandshake(new Uint8Array(0)).receive(te.encode("SSH-2.0-x\r\n\r\n")).result?.type,
      "protocol_error",
    );
    const long = connectHandshake(new Uint8Array(0));
    assert.equal(long.receive(new Uint8Array(17_000).fill(0x41)).result?.type, "protocol_error");
  });

  it("status codes to SOCKS5 replies", () => {
    assert.deepEqual([400, 403, 404, 407, 500, 502, 503, 504].map(httpStatusReply), [1, 2, 4, 2, 1, 4, 5, 6]);
  });
});

describe("SOCKS client machine: arbitrary upstream bytes", () => {
  /** Feeds `data` in the pieces `cuts` makes; the outcome (writes joined, final action) as JSON. */
  function outcome(req: SocksClientRequest, data: Uint8Array, cuts: number[]): string {
    const m = new SocksClientMachine(req);
    const writes: string[] = m.start().write.map(toHex);
    let action: { type: string } = { type: "need_more" };
    let at = 0;
    for (const cut of [...cuts.filter((c) => c < data.length).sort((a, b) => a - b), data.length]) {
      if (action.type !== "need_more" || cut <= at) continue;
      const step = m.receive(data.subarray(at, cut));
      writes.push(...step.write.map(toHex));
      action = step.action;
      at = cut;
    }
    if (action.type === "need_more") action = m.closed().action;
    // After a CONNECT reply the rest is the target's: what came with the reply (early) and what was not fed.
    if (action.type === "connected") {
      const a = action as { type: string; early: Uint8Array };
      action = { ...a, early: new Uint8Array([...a.early, ...data.subarray(at)]) } as typeof action;
    }
    return JSON.stringify({ writes, action }, (_k, v) => (v instanceof Uint8Array ? toHex(v) : v));
  }

  it("never throws, always ends in an answer or a failure, and chunking never changes the outcome", () => {
    const requests: SocksClientRequest[] = [
      { protocol: "socks5", command: "connect", target: name("web.test") },
      {
        protocol: "socks5",
        command: "resolve",
        target: name("web.test", 0),
        login: { user: te.encode("u"), password: te.encode("p") },
      },
      { protocol: "socks5", command: "resolve_ptr", target: { host: "192.0.2.1", type: "ipv4", port: 0 } },
      { protocol: "socks4a", command: "connect", target: name("web.test") },
    ];
    // Plausible prefixes (a method choice, an auth status, a reply header) followed by anything.
    const prefix = fc.constantFrom(
      hex(""),
      hex("05 00"),
      hex("05 02 01 00"),
      hex("05 00 05 00 00"),
      hex("00 5a"),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...requests),
        prefix,
        fc.uint8Array({ maxLength: 300 }),
        fc.array(fc.nat(320), { maxLength: 8 }),
        (req, head, tail, cuts) => {
          const data = new Uint8Array([...head, ...tail]);
          const whole = outcome(req, data, []);
          assert.notEqual(JSON.parse(whole).action.type, "need_more");
          assert.equal(outcome(req, data, cuts), whole);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
