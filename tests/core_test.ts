/**
 * The sans-IO SOCKS state machine, byte for byte: hex in, hex out.
 *
 * Every input goes through {@linkcode handshake}, which feeds it whole, split
 * at every byte boundary, one byte at a time and after an empty chunk, and
 * requires the same writes, the same final action (and the same answer to
 * it) every time, with the buffer never above Limits.MaxHandshakeBuffer.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { SocksServerMachine } from "../lib/core/socks_server.ts";
import type { Action, MachineOptions, SocksRequest, Step } from "../lib/core/socks_server.ts";
import { Limits, ReplyCode } from "../lib/core/wire.ts";
import { HTTP_RESISTANCE_RESPONSE } from "../lib/core/replies.ts";
import { concat, hex, repeat, toHex } from "./_hex.ts";

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/** Canonical hex of a protocol literal, for comparing with outcomes. */
const wire = (text: string) => toHex(hex(text));

/** What feeding a machine produced. */
interface Fed {
  /** Every write, in order, as the steps returned them. */
  writes: Uint8Array[];
  /** The first non-`need_more` action (or `need_more` if input ran out); a request's `early` includes chunks not fed. */
  action: Action;
  /** Largest `machine.buffered` seen after any receive(). */
  maxBuffered: number;
}

/**
 * Feeds `chunks` in order, stopping at the first action that is not
 * `need_more`. A request's `early` is extended with the chunks that were not
 * fed, since those too are payload the driver must forward.
 */
function feedAll(machine: SocksServerMachine, chunks: Uint8Array[]): Fed {
  const writes: Uint8Array[] = [];
  let maxBuffered = 0;
  for (let i = 0; i < chunks.length; i++) {
    const step = machine.receive(chunks[i]);
    writes.push(...step.write);
    maxBuffered = Math.max(maxBuffered, machine.buffered);
    const action = step.action;
    if (action.type === "need_more") continue;
    if (action.type === "request") {
      return {
        writes,
        action: { ...action, early: concat(action.early, ...chunks.slice(i + 1)) },
        maxBuffered,
      };
    }
    return { writes, action, maxBuffered };
  }
  return { writes, action: { type: "need_more" }, maxBuffered };
}

/** An action with bytes as hex, so deepEqual compares content across runtimes. */
type Shown =
  | { type: "need_more" }
  | { type: "request"; request: SocksRequest; early: string }
  | { type: "relay" }
  | { type: "close"; reason: string };

function show(action: Action): Shown {
  return action.type === "request" ? { ...action, early: toHex(action.early) } : action;
}

/** An answer step with its writes joined. */
function shownStep(step: Step): { writes: string; action: Shown } {
  return { writes: toHex(concat(...step.write)), action: show(step.action) };
}

/** Every way the harness cuts an input into chunks. */
function chunkings(input: Uint8Array): { label: string; chunks: Uint8Array[] }[] {
  const out = [{ label: "empty chunk first", chunks: [new Uint8Array(0), input.slice()] }];
  for (let i = 1; i < input.length; i++) {
    out.push({ label: `split at ${i}`, chunks: [input.slice(0, i), input.slice(i)] });
  }
  if (input.length > 1) {
    out.push({
      label: "one byte at a time",
      chunks: Array.from(input, (b) => Uint8Array.of(b)),
    });
  }
  return out;
}

interface Outcome {
  /** All writes of the whole-input run, joined, as hex. */
  writes: string;
  /** The writes of the whole-input run, message by message, as hex. */
  writeList: string[];
  /** The final action of the whole-input run. */
  action: Shown;
  /** The answer step, when an answer was given. */
  answer?: { writes: string; action: Shown };
  /** The largest buffer seen in any run. */
  maxBuffered: number;
  /** The machine of the whole-input run (after the answer, if any). */
  machine: SocksServerMachine;
}

interface HandshakeOptions extends MachineOptions {
  /** Answers a `request` action (the same way in every run). */
  answer?: (machine: SocksServerMachine) => Step;
}

const ANSWERS: ((m: SocksServerMachine) => Step)[] = [
  (m) => m.connected({ host: "127.0.0.1", port: 40000 }),
  (m) => m.resolved("1.2.3.4"),
  (m) => m.resolvedName("web.test"),
  (m) => m.rejected(ReplyCode.GeneralFailure),
];

/**
 * Feeds `input` whole and in every chunking, asserts all runs agree and stay
 * within the buffer limit, checks the post-handshake invariants, and returns
 * the whole-input outcome for the test's own byte-level assertions.
 */
