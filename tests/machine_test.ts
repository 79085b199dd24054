/**
 * The sans-IO state machine at the byte level: hex in, hex out. Every case is
 * also fed split at every byte boundary and one byte at a time, and must give
 * the same writes and the same outcome.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Action, type MachineOptions, SocksServerMachine, type Step } from "../lib/core/socks_server.ts";
import { Limits, ReplyCode } from "../lib/core/wire.ts";
import { HTTP_RESISTANCE_RESPONSE } from "../lib/core/replies.ts";
import { hex, toHex } from "./_fixtures.ts";

const ascii = (s: string) => toHex(new TextEncoder().encode(s));
const USERS: MachineOptions = {
  authenticate: (u, p) => new TextDecoder().decode(u) === "alice" && new TextDecoder().decode(p) === "secret",
};

interface Outcome {
  writes: string;
  action: Action;
}

/**
 * Feeds chunks until the first action other than need_more, as the driver
 * does; collects all writes. After a request, the chunks not fed yet are what
 * the driver's relay would read next, so they are appended to `early`: the
 * bytes that go upstream must not depend on the chunking.
 */
function feedAll(machine: SocksServerMachine, chunks: Uint8Array[]): Outcome {
  const writes: Uint8Array[] = [];
  let action: Action = { type: "need_more" };
  for (let i = 0; i < chunks.length; i++) {
    const step: Step = machine.receive(chunks[i]);
    writes.push(...step.write);
    action = step.action;
    assert.ok(machine.buffered <= Limits.MaxHandshakeBuffer, `buffered ${machine.buffered}`);
    if (action.type === "request") {
      const rest = chunks.slice(i + 1).flatMap((c) => [...c]);
      action = { ...action, early: Uint8Array.from([...action.early, ...rest]) };
    }
    if (action.type !== "need_more") break;
  }
  return { writes: writes.map(toHex).join(" | "), action };
}

/** Feeds `bytes` whole, split at every boundary, and byte by byte: all must agree. Returns the outcome. */
function feed(bytes: Uint8Array, options?: MachineOptions): Outcome {
  const whole = feedAll(new SocksServerMachine(options), [bytes]);
  for (let i = 1; i < bytes.length; i++) {
    const split = feedAll(new SocksServerMachine(options), [bytes.subarray(0, i), bytes.subarray(i)]);
    assert.deepEqual(split, whole, `split at ${i}`);
  }
  const single = feedAll(new SocksServerMachine(options), [...bytes].map((b) => Uint8Array.of(b)));
  assert.deepEqual(single, whole, "byte by byte");
  return whole;
}

function expectRequest(o: Outcome) {
  assert.equal(o.action.type, "request", JSON.stringify(o));
  return o.action as Extract<Action, { type: "request" }>;
}

function expectClose(o: Outcome, writes: string) {
  assert.equal(o.action.type, "close", JSON.stringify(o));
  assert.equal(o.writes, writes);
}