function handshake(input: Uint8Array | string, options: HandshakeOptions = {}): Outcome {
  const bytes = typeof input === "string" ? hex(input) : input;
  const { answer, ...machineOptions } = options;
  const run = (chunks: Uint8Array[]) => {
    const machine = new SocksServerMachine(machineOptions);
    const fed = feedAll(machine, chunks);
    const answered = answer && fed.action.type === "request" ? shownStep(answer(machine)) : undefined;
    return { machine, fed, answered };
  };
  const whole = run([bytes.slice()]);
  const expected = {
    writes: toHex(concat(...whole.fed.writes)),
    action: show(whole.fed.action),
    answer: whole.answered,
  };
  let maxBuffered = whole.fed.maxBuffered;
  const machines = [whole.machine];
  for (const { label, chunks } of chunkings(bytes)) {
    const r = run(chunks);
    assert.deepEqual(
      { writes: toHex(concat(...r.fed.writes)), action: show(r.fed.action), answer: r.answered },
      expected,
      `${label} differs from feeding ${toHex(bytes).slice(0, 120)} whole`,
    );
    maxBuffered = Math.max(maxBuffered, r.fed.maxBuffered);
    machines.push(r.machine);
  }
  assert.ok(
    maxBuffered <= Limits.MaxHandshakeBuffer,
    `buffered ${maxBuffered} > ${Limits.MaxHandshakeBuffer}`,
  );

  const final = expected.answer?.action ?? expected.action;
  if (final.type !== "need_more") {
    // Once a request is out (or the connection is closed / relaying), input is a protocol error.
    for (const m of machines.slice(-2)) {
      for (const more of [hex("05 01 00"), hex("00")]) {
        const step = shownStep(m.receive(more));
        assert.deepEqual([step.writes, step.action.type], ["", "close"]);
      }
      assert.equal(m.buffered, 0);
    }
  }
  if (expected.action.type !== "request") {
    // No request pending: every answer method closes without writing and without throwing.
    for (const answerWith of ANSWERS) {
      const m = new SocksServerMachine(machineOptions);
      feedAll(m, [bytes.slice()]);
      const step = answerWith(m);
      assert.equal(step.action.type, "close");
      assert.equal(toHex(concat(...step.write)), "");
    }
  }
  return {
    writes: expected.writes,
    writeList: whole.fed.writes.map(toHex),
    action: expected.action,
    answer: expected.answer,
    maxBuffered,
    machine: whole.machine,
  };
}

/** Asserts a `request` action with exactly this request and early data. */
function assertRequest(outcome: Outcome, request: SocksRequest, early = "") {
  assert.deepEqual(outcome.action, { type: "request", request, early: wire(early) });
  assert.deepEqual(outcome.machine.request, request);
}

/** Asserts the handshake ended in close after writing exactly `writes`. */
function assertClosed(outcome: { writes: string; action: Shown }, writes: string) {
  assert.equal(outcome.writes, wire(writes));
  assert.equal(outcome.action.type, "close");
}

const S4_REJECTED = "00 5B 0000 00000000";
const S5_GENERAL_FAILURE = "05 01 00 01 00000000 0000";
const S5_COMMAND_NOT_SUPPORTED = "05 07 00 01 00000000 0000";
const S5_ATYP_NOT_SUPPORTED = "05 08 00 01 00000000 0000";
const GREETING = "05 01 00";
const BOUND = { host: "127.0.0.1", port: 40000 };

/** RFC 1929 checker accepting alice/secret, recording what it was given. */
function credentials() {
  const calls: [string, string][] = [];
  const latin1 = (b: Uint8Array) => String.fromCharCode(...b);
  const authenticate = (user: Uint8Array, password: Uint8Array) => {
    calls.push([latin1(user), latin1(password)]);
    return latin1(user) === "alice" && latin1(password) === "secret";
  };
  return { authenticate, calls };
}

// ---------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------

describe("test helpers", () => {
  it("hex() reads pairs and 'quoted ASCII', and refuses typos", () => {
    assert.deepEqual(Array.from(hex("05 03 'ab' 9c40")), [5, 3, 0x61, 0x62, 0x9c, 0x40]);
    assert.throws(() => hex("05 0"));
    assert.throws(() => hex("05 0g"));
    assert.throws(() => hex("'open"));
  });

  it("feedAll stops at the first decisive action and counts unfed chunks as early data", () => {
    const fed = feedAll(new SocksServerMachine(), [
      hex("05 01"),
      hex("00 05 01 00 01 7f000001"),
      hex("0050 'ab'"),
      hex("'cd'"),
    ]);
    assert.deepEqual(fed.writes.map(toHex), [wire("05 00")]);
    assert.equal(fed.action.type, "request");
    assert.equal(fed.action.type === "request" && toHex(fed.action.early), wire("'abcd'"));
  });
});

// ---------------------------------------------------------------------------
// SOCKS4 and SOCKS4A
// ---------------------------------------------------------------------------

describe("SOCKS4", () => {
  it("CONNECT to an IPv4 address, with the user id reported", () => {
    const r = handshake("04 01 0050 7f000001 'alice' 00", { answer: (m) => m.connected(BOUND) });
    assert.equal(r.writes, "");
    assertRequest(r, {
      version: 4,
      kind: "connect",
      target: { host: "127.0.0.1", type: "ipv4", port: 80 },
      user: "alice",
    });
    assert.deepEqual(r.answer, { writes: wire("00 5A 9c40 7f000001"), action: { type: "relay" } });
  });

  it("CONNECT with an empty user id has no user", () => {
    const r = handshake("04 01 01bb c0000201 00");
    assertRequest(r, { version: 4, kind: "connect", target: { host: "192.0.2.1", type: "ipv4", port: 443 } });
  });

  it("0.0.0.0 is a plain SOCKS4 address, not SOCKS4A", () => {
    const r = handshake("04 01 0050 00000000 00 'not-a-host' 00");
    assertRequest(
      r,
      { version: 4, kind: "connect", target: { host: "0.0.0.0", type: "ipv4", port: 80 } },
      "'not-a-host' 00",
    );
  });

  it("bytes after the request are early data", () => {
    const r = handshake("04 01 0050 7f000001 00 'GET / HTTP/1.0' 0d0a 0d0a");
    assertRequest(
      r,
      { version: 4, kind: "connect", target: { host: "127.0.0.1", type: "ipv4", port: 80 } },
      "'GET / HTTP/1.0' 0d0a 0d0a",
    );
  });

  it("a user id of 255 bytes is accepted", () => {
    const r = handshake(`04 01 0050 7f000001 ${repeat(0x61, 255)} 00`);
    assertRequest(r, {
      version: 4,
      kind: "connect",
      target: { host: "127.0.0.1", type: "ipv4", port: 80 },
      user: "a".repeat(255),
    });
  });

  it("a user id over 255 bytes without NUL is refused before the buffer grows", () => {
    const r = handshake(`04 01 0050 7f000001 ${repeat(0x61, 256)}`);
    assertClosed(r, S4_REJECTED);
    const flood = handshake(`04 01 0050 7f000001 ${repeat(0x61, 700)}`);
    assertClosed(flood, S4_REJECTED);
    assert.ok(flood.maxBuffered <= 8 + 255, `buffered ${flood.maxBuffered}`);
  });

  it("a user id over 255 bytes is refused even when its NUL arrives in the same chunk", () => {
    // Otherwise the outcome would depend on how the bytes were chunked.
    assertClosed(handshake(`04 01 0050 7f000001 ${repeat(0x61, 256)} 00`), S4_REJECTED);
  });

  it("BIND, UDP ASSOCIATE, RESOLVE_PTR and unknown commands get 5B and close", () => {
    for (const cmd of ["02", "03", "f1", "00", "04", "f3", "ff"]) {
      assertClosed(handshake(`04 ${cmd} 0050 7f000001 00`), S4_REJECTED);
    }
  });

  it("is refused (5B) when authentication is configured", () => {
    const { authenticate, calls } = credentials();
    assertClosed(handshake("04 01 0050 7f000001 'alice' 00", { authenticate }), S4_REJECTED);
    assertClosed(handshake("04 01 0050 00000001 00 'example.com' 00", { authenticate }), S4_REJECTED);
    assert.deepEqual(calls, []);
  });

  it("is refused when allowSocks4 is false, and served with auth when allowSocks4 is true", () => {
    assertClosed(handshake("04 01 0050 7f000001 00", { allowSocks4: false }), S4_REJECTED);
    const { authenticate } = credentials();
    const r = handshake("04 01 0050 7f000001 00", { authenticate, allowSocks4: true });
    assert.equal(r.action.type, "request");
  });

  it("connected() with an IPv6 bound address sends 0.0.0.0 (SOCKS4 cannot carry it)", () => {
    const r = handshake("04 01 0050 7f000001 00", {
      answer: (m) => m.connected({ host: "2001:db8::2", port: 443 }),
    });
    assert.deepEqual(r.answer, { writes: wire("00 5A 01bb 00000000"), action: { type: "relay" } });
  });

  it("rejected() sends 5B whatever the code", () => {
    for (const code of [ReplyCode.NotAllowed, ReplyCode.ConnectionRefused, ReplyCode.Succeeded]) {
      const r = handshake("04 01 0050 7f000001 00", { answer: (m) => m.rejected(code) });
      assertClosed(r.answer!, S4_REJECTED);
    }
  });
});