describe("SOCKS5 handshake", () => {
  it("no-auth CONNECT to IPv4", () => {
    const o = feed(hex("05 01 00  05 01 00 01 5d b8 d8 22 01 bb"));
    assert.equal(o.writes, "05 00");
    const { request, early } = expectRequest(o);
    assert.deepEqual(request, {
      version: 5,
      kind: "connect",
      target: { host: "93.184.216.34", type: "ipv4", port: 443 },
    });
    assert.equal(early.length, 0);
  });

  it("CONNECT to IPv6, canonical text", () => {
    const r = expectRequest(
      feed(hex("05 02 00 02  05 01 00 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 50")),
    );
    assert.deepEqual(r.request.target, { host: "2001:db8::1", type: "ipv6", port: 80 });
  });

  it("CONNECT to a domain name", () => {
    const r = expectRequest(feed(hex(`05 01 00  05 01 00 03 0b ${ascii("example.org")} 00 50`)));
    assert.deepEqual(r.request.target, { host: "example.org", type: "domain", port: 80 });
  });

  it("a 255-byte name is the longest, and works", () => {
    const name = "a".repeat(255);
    const r = expectRequest(feed(hex(`05 01 00 05 01 00 03 ff ${ascii(name)} 00 50`)));
    assert.equal(r.request.target.host, name);
  });

  it("pipelined greeting + auth + request + payload: early data is exactly the payload", () => {
    const o = feed(
      hex(
        `05 01 02  01 05 ${ascii("alice")} 06 ${ascii("secret")}  05 01 00 01 7f 00 00 01 1f 90 ${
          ascii("GET / HTTP/1.0\r\n\r\n")
        }`,
      ),
      USERS,
    );
    assert.equal(o.writes, "05 02 | 01 00");
    const r = expectRequest(o);
    assert.equal(r.request.user, "alice");
    assert.equal(toHex(r.early), ascii("GET / HTTP/1.0\r\n\r\n"));
  });

  it("username/password failures: wrong password, unknown user, empty fields, bad version", () => {
    expectClose(feed(hex(`05 01 02 01 05 ${ascii("alice")} 05 ${ascii("wrong")}`), USERS), "05 02 | 01 01");
    expectClose(feed(hex(`05 01 02 01 03 ${ascii("bob")} 06 ${ascii("secret")}`), USERS), "05 02 | 01 01");
    expectClose(feed(hex(`05 01 02 01 00 06 ${ascii("secret")}`), USERS), "05 02 | 01 01");
    expectClose(feed(hex(`05 01 02 01 05 ${ascii("alice")} 00`), USERS), "05 02 | 01 01");
    expectClose(feed(hex(`05 01 02 05 05 ${ascii("alice")}`), USERS), "05 02 | 01 01");
  });

  it("method negotiation: FF when the needed method is not offered", () => {
    expectClose(feed(hex("05 01 00"), USERS), "05 ff");
    expectClose(feed(hex("05 01 02")), "05 ff");
    expectClose(feed(hex("05 00")), "05 ff");
    assert.equal(feed(hex("05 03 80 02 00"), USERS).writes, "05 02");
    assert.equal(feed(hex("05 03 80 02 00")).writes, "05 00");
  });

  it("BIND, UDP ASSOCIATE and unknown commands: 07", () => {
    for (const cmd of ["02", "03", "04", "ff"]) {
      expectClose(
        feed(hex(`05 01 00 05 ${cmd} 00 01 7f 00 00 01 00 50`)),
        "05 00 | 05 07 00 01 00 00 00 00 00 00",
      );
    }
  });

  it("unknown address type: 08, without waiting for more", () => {
    expectClose(feed(hex("05 01 00 05 01 00 02")), "05 00 | 05 08 00 01 00 00 00 00 00 00");
    expectClose(feed(hex("05 01 00 05 01 00 05 01 02 03")), "05 00 | 05 08 00 01 00 00 00 00 00 00");
  });

  it("malformed names: empty, NUL, space, control, non-ASCII: 01", () => {
    for (const name of ["", "a\0b", "a b", "a\nb", "\x7f"]) {
      const bytes = new TextEncoder().encode(name);
      expectClose(
        feed(hex(`05 01 00 05 01 00 03 ${bytes.length.toString(16).padStart(2, "0")} ${toHex(bytes)} 00 50`)),
        "05 00 | 05 01 00 01 00 00 00 00 00 00",
      );
    }
    expectClose(feed(hex("05 01 00 05 01 00 03 02 c3 a9 00 50")), "05 00 | 05 01 00 01 00 00 00 00 00 00");
  });

  it("a request with the wrong version: 01 and close", () => {
    expectClose(feed(hex("05 01 00 04 01 00 01 7f 00 00 01 00 50")), "05 00 | 05 01 00 01 00 00 00 00 00 00");
  });

  it("connected() sends the bound address: IPv4, IPv4-mapped, IPv6", () => {
    for (
      const [host, reply] of [
        ["127.0.0.1", "05 00 00 01 7f 00 00 01 9c 40"],
        ["::ffff:10.1.2.3", "05 00 00 01 0a 01 02 03 9c 40"],
        ["2001:db8::2", "05 00 00 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02 9c 40"],
      ]
    ) {
      const m = new SocksServerMachine();
      m.receive(hex("05 01 00 05 01 00 01 01 02 03 04 00 50"));
      const step = m.connected({ host, port: 40000 });
      assert.equal(toHex(step.write[0]), reply);
      assert.deepEqual(step.action, { type: "relay" });
    }
  });

  it("rejected() never sends success, and sends codes outside 01-08 as general failure", () => {
    for (const code of [0, 9, 255, 256, 512, -256, NaN, 1.5]) {
      const m = new SocksServerMachine();
      m.receive(hex("05 01 00 05 01 00 01 01 02 03 04 00 50"));
      assert.equal(
        toHex(m.rejected(code as ReplyCode).write[0]),
        "05 01 00 01 00 00 00 00 00 00",
        String(code),
      );
    }
  });

  it("rejected() maps every code into a well-formed reply", () => {
    for (const code of Object.values(ReplyCode).filter((c) => c !== 0)) {
      const m = new SocksServerMachine();
      m.receive(hex("05 01 00 05 01 00 01 01 02 03 04 00 50"));
      const step = m.rejected(code);
      assert.equal(toHex(step.write[0]), `05 ${code.toString(16).padStart(2, "0")} 00 01 00 00 00 00 00 00`);
      assert.equal(step.action.type, "close");
    }
  });
});