describe("SOCKS4A", () => {
  it("0.0.0.x (x ≠ 0) plus a host name is a domain target", () => {
    const r = handshake("04 01 01bb 00000001 'bob' 00 'example.com' 00", {
      answer: (m) => m.connected(BOUND),
    });
    assertRequest(r, {
      version: 4,
      kind: "connect",
      target: { host: "example.com", type: "domain", port: 443 },
      user: "bob",
    });
    assert.deepEqual(r.answer, { writes: wire("00 5A 9c40 7f000001"), action: { type: "relay" } });
  });

  it("any x from 1 to 255 selects 4A", () => {
    for (const x of ["02", "7f", "ff"]) {
      const r = handshake(`04 01 0050 000000${x} 00 'h.test' 00 'early'`);
      assertRequest(
        r,
        { version: 4, kind: "connect", target: { host: "h.test", type: "domain", port: 80 } },
        "'early'",
      );
    }
  });

  it("an empty, space, control, DEL or non-ASCII host name gets 5B and close", () => {
    for (const name of ["", "'a b'", "'a' 09 'b'", "'a' 01", "7f", "'caf' c3a9", "'x' 80"]) {
      assertClosed(handshake(`04 01 0050 00000001 00 ${name} 00`), S4_REJECTED);
    }
  });

  it("a host name of 255 bytes (with a 255-byte user id) stays within the buffer limit", () => {
    const r = handshake(`04 01 0050 00000001 ${repeat(0x75, 255)} 00 ${repeat(0x68, 255)} 00`);
    assertRequest(r, {
      version: 4,
      kind: "connect",
      target: { host: "h".repeat(255), type: "domain", port: 80 },
      user: "u".repeat(255),
    });
    assert.ok(r.maxBuffered > 500, "the largest legal SOCKS4A request is buffered almost whole");
  });

  it("a host name over 255 bytes gets 5B and close, NUL or not", () => {
    assertClosed(handshake(`04 01 0050 00000001 00 ${repeat(0x68, 256)}`), S4_REJECTED);
    assertClosed(handshake(`04 01 0050 00000001 00 ${repeat(0x68, 256)} 00`), S4_REJECTED);
    const flood = handshake(`04 01 0050 00000001 ${repeat(0x75, 255)} 00 ${repeat(0x68, 600)}`);
    assertClosed(flood, S4_REJECTED);
  });
});

describe("SOCKS4 / 4A Tor extensions", () => {
  it("RESOLVE (F0) over SOCKS4A; an IPv4 answer is granted in the address field", () => {
    const r = handshake("04 f0 0000 00000001 00 'web.test' 00", { answer: (m) => m.resolved("1.2.3.4") });
    assertRequest(r, { version: 4, kind: "resolve", target: { host: "web.test", type: "domain", port: 0 } });
    assertClosed(r.answer!, "00 5A 0000 01020304");
  });

  it("RESOLVE over plain SOCKS4 names an IPv4 target", () => {
    const r = handshake("04 f0 0000 01020304 00", { answer: (m) => m.resolved("::ffff:5.6.7.8") });
    assertRequest(r, { version: 4, kind: "resolve", target: { host: "1.2.3.4", type: "ipv4", port: 0 } });
    assertClosed(r.answer!, "00 5A 0000 05060708");
  });

  it("an IPv6 answer cannot be carried by SOCKS4: 5B", () => {
    const r = handshake("04 f0 0000 00000001 00 'web.test' 00", { answer: (m) => m.resolved("2001:db8::1") });
    assertClosed(r.answer!, S4_REJECTED);
  });

  it("a failed RESOLVE is 5B", () => {
    const r = handshake("04 f0 0000 00000001 00 'web.test' 00", {
      answer: (m) => m.rejected(ReplyCode.HostUnreachable),
    });
    assertClosed(r.answer!, S4_REJECTED);
  });

  it("RESOLVE_PTR (F1) is SOCKS5 only: 5B over SOCKS4 and 4A", () => {
    assertClosed(handshake("04 f1 0000 01020304 00"), S4_REJECTED);
    assertClosed(handshake("04 f1 0000 00000001 00 'web.test' 00"), S4_REJECTED);
  });

  it("CONNECT_DIR (F2) over SOCKS4 and 4A, granted with connected()", () => {
    const s4 = handshake("04 f2 2329 c0000201 00", { answer: (m) => m.connected(BOUND) });
    assertRequest(s4, {
      version: 4,
      kind: "connect_dir",
      target: { host: "192.0.2.1", type: "ipv4", port: 9001 },
    });
    assert.deepEqual(s4.answer, { writes: wire("00 5A 9c40 7f000001"), action: { type: "relay" } });
    const s4a = handshake("04 f2 2329 00000001 00 'dir.test' 00", { answer: (m) => m.connected(BOUND) });
    assertRequest(s4a, {
      version: 4,
      kind: "connect_dir",
      target: { host: "dir.test", type: "domain", port: 9001 },
    });
    assert.deepEqual(s4a.answer, { writes: wire("00 5A 9c40 7f000001"), action: { type: "relay" } });
  });
});

// ---------------------------------------------------------------------------
// SOCKS5 method negotiation and RFC 1929
// ---------------------------------------------------------------------------

describe("SOCKS5 greeting", () => {
  it("no-auth is selected when offered", () => {
    const r = handshake(GREETING);
    assert.equal(r.writes, wire("05 00"));
    assert.deepEqual(r.action, { type: "need_more" });
    assert.equal(handshake("05 03 01 02 00").writes, wire("05 00"));
  });

  it("without no-auth among the methods: 05 FF and close", () => {
    assertClosed(handshake("05 01 02"), "05 FF");
    assertClosed(handshake("05 02 01 80"), "05 FF");
  });

  it("NMETHODS = 0: 05 FF and close, with or without authentication", () => {
    assertClosed(handshake("05 00"), "05 FF");
    assertClosed(handshake("05 00", { authenticate: credentials().authenticate }), "05 FF");
  });

  it("with authentication configured, a greeting without 02 gets 05 FF and close", () => {
    assertClosed(handshake("05 01 00", { authenticate: credentials().authenticate }), "05 FF");
    assertClosed(handshake("05 02 00 01", { authenticate: credentials().authenticate }), "05 FF");
  });

  it("an incomplete greeting waits for its methods", () => {
    const r = handshake("05 03 00 01");
    assert.equal(r.writes, "");
    assert.deepEqual(r.action, { type: "need_more" });
  });
});