describe("Tor extensions", () => {
  it("RESOLVE (F0) on SOCKS5: IPv4 answer ATYP 1, IPv6 ATYP 4, failure 04 with ATYP 1", () => {
    const ask = () => {
      const m = new SocksServerMachine();
      const r = expectRequest(feedAll(m, [hex(`05 01 00 05 f0 00 03 08 ${ascii("web.test")} 00 00`)]));
      assert.equal(r.request.kind, "resolve");
      return m;
    };
    assert.equal(toHex(ask().resolved("1.2.3.4").write[0]), "05 00 00 01 01 02 03 04 00 00");
    assert.equal(
      toHex(ask().resolved("2001:db8::9").write[0]),
      "05 00 00 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 09 00 00",
    );
    assert.equal(toHex(ask().rejected(ReplyCode.HostUnreachable).write[0]), "05 04 00 01 00 00 00 00 00 00");
    assert.equal(ask().resolved("1.2.3.4").action.type, "close");
    assert.equal(toHex(ask().resolved("not-an-ip").write[0]), "05 04 00 01 00 00 00 00 00 00");
  });

  it("RESOLVE on SOCKS4A and SOCKS4: IPv4 only", () => {
    const m4a = new SocksServerMachine();
    const r = expectRequest(feed(hex(`04 f0 00 00 00 00 00 01 00 ${ascii("web.test")} 00`)));
    assert.deepEqual(r.request, {
      version: 4,
      kind: "resolve",
      target: { host: "web.test", type: "domain", port: 0 },
    });
    m4a.receive(hex(`04 f0 00 00 00 00 00 01 00 ${ascii("web.test")} 00`));
    assert.equal(toHex(m4a.resolved("1.2.3.4").write[0]), "00 5a 00 00 01 02 03 04");
    const v6 = new SocksServerMachine();
    v6.receive(hex(`04 f0 00 00 00 00 00 01 00 ${ascii("web.test")} 00`));
    assert.equal(toHex(v6.resolved("2001:db8::1").write[0]), "00 5b 00 00 00 00 00 00");
    const plain = expectRequest(feed(hex("04 f0 00 00 0a 00 00 01 00")));
    assert.deepEqual(plain.request.target, { host: "10.0.0.1", type: "ipv4", port: 0 });
  });

  it("RESOLVE_PTR (F1): SOCKS5 IPv4/IPv6 answer as ATYP 3; domain target 08; SOCKS4 5B", () => {
    for (
      const req of [
        "05 01 00 05 f1 00 01 7f 00 00 02 00 00",
        "05 01 00 05 f1 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00",
      ]
    ) {
      const m = new SocksServerMachine();
      const r = expectRequest(feedAll(m, [hex(req)]));
      assert.equal(r.request.kind, "resolve_ptr");
      assert.equal(toHex(m.resolvedName("web.test").write[0]), `05 00 00 03 08 ${ascii("web.test")} 00 00`);
    }
    expectClose(
      feed(hex(`05 01 00 05 f1 00 03 08 ${ascii("web.test")} 00 00`)),
      "05 00 | 05 08 00 01 00 00 00 00 00 00",
    );
    expectClose(feed(hex("04 f1 00 00 7f 00 00 01 00")), "00 5b 00 00 00 00 00 00");
    const bad = new SocksServerMachine();
    bad.receive(hex("05 01 00 05 f1 00 01 7f 00 00 02 00 00"));
    assert.equal(toHex(bad.resolvedName("x".repeat(256)).write[0]), "05 04 00 01 00 00 00 00 00 00");
  });

  it("CONNECT_DIR (F2) on SOCKS4, 4A and 5 is its own kind and can be granted", () => {
    for (
      const [req, reply] of [
        ["05 01 00 05 f2 00 01 01 02 03 04 23 29", "05 00 00 01 7f 00 00 01 9c 40"],
        ["04 f2 23 29 01 02 03 04 00", "00 5a 9c 40 7f 00 00 01"],
        [`04 f2 23 29 00 00 00 09 00 ${ascii("dir.test")} 00`, "00 5a 9c 40 7f 00 00 01"],
      ]
    ) {
      const m = new SocksServerMachine();
      const r = expectRequest(feedAll(m, [hex(req)]));
      assert.equal(r.request.kind, "connect_dir");
      assert.equal(r.request.target.port, 9001);
      assert.equal(toHex(m.connected({ host: "127.0.0.1", port: 40000 }).write[0]), reply);
    }
  });

  it("HTTP-resistance: G, H, P, C get the 501 page and a close", () => {
    for (
      const first of [
        "GET / HTTP/1.1\r\n",
        "HEAD / HTTP/1.1\r\n",
        "POST / HTTP/1.1\r\n",
        "CONNECT a:443 HTTP/1.1\r\n",
      ]
    ) {
      const o = feedAll(new SocksServerMachine(), [new TextEncoder().encode(first)]);
      assert.equal(o.action.type, "close");
      assert.equal(o.writes, toHex(HTTP_RESISTANCE_RESPONSE));
    }
    assert.match(
      new TextDecoder().decode(HTTP_RESISTANCE_RESPONSE),
      /^HTTP\/1\.0 501 [^\r]*\r\n(.+\r\n)*\r\n<!DOCTYPE html>/,
    );
  });
});