describe("SOCKS5 username/password (RFC 1929)", () => {
  const AUTH_OK = "01 05 'alice' 06 'secret'";

  it("selects 02, accepts good credentials with 01 00, and reports the user", () => {
    const { authenticate, calls } = credentials();
    const r = handshake(`05 02 00 02 ${AUTH_OK} 05 01 00 03 0b 'example.com' 01bb`, { authenticate });
    assert.deepEqual(r.writeList, [wire("05 02"), wire("01 00")]);
    assertRequest(r, {
      version: 5,
      kind: "connect",
      target: { host: "example.com", type: "domain", port: 443 },
      user: "alice",
    });
    assert.ok(calls.length > 0 && calls.every(([u, p]) => u === "alice" && p === "secret"));
  });

  it("wrong credentials: 01 01 and close", () => {
    assertClosed(handshake("05 01 02 01 05 'alice' 05 'wrong'", credentials()), "05 02 01 01");
    assertClosed(handshake("05 01 02 01 03 'bob' 06 'secret'", credentials()), "05 02 01 01");
  });

  it("empty user or password fails without asking the checker", () => {
    const calls: number[] = [];
    const authenticate = () => (calls.push(1), true);
    assertClosed(handshake("05 01 02 01 00 06 'secret'", { authenticate }), "05 02 01 01");
    assertClosed(handshake("05 01 02 01 05 'alice' 00", { authenticate }), "05 02 01 01");
    assertClosed(handshake("05 01 02 01 00 00", { authenticate }), "05 02 01 01");
    assert.deepEqual(calls, []);
  });

  it("a sub-negotiation version other than 01 fails", () => {
    for (const ver of ["00", "02", "05"]) {
      assertClosed(handshake(`05 01 02 ${ver} 05 'alice' 06 'secret'`, credentials()), "05 02 01 01");
    }
  });

  it("fields of 255 bytes are read whole", () => {
    const u = "61".repeat(255), p = "62".repeat(255);
    const seen: number[] = [];
    const authenticate = (
      user: Uint8Array,
      password: Uint8Array,
    ) => (seen.push(user.length, password.length), true);
    const r = handshake(`05 01 02 01 ff ${u} ff ${p} 05 01 00 01 7f000001 0050`, { authenticate });
    assert.deepEqual(r.writeList, [wire("05 02"), wire("01 00")]);
    assert.equal(r.action.type === "request" && r.action.request.user, "a".repeat(255));
    assert.deepEqual(seen.slice(0, 2), [255, 255]);
  });

  it("greeting, auth, request and early payload in one chunk", () => {
    const r = handshake(
      `05 01 02 ${AUTH_OK} 05 01 00 01 c0000201 0050 'GET / HTTP/1.1' 0d0a 0d0a`,
      credentials(),
    );
    assert.deepEqual(r.writeList, [wire("05 02"), wire("01 00")]);
    assertRequest(
      r,
      { version: 5, kind: "connect", target: { host: "192.0.2.1", type: "ipv4", port: 80 }, user: "alice" },
      "'GET / HTTP/1.1' 0d0a 0d0a",
    );
  });
});

// ---------------------------------------------------------------------------
// SOCKS5 requests
// ---------------------------------------------------------------------------

describe("SOCKS5 CONNECT", () => {
  it("to IPv4", () => {
    const r = handshake(`${GREETING} 05 01 00 01 7f000001 0050`, { answer: (m) => m.connected(BOUND) });
    assert.deepEqual(r.writeList, [wire("05 00")]);
    assertRequest(r, { version: 5, kind: "connect", target: { host: "127.0.0.1", type: "ipv4", port: 80 } });
    assert.deepEqual(r.answer, { writes: wire("05 00 00 01 7f000001 9c40"), action: { type: "relay" } });
  });

  it("to IPv6, named in canonical text", () => {
    const r = handshake(`${GREETING} 05 01 00 04 20010db8000000000000000000000001 01bb`);
    assertRequest(r, {
      version: 5,
      kind: "connect",
      target: { host: "2001:db8::1", type: "ipv6", port: 443 },
    });
  });

  it("to a domain name", () => {
    const r = handshake(`${GREETING} 05 01 00 03 0b 'example.com' 0050 'early'`);
    assertRequest(
      r,
      { version: 5, kind: "connect", target: { host: "example.com", type: "domain", port: 80 } },
      "'early'",
    );
  });

  it("to a 255-byte domain name", () => {
    const r = handshake(`${GREETING} 05 01 00 03 ff ${repeat(0x64, 255)} ffff`);
    assertRequest(r, {
      version: 5,
      kind: "connect",
      target: { host: "d".repeat(255), type: "domain", port: 65535 },
    });
  });

  it("the reply carries the bound address: IPv6 as ATYP 04, IPv4-mapped as ATYP 01", () => {
    const req = `${GREETING} 05 01 00 01 7f000001 0050`;
    const v6 = handshake(req, { answer: (m) => m.connected({ host: "2001:db8::2", port: 443 }) });
    assert.deepEqual(v6.answer, {
      writes: wire("05 00 00 04 20010db8000000000000000000000002 01bb"),
      action: { type: "relay" },
    });
    const mapped = handshake(req, { answer: (m) => m.connected({ host: "::ffff:127.0.0.1", port: 40000 }) });
    assert.deepEqual(mapped.answer, { writes: wire("05 00 00 01 7f000001 9c40"), action: { type: "relay" } });
  });

  it("rejected() sends the code in a well-formed reply, never a success", () => {
    const req = `${GREETING} 05 01 00 03 0b 'example.com' 0050`;
    assertClosed(
      handshake(req, { answer: (m) => m.rejected(ReplyCode.ConnectionRefused) }).answer!,
      "05 05 00 01 00000000 0000",
    );
    assertClosed(
      handshake(req, { answer: (m) => m.rejected(ReplyCode.NotAllowed) }).answer!,
      "05 02 00 01 00000000 0000",
    );
    assertClosed(
      handshake(req, { answer: (m) => m.rejected(ReplyCode.Succeeded) }).answer!,
      S5_GENERAL_FAILURE,
    );
  });
});

describe("SOCKS5 Tor extensions", () => {
  it("RESOLVE (F0): an IPv4 answer is ATYP 01 in the address field", () => {
    const r = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.resolved("1.2.3.4"),
    });
    assertRequest(r, { version: 5, kind: "resolve", target: { host: "web.test", type: "domain", port: 0 } });
    assertClosed(r.answer!, "05 00 00 01 01020304 0000");
  });

  it("RESOLVE: an IPv6 answer is ATYP 04", () => {
    const r = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.resolved("2001:db8::1"),
    });
    assertClosed(r.answer!, "05 00 00 04 20010db8000000000000000000000001 0000");
  });

  it("RESOLVE failure: HostUnreachable in a well-formed ATYP 01 reply", () => {
    const r = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.rejected(ReplyCode.HostUnreachable),
    });
    assertClosed(r.answer!, "05 04 00 01 00000000 0000");
  });

  it("RESOLVE of an IP literal is still a resolve request", () => {
    const r = handshake(`${GREETING} 05 f0 00 01 01020304 0000`);
    assertRequest(r, { version: 5, kind: "resolve", target: { host: "1.2.3.4", type: "ipv4", port: 0 } });
  });

  it("RESOLVE_PTR (F1) of IPv4 and IPv6, answered with a name (ATYP 03)", () => {
    const v4 = handshake(`${GREETING} 05 f1 00 01 c0000201 0000`, {
      answer: (m) => m.resolvedName("web.test"),
    });
    assertRequest(v4, {
      version: 5,
      kind: "resolve_ptr",
      target: { host: "192.0.2.1", type: "ipv4", port: 0 },
    });
    assertClosed(v4.answer!, "05 00 00 03 08 'web.test' 0000");
    const v6 = handshake(`${GREETING} 05 f1 00 04 20010db8000000000000000000000001 0000`, {
      answer: (m) => m.resolvedName("web.test"),
    });
    assertRequest(v6, {
      version: 5,
      kind: "resolve_ptr",
      target: { host: "2001:db8::1", type: "ipv6", port: 0 },
    });
    assertClosed(v6.answer!, "05 00 00 03 08 'web.test' 0000");
  });

  it("RESOLVE_PTR answered with an unsendable name becomes HostUnreachable", () => {
    for (const name of ["", "a b", "caf\u00e9", "x".repeat(256)]) {
      const r = handshake(`${GREETING} 05 f1 00 01 c0000201 0000`, { answer: (m) => m.resolvedName(name) });
      assertClosed(r.answer!, "05 04 00 01 00000000 0000");
    }
  });

  it("RESOLVE_PTR of a domain name: 05 08 and close", () => {
    assertClosed(handshake(`${GREETING} 05 f1 00 03 08 'web.test' 0000`), `05 00 ${S5_ATYP_NOT_SUPPORTED}`);
  });

  it("CONNECT_DIR (F2), granted with connected()", () => {
    const r = handshake(`${GREETING} 05 f2 00 01 c0000201 2329`, { answer: (m) => m.connected(BOUND) });
    assertRequest(r, {
      version: 5,
      kind: "connect_dir",
      target: { host: "192.0.2.1", type: "ipv4", port: 9001 },
    });
    assert.deepEqual(r.answer, { writes: wire("05 00 00 01 7f000001 9c40"), action: { type: "relay" } });
  });
});