describe("SOCKS4 and SOCKS4A", () => {
  it("SOCKS4 CONNECT with a user id", () => {
    const r = expectRequest(feed(hex(`04 01 00 50 5d b8 d8 22 ${ascii("bob")} 00`)));
    assert.deepEqual(r.request, {
      version: 4,
      kind: "connect",
      target: { host: "93.184.216.34", type: "ipv4", port: 80 },
      user: "bob",
    });
  });

  it("SOCKS4A CONNECT to a name, with early data", () => {
    const r = expectRequest(
      feed(hex(`04 01 01 bb 00 00 00 ff 00 ${ascii("example.org")} 00 ${ascii("hello")}`)),
    );
    assert.deepEqual(r.request.target, { host: "example.org", type: "domain", port: 443 });
    assert.equal(toHex(r.early), ascii("hello"));
  });

  it("BIND and unknown commands: 5B", () => {
    expectClose(feed(hex("04 02 00 50 7f 00 00 01 00")), "00 5b 00 00 00 00 00 00");
    expectClose(feed(hex("04 09 00 50 7f 00 00 01 00")), "00 5b 00 00 00 00 00 00");
  });

  it("with users configured, SOCKS4 is refused: 5B", () => {
    expectClose(feed(hex(`04 01 00 50 7f 00 00 01 ${ascii("alice")} 00`), USERS), "00 5b 00 00 00 00 00 00");
  });

  it("oversized user id and host name: 5B, buffers stay bounded", () => {
    expectClose(
      feedAll(new SocksServerMachine(), [hex(`04 01 00 50 7f 00 00 01 ${ascii("u".repeat(256))}`)]),
      "00 5b 00 00 00 00 00 00",
    );
    expectClose(
      feedAll(new SocksServerMachine(), [hex(`04 01 00 50 00 00 00 01 00 ${ascii("h".repeat(256))}`)]),
      "00 5b 00 00 00 00 00 00",
    );
    // The longest acceptable request still parses.
    const r = expectRequest(
      feedAll(new SocksServerMachine(), [
        hex(`04 01 00 50 00 00 00 01 ${ascii("u".repeat(255))} 00 ${ascii("h".repeat(255))} 00`),
      ]),
    );
    assert.equal(r.request.target.host.length, 255);
  });

  it("malformed SOCKS4A names: 5B", () => {
    expectClose(feed(hex("04 01 00 50 00 00 00 01 00 00")), "00 5b 00 00 00 00 00 00");
    expectClose(feed(hex("04 01 00 50 00 00 00 01 00 61 20 62 00")), "00 5b 00 00 00 00 00 00");
  });

  it("granted and rejected replies", () => {
    const m = new SocksServerMachine();
    m.receive(hex("04 01 00 50 01 02 03 04 00"));
    assert.equal(toHex(m.rejected(ReplyCode.ConnectionRefused).write[0]), "00 5b 00 00 00 00 00 00");
    const v6bound = new SocksServerMachine();
    v6bound.receive(hex("04 01 00 50 01 02 03 04 00"));
    assert.equal(
      toHex(v6bound.connected({ host: "2001:db8::1", port: 1 }).write[0]),
      "00 5a 00 01 00 00 00 00",
    );
  });
});