describe("SOCKS5 refusals", () => {
  it("BIND, UDP ASSOCIATE and unknown commands: 05 07 and close", () => {
    for (const cmd of ["02", "03", "00", "04", "f3", "ff"]) {
      assertClosed(
        handshake(`${GREETING} 05 ${cmd} 00 01 7f000001 0050`),
        `05 00 ${S5_COMMAND_NOT_SUPPORTED}`,
      );
      assertClosed(handshake(`${GREETING} 05 ${cmd} 00 03 01 'h' 0050`), `05 00 ${S5_COMMAND_NOT_SUPPORTED}`);
    }
  });

  it("an unknown address type: 05 08 and close", () => {
    for (const atyp of ["00", "02", "05", "ff"]) {
      assertClosed(handshake(`${GREETING} 05 01 00 ${atyp} 7f000001 0050`), `05 00 ${S5_ATYP_NOT_SUPPORTED}`);
    }
  });

  it("an empty domain name: 05 01 and close", () => {
    assertClosed(handshake(`${GREETING} 05 01 00 03 00 0050`), `05 00 ${S5_GENERAL_FAILURE}`);
  });

  it("NUL, space, control, DEL or non-ASCII in a domain name: 05 01 and close", () => {
    for (
      const name of [
        "03 'a' 00 'b'",
        "03 'a b'",
        "03 'a' 0a 'b'",
        "01 1f",
        "01 7f",
        "04 'caf' e9",
        "04 'x' c3a9 'y'",
      ]
    ) {
      assertClosed(handshake(`${GREETING} 05 01 00 03 ${name} 0050`), `05 00 ${S5_GENERAL_FAILURE}`);
    }
  });

  it("a request with a version other than 05: general failure and close", () => {
    assertClosed(handshake(`${GREETING} 04 01 00 01 7f000001 0050`), `05 00 ${S5_GENERAL_FAILURE}`);
  });
});

// ---------------------------------------------------------------------------
// The first byte
// ---------------------------------------------------------------------------

describe("the first byte", () => {
  const page = new TextDecoder().decode(HTTP_RESISTANCE_RESPONSE);

  it("the HTTP-resistance page is a complete HTTP/1.0 501 response", () => {
    assert.match(page, /^HTTP\/1\.0 501 [^\r\n]*\r\n/);
    const [head, body] = page.split("\r\n\r\n");
    assert.match(head, /\r\nConnection: close(\r\n|$)/);
    assert.equal(Number(/\r\nContent-Length: (\d+)/.exec(head)?.[1]), new TextEncoder().encode(body).length);
    assert.match(body, /SOCKS/);
  });

  it("G, H, P or C (HTTP spoken to the SOCKS port) gets the page, then close", () => {
    for (
      const request of [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "HEAD / HTTP/1.0\r\n\r\n",
        "POST /x HTTP/1.1\r\n\r\n",
        "PUT /x HTTP/1.1\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
      ]
    ) {
      const r = handshake(new TextEncoder().encode(request));
      assert.equal(r.writes, toHex(HTTP_RESISTANCE_RESPONSE));
      assert.equal(r.writes.slice(0, 14), wire("'HTTP/'"));
      assert.equal(r.action.type, "close");
    }
  });

  it("any other first byte closes without writing anything", () => {
    const socks = new Set([0x04, 0x05, 0x47, 0x48, 0x50, 0x43]);
    for (let b = 0; b < 256; b++) {
      if (socks.has(b)) continue;
      const r = handshake(Uint8Array.of(b, 0x01, 0x00, 0x50));
      assertClosed(r, "");
    }
  });

  it("04 and 05 wait for the rest of the message", () => {
    assert.deepEqual(handshake("05").action, { type: "need_more" });
    assert.deepEqual(handshake("04 01 0050 7f000001").action, { type: "need_more" });
    assert.equal(handshake("05").writes, "");
  });
});

// ---------------------------------------------------------------------------
// After the handshake
// ---------------------------------------------------------------------------

describe("after the handshake", () => {
  it("receive() while a request is pending closes", () => {
    const m = new SocksServerMachine();
    assert.equal(m.receive(hex(`${GREETING} 05 01 00 01 7f000001 0050`)).action.type, "request");
    const step = m.receive(hex("'more'"));
    assert.deepEqual(shownStep(step).writes, "");
    assert.equal(step.action.type, "close");
    // ...and the request can no longer be answered.
    assert.deepEqual(shownStep(m.connected(BOUND)).writes, "");
  });

  it("receive() while relaying or after close closes, with nothing written", () => {
    const relaying = new SocksServerMachine();
    relaying.receive(hex(`${GREETING} 05 01 00 01 7f000001 0050`));
    assert.equal(relaying.connected(BOUND).action.type, "relay");
    const afterRelay = shownStep(relaying.receive(hex("'data'")));
    assert.deepEqual([afterRelay.writes, afterRelay.action.type], ["", "close"]);
    const closed = new SocksServerMachine();
    assert.equal(closed.receive(hex("05 00")).action.type, "close");
    const afterClose = shownStep(closed.receive(hex(GREETING)));
    assert.deepEqual([afterClose.writes, afterClose.action.type], ["", "close"]);
  });

  it("answer methods before any request close without writing", () => {
    for (const answerWith of ANSWERS) {
      const m = new SocksServerMachine();
      assert.deepEqual(shownStep(answerWith(m)).writes, "");
      assert.equal(m.receive(hex(GREETING)).action.type, "close");
    }
    const midway = new SocksServerMachine();
    assert.equal(midway.receive(hex(GREETING)).action.type, "need_more");
    assert.equal(midway.connected(BOUND).action.type, "close");
  });

  it("an answer that does not fit the request closes without writing", () => {
    const cases: [string, (m: SocksServerMachine) => Step][] = [
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.resolved("1.2.3.4")],
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.resolvedName("web.test")],
      [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, (m) => m.connected(BOUND)],
      [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, (m) => m.resolvedName("web.test")],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.resolved("1.2.3.4")],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.connected(BOUND)],
      ["04 f0 0000 00000001 00 'web.test' 00", (m) => m.connected(BOUND)],
      ["04 01 0050 7f000001 00", (m) => m.resolved("1.2.3.4")],
    ];
    for (const [input, wrong] of cases) {
      const r = handshake(input, { answer: wrong });
      assert.equal(r.action.type, "request", input);
      assertClosed(r.answer!, "");
    }
  });

  it("a second answer closes without writing", () => {
    const r = handshake(`${GREETING} 05 01 00 01 7f000001 0050`, { answer: (m) => m.connected(BOUND) });
    assert.equal(r.answer!.action.type, "relay");
    for (const again of ANSWERS) assert.deepEqual(shownStep(again(r.machine)).writes, "");
    const resolved = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.resolved("1.2.3.4"),
    });
    assert.deepEqual(shownStep(resolved.machine.rejected(ReplyCode.GeneralFailure)).writes, "");
  });

  it("does not keep a view of the caller's buffer between receive() calls", () => {
    const m = new SocksServerMachine();
    const buf = hex(`${GREETING} 05 01 00 03 0b 'exam'`);
    assert.equal(m.receive(buf).action.type, "need_more");
    buf.fill(0x41); // the driver reuses its read buffer
    const step = m.receive(hex("'ple.com' 0050"));
    assert.equal(step.action.type === "request" && step.action.request.target.host, "example.com");
  });

  it("early data is a copy, not a view of the chunk", () => {
    const m = new SocksServerMachine();
    const buf = hex(`${GREETING} 05 01 00 01 7f000001 0050 'abc'`);
    const step = m.receive(buf);
    buf.fill(0);
    assert.equal(step.action.type === "request" && toHex(step.action.early), wire("'abc'"));
  });
});

// ---------------------------------------------------------------------------
// Arbitrary bytes, arbitrary chunking
// ---------------------------------------------------------------------------

describe("mutated handshakes", () => {
  /** xorshift32: deterministic, so a failure names a reproducible case. */
  function rng(seed: number) {
    let s = seed >>> 0 || 1;
    return (n: number) => {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return s % n;
    };
  }

  const corpus: [string, MachineOptions][] = [
    [`${GREETING} 05 01 00 01 7f000001 0050 'x'`, {}],
    [`${GREETING} 05 01 00 04 20010db8000000000000000000000001 01bb`, {}],
    [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {}],
    [`${GREETING} 05 f1 00 01 c0000201 0000`, {}],
    ["05 01 02 01 05 'alice' 06 'secret' 05 01 00 03 0b 'example.com' 0050", credentials()],
    ["04 01 0050 7f000001 'alice' 00", {}],
    ["04 f0 0000 00000001 'u' 00 'web.test' 00 'early'", {}],
    ["'GET / HTTP/1.0' 0d0a", {}],
  ];

  it("never throw, agree across chunkings, and stay within the buffer limit", () => {
    const next = rng(0x5eed);
    let requests = 0, closes = 0;
    for (let i = 0; i < 400; i++) {
      const [text, options] = corpus[next(corpus.length)];
      const bytes = Array.from(hex(text));
      for (let k = 1 + next(3); k > 0; k--) {
        const at = next(bytes.length + 1);
        switch (next(4)) {
          case 0:
            if (at < bytes.length) bytes[at] = next(256);
            break;
          case 1:
            bytes.splice(at, 0, next(256));
            break;
          case 2:
            bytes.splice(at, 1);
            break;
          default:
            bytes.length = at;
        }
      }
      const input = Uint8Array.from(bytes);
      const r = handshake(input, { ...options, answer: ANSWERS[next(ANSWERS.length)] });
      if (r.action.type === "request") requests++;
      if (r.action.type === "close") closes++;
      if (r.answer && r.answer.action.type === "close" && r.answer.writes !== "") {
        // Any reply written is well-formed: a SOCKS4 reply is 8 bytes, a SOCKS5 one starts 05 xx 00.
        const reply = hex(r.answer.writes);
        if (reply[0] === 0) assert.equal(reply.length, 8);
        else assert.deepEqual([reply[0], reply[2]], [5, 0]);
      }
    }
    // The mutations must reach both outcomes, or this test proves little.
    assert.ok(requests > 20 && closes > 20, `requests ${requests}, closes ${closes}`);
  });
});