describe("misuse and garbage", () => {
  it("an unknown first byte closes without a reply", () => {
    for (const b of ["00", "01", "06", "16", "ff"]) expectClose(feed(hex(`${b} 01 02 03`)), "");
  });

  it("receive() after a request or a close, and answers in the wrong state, return close and never throw", () => {
    const m = new SocksServerMachine();
    m.receive(hex("05 01 00 05 01 00 01 01 02 03 04 00 50"));
    assert.equal(m.receive(hex("00")).action.type, "close");
    const fresh = new SocksServerMachine();
    for (
      const step of [
        fresh.connected({ host: "1.2.3.4", port: 1 }),
        fresh.resolved("1.2.3.4"),
        fresh.resolvedName("x"),
        fresh.rejected(1),
      ]
    ) {
      assert.equal(step.action.type, "close");
      assert.equal(step.write.length, 0);
    }
    const done = new SocksServerMachine();
    done.receive(hex("07"));
    assert.deepEqual(done.receive(hex("05 01 00")), {
      write: [],
      action: { type: "close", reason: "unexpected input in state closed" },
    });
  });

  it("the machine copies what it buffers: reusing the caller's buffer does not change the request", () => {
    const m = new SocksServerMachine();
    const buf = hex("05 01 00 05 01 00 01 01 02");
    m.receive(buf);
    buf.fill(0xee);
    const step = m.receive(hex("03 04 00 50"));
    assert.equal(step.action.type, "request");
    assert.equal((step.action as Extract<Action, { type: "request" }>).request.target.host, "1.2.3.4");
  });
});
