/**
 * The sans-IO SOCKS state machine, byte for byte: hex in, hex out.
 *
 * Every input goes through {@linkcode handshake}, which feeds it whole, split
 * at every byte boundary, one byte at a time and after an empty chunk, and
 * requires the same writes, the same final action (and the same answer to
 * it) every time, with the buffer never above Limits.MaxHandshakeBuffer.
 * Every step any test sees is checked by {@linkcode checkReply}: `reply` is
 * set exactly when a request's reply is written, and is the byte written.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { SocksServerMachine } from "../lib/core/socks_server.ts";
import type { Action, MachineOptions, SocksRequest, Step } from "../lib/core/socks_server.ts";
import type { CloseCode, RequestKind } from "../lib/core/request.ts";
import { Limits, ReplyCode } from "../lib/core/wire.ts";
import { HTTP_RESISTANCE_RESPONSE } from "../lib/core/replies.ts";
import { concat, hex, repeat, toHex } from "./_hex.ts";

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/** Canonical hex of a protocol literal, for comparing with outcomes. */
const wire = (text: string) => toHex(hex(text));

/** A machine of any commands. */
type Machine = SocksServerMachine<RequestKind>;

/**
 * Fails unless `step.reply` is the REP / CD byte of the request reply the
 * step wrote, and is absent when it wrote none. A request's reply is any
 * write of 8 bytes or more but the HTTP page (method selections and RFC 1929
 * statuses are 2 bytes).
 */
export function checkReply(step: Step<RequestKind>): Step<RequestKind> {
  const replies = step.write.filter((w) => w.length >= 8 && toHex(w) !== toHex(HTTP_RESISTANCE_RESPONSE));
  assert.ok(replies.length <= 1, `${replies.length} replies in one step`);
  assert.equal(step.reply, replies.length ? replies[0][1] : undefined, `reply of ${step.write.map(toHex)}`);
  if (replies.length) assert.equal(replies[0], step.write.at(-1), "a reply is the step's last write");
  return step;
}

/** Asserts that `call` throws a TypeError (driver misuse) and leaves the machine as it was. */
function assertMisuse(machine: Machine, call: () => unknown, message?: RegExp) {
  const before = { state: machine.state, buffered: machine.buffered, request: machine.request };
  assert.throws(call, (e: unknown) => e instanceof TypeError && (!message || message.test(e.message)));
  assert.deepEqual({ state: machine.state, buffered: machine.buffered, request: machine.request }, before);
}

/** What feeding a machine produced. */
interface Fed {
  /** Every write, in order, as the steps returned them. */
  writes: Uint8Array[];
  /** The first non-`need_more` action (or `need_more` if input ran out); a request's `early` includes chunks not fed. */
  action: Action<RequestKind>;
  /** The `reply` of the step that decided, if any. */
  reply?: number;
  /** Largest `machine.buffered` seen after any receive(). */
  maxBuffered: number;
}

/**
 * Feeds `chunks` in order, stopping at the first action that is not
 * `need_more`. A request's `early` is extended with the chunks that were not
 * fed, since those too are payload the driver must forward.
 */
function feedAll(machine: Machine, chunks: Uint8Array[]): Fed {
  const writes: Uint8Array[] = [];
  let maxBuffered = 0;
  for (let i = 0; i < chunks.length; i++) {
    const step = checkReply(machine.receive(chunks[i]));
    writes.push(...step.write);
    maxBuffered = Math.max(maxBuffered, machine.buffered);
    assert.ok(machine.buffered <= Limits.MaxHandshakeBuffer, `buffered ${machine.buffered}`);
    const action = step.action;
    if (action.type === "need_more") continue;
    assert.equal(machine.buffered, 0, `still buffering after ${action.type}`);
    if (action.type === "request") {
      return {
        writes,
        action: { ...action, early: concat(action.early, ...chunks.slice(i + 1)) },
        maxBuffered,
      };
    }
    return { writes, action, maxBuffered, ...(step.reply !== undefined ? { reply: step.reply } : {}) };
  }
  return { writes, action: { type: "need_more" }, maxBuffered };
}

/** An action with bytes as hex, so deepEqual compares content across runtimes. */
type Shown =
  | Exclude<Action<RequestKind>, { type: "request" }>
  | { type: "request"; request: SocksRequest<RequestKind>; early: string };

function show(action: Action<RequestKind>): Shown {
  return action.type === "request" ? { ...action, early: toHex(action.early) } : action;
}

/** An answer step with its writes joined (its `reply` checked by {@linkcode checkReply}). */
function shownStep(step: Step<RequestKind>): { writes: string; action: Shown } {
  checkReply(step);
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
  /** The `reply` of the step that decided, when it wrote a request's reply. */
  reply?: number;
  /** The answer step, when an answer was given. */
  answer?: { writes: string; action: Shown };
  /** The `reply` of the answer step. */
  answerReply?: number;
  /** The largest buffer seen in any run. */
  maxBuffered: number;
  /** The machine of the whole-input run (after the answer, if any). */
  machine: Machine;
}

interface HandshakeOptions extends MachineOptions<RequestKind> {
  /** Answers a `request` action (the same way in every run). */
  answer?: (machine: Machine) => Step<RequestKind>;
}

const BOUND = { host: "127.0.0.1", port: 40000 };

/** One answer of every type, each through answer() and, where it has one, through its wrapper. */
const ANSWERS: ((m: Machine) => Step<RequestKind>)[] = [
  (m) => m.connected(BOUND),
  (m) => m.resolved("1.2.3.4"),
  (m) => m.resolvedName("web.test"),
  (m) => m.rejected(ReplyCode.GeneralFailure),
  (m) => m.answer({ type: "connected", bound: BOUND }),
  (m) => m.answer({ type: "bound", bound: BOUND }),
  (m) => m.answer({ type: "peer", peer: BOUND }),
  (m) => m.answer({ type: "associated", bound: BOUND }),
  (m) => m.answer({ type: "resolved", address: "1.2.3.4" }),
  (m) => m.answer({ type: "resolved_name", name: "web.test" }),
  (m) => m.answer({ type: "rejected", reply: ReplyCode.NotAllowed }),
];

/** For each kind of request, an answer that fits it, then a refusal. */
const FITTING: Record<RequestKind, ((m: Machine) => Step<RequestKind>)[]> = {
  connect: [(m) => m.connected(BOUND), (m) => m.rejected(ReplyCode.ConnectionRefused)],
  connect_dir: [(m) => m.connected(BOUND), (m) => m.rejected(ReplyCode.NotAllowed)],
  resolve: [(m) => m.resolved("1.2.3.4"), (m) => m.rejected(ReplyCode.HostUnreachable)],
  resolve_ptr: [(m) => m.resolvedName("web.test"), (m) => m.rejected(ReplyCode.HostUnreachable)],
  bind: [(m) => m.answer({ type: "bound", bound: BOUND }), (m) => m.rejected(ReplyCode.GeneralFailure)],
  udp_associate: [
    (m) => m.answer({ type: "associated", bound: BOUND }),
    (m) => m.rejected(ReplyCode.GeneralFailure),
  ],
};

/**
 * Feeds `input` whole and in every chunking, asserts all runs agree and stay
 * within the buffer limit, checks the post-handshake invariants, and returns
 * the whole-input outcome for the test's own byte-level assertions.
 */
function handshake(input: Uint8Array | string, options: HandshakeOptions = {}): Outcome {
  const bytes = typeof input === "string" ? hex(input) : input;
  const { answer, ...machineOptions } = options;
  const run = (chunks: Uint8Array[]) => {
    const machine: Machine = new SocksServerMachine(machineOptions);
    const fed = feedAll(machine, chunks);
    let answered: { writes: string; action: Shown } | undefined;
    let answerReply: number | undefined;
    if (answer && fed.action.type === "request") {
      const step = answer(machine);
      answered = shownStep(step);
      answerReply = step.reply;
    }
    return { machine, fed, answered, answerReply };
  };
  const whole = run([bytes.slice()]);
  const expected = {
    writes: toHex(concat(...whole.fed.writes)),
    action: show(whole.fed.action),
    reply: whole.fed.reply,
    answer: whole.answered,
    answerReply: whole.answerReply,
  };
  let maxBuffered = whole.fed.maxBuffered;
  const machines = [whole.machine];
  for (const { label, chunks } of chunkings(bytes)) {
    const r = run(chunks);
    assert.deepEqual(
      {
        writes: toHex(concat(...r.fed.writes)),
        action: show(r.fed.action),
        reply: r.fed.reply,
        answer: r.answered,
        answerReply: r.answerReply,
      },
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
    // Once a request is out (or the connection is closed / relaying), input is the driver's misuse.
    for (const m of machines.slice(-2)) {
      for (const more of [hex("05 01 00"), hex("00"), new Uint8Array(0)]) {
        assertMisuse(m, () => m.receive(more), /^unexpected input in state /);
      }
      assert.equal(m.buffered, 0);
    }
  }
  if (expected.action.type !== "request") {
    // No request pending: every answer throws, writes nothing and changes nothing.
    for (const answerWith of ANSWERS) {
      const m: Machine = new SocksServerMachine(machineOptions);
      feedAll(m, [bytes.slice()]);
      assertMisuse(m, () => answerWith(m));
    }
  }
  return {
    writes: expected.writes,
    writeList: whole.fed.writes.map(toHex),
    action: expected.action,
    ...(expected.reply !== undefined ? { reply: expected.reply } : {}),
    answer: expected.answer,
    ...(expected.answerReply !== undefined ? { answerReply: expected.answerReply } : {}),
    maxBuffered,
    machine: whole.machine,
  };
}

/** Asserts a `request` action with exactly this request and early data. */
function assertRequest(outcome: Outcome, request: SocksRequest<RequestKind>, early = "") {
  assert.deepEqual(outcome.action, { type: "request", request, early: wire(early) });
  assert.deepEqual(outcome.machine.request, request);
}

/** Asserts the handshake ended in close after writing exactly `writes` (and, when given, with `code`). */
function assertClosed(outcome: { writes: string; action: Shown }, writes: string, code?: CloseCode) {
  assert.equal(outcome.writes, wire(writes));
  assert.equal(outcome.action.type, "close");
  if (code !== undefined) assert.equal(outcome.action.type === "close" && outcome.action.code, code);
}

const S4_REJECTED = "00 5B 0000 00000000";
const S5_GENERAL_FAILURE = "05 01 00 01 00000000 0000";
const S5_COMMAND_NOT_SUPPORTED = "05 07 00 01 00000000 0000";
const S5_ATYP_NOT_SUPPORTED = "05 08 00 01 00000000 0000";
const GREETING = "05 01 00";

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
    for (const cmd of ["02", "03", "f1", "00", "04", "09", "f3", "ff"]) {
      assertClosed(handshake(`04 ${cmd} 0050 7f000001 00`), S4_REJECTED, "unsupported");
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

  it("RESOLVE over plain SOCKS4 of a private address is still a plain SOCKS4 target", () => {
    const r = handshake("04 f0 0000 0a000001 00");
    assertRequest(r, { version: 4, kind: "resolve", target: { host: "10.0.0.1", type: "ipv4", port: 0 } });
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

  it("the wanted method is found anywhere in the list", () => {
    const { authenticate } = credentials();
    assert.equal(handshake("05 03 80 02 00", { authenticate }).writes, wire("05 02"));
    assert.equal(handshake("05 03 80 02 00").writes, wire("05 00"));
    assert.equal(handshake("05 02 00 02").writes, wire("05 00"));
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

  it("rejected() sends codes outside 01-08 as general failure, and every failure code as itself", () => {
    const req = `${GREETING} 05 01 00 01 01020304 0050`;
    for (const code of [0, 9, 255, 256, 512, -256, NaN, 1.5]) {
      const r = handshake(req, { answer: (m) => m.rejected(code as ReplyCode) });
      assertClosed(r.answer!, S5_GENERAL_FAILURE, "answered");
      assert.equal(r.answerReply, ReplyCode.GeneralFailure, String(code));
    }
    for (const code of Object.values(ReplyCode).filter((c) => c !== 0)) {
      const r = handshake(req, { answer: (m) => m.rejected(code) });
      assertClosed(r.answer!, `05 ${code.toString(16).padStart(2, "0")} 00 01 00000000 0000`, "answered");
      assert.equal(r.answerReply, code);
    }
  });

  it("connected() with an IPv4-mapped bound address other than loopback: ATYP 01", () => {
    const r = handshake(`${GREETING} 05 01 00 01 01020304 0050`, {
      answer: (m) => m.connected({ host: "::ffff:10.1.2.3", port: 40000 }),
    });
    assert.deepEqual(r.answer, { writes: wire("05 00 00 01 0a010203 9c40"), action: { type: "relay" } });
    assert.equal(r.answerReply, 0);
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

  it("RESOLVE answered with text that is not an IP address: HostUnreachable, never a success", () => {
    const r = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.resolved("not-an-ip"),
    });
    assertClosed(r.answer!, "05 04 00 01 00000000 0000", "answered");
    assert.equal(r.answerReply, ReplyCode.HostUnreachable);
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

  it("RESOLVE_PTR of ::1 names the IPv6 loopback", () => {
    const r = handshake(`${GREETING} 05 f1 00 04 00000000000000000000000000000001 0000`);
    assertRequest(r, { version: 5, kind: "resolve_ptr", target: { host: "::1", type: "ipv6", port: 0 } });
  });

  it("RESOLVE_PTR answered with an unsendable name becomes HostUnreachable", () => {
    for (const name of ["", "a b", "caf\u00e9", "x".repeat(256)]) {
      const r = handshake(`${GREETING} 05 f1 00 01 c0000201 0000`, { answer: (m) => m.resolvedName(name) });
      assertClosed(r.answer!, "05 04 00 01 00000000 0000");
    }
  });

  it("RESOLVE_PTR of a domain name: 05 08 and close", () => {
    assertClosed(handshake(`${GREETING} 05 f1 00 03 08 'web.test' 0000`), `05 00 ${S5_ATYP_NOT_SUPPORTED}`);
    // Almost an address is still a name.
    for (
      const name of ["'1.2.3'", "'01.2.3.4'", "'1.2.3.4.'", "'2001:db8::1::2'", "'::1%lo'", "'256.0.0.1'"]
    ) {
      const length = hex(name).length.toString(16).padStart(2, "0");
      assertClosed(
        handshake(`${GREETING} 05 f1 00 03 ${length} ${name} 0000`),
        `05 00 ${S5_ATYP_NOT_SUPPORTED}`,
        "unsupported",
      );
    }
  });

  it("RESOLVE_PTR of an IP address sent as a name (ATYP 03) is that address, in canonical text", () => {
    const cases: [string, string, "ipv4" | "ipv6"][] = [
      ["09 '192.0.2.1'", "192.0.2.1", "ipv4"],
      ["0b '2001:db8::1'", "2001:db8::1", "ipv6"],
      ["14 '2001:DB8:0:0:0:0:0:1'", "2001:db8::1", "ipv6"],
      ["0d '[2001:db8::1]'", "2001:db8::1", "ipv6"],
      ["03 '::1'", "::1", "ipv6"],
    ];
    for (const [name, host, type] of cases) {
      const r = handshake(`${GREETING} 05 f1 00 03 ${name} 0000`, {
        answer: (m) => m.resolvedName("web.test"),
      });
      assertRequest(r, { version: 5, kind: "resolve_ptr", target: { host, type, port: 0 } });
      assertClosed(r.answer!, "05 00 00 03 08 'web.test' 0000", "answered");
    }
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

  it("an unknown address type is refused as soon as it is seen, without waiting for more", () => {
    assertClosed(handshake(`${GREETING} 05 01 00 02`), `05 00 ${S5_ATYP_NOT_SUPPORTED}`, "protocol_error");
    assertClosed(handshake(`${GREETING} 05 01 00 05 010203`), `05 00 ${S5_ATYP_NOT_SUPPORTED}`);
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
// Port 0
// ---------------------------------------------------------------------------

describe("a tunnel to port 0", () => {
  // Tor's SocksPort: connection_edge.c refuses it with END_STREAM_REASON_TORPROTOCOL, which reasons.c
  // sends as SOCKS5 general failure (0x01); SOCKS4 gets 0x5B. Before any dial, so every runtime agrees.
  const REASON = "connect to port 0 refused";

  it("SOCKS5 CONNECT and CONNECT_DIR to port 0: 05 01 and close, before any dial", () => {
    for (
      const request of [
        "05 01 00 01 c0000201 0000",
        "05 01 00 04 20010db8000000000000000000000001 0000",
        "05 01 00 03 0b 'example.com' 0000",
        "05 f2 00 01 c0000201 0000",
        "05 f2 00 03 08 'dir.test' 0000",
      ]
    ) {
      const r = handshake(`${GREETING} ${request} 'early'`);
      assertClosed(r, `05 00 ${S5_GENERAL_FAILURE}`, "protocol_error");
      assert.deepEqual(r.action, { type: "close", code: "protocol_error", reason: REASON }, request);
      assert.equal(r.reply, ReplyCode.GeneralFailure);
    }
  });

  it("SOCKS4 and 4A CONNECT and CONNECT_DIR to port 0: 5B and close", () => {
    for (
      const request of [
        "04 01 0000 c0000201 00",
        "04 01 0000 00000001 00 'a.test' 00",
        "04 f2 0000 c0000201 'u' 00",
      ]
    ) {
      const r = handshake(request);
      assertClosed(r, S4_REJECTED, "protocol_error");
      assert.deepEqual(r.action, { type: "close", code: "protocol_error", reason: REASON }, request);
      assert.equal(r.reply, 0x5b);
    }
  });

  it("port 1 is a request; RESOLVE, BIND and UDP ASSOCIATE may name port 0", () => {
    assertRequest(handshake(`${GREETING} 05 01 00 01 c0000201 0001`), {
      version: 5,
      kind: "connect",
      target: { host: "192.0.2.1", type: "ipv4", port: 1 },
    });
    const every: RequestKind[] = ["connect", "resolve", "bind", "udp_associate"];
    for (const cmd of ["f0", "02", "03"]) {
      assert.equal(
        handshake(`${GREETING} 05 ${cmd} 00 01 c0000201 0000`, { commands: every }).action.type,
        "request",
      );
    }
    assert.equal(handshake("04 02 0000 c0000201 00", { commands: every }).action.type, "request");
  });

  it("an unserved command or a refused SOCKS4 is refused for that first", () => {
    assertClosed(
      handshake(`${GREETING} 05 02 00 01 c0000201 0000`),
      `05 00 ${S5_COMMAND_NOT_SUPPORTED}`,
      "unsupported",
    );
    const { authenticate } = credentials();
    assertClosed(handshake("04 01 0000 c0000201 00", { authenticate }), S4_REJECTED, "auth_unavailable");
  });
});

// ---------------------------------------------------------------------------
// Commands: BIND and UDP ASSOCIATE when listed
// ---------------------------------------------------------------------------

describe("commands", () => {
  const EVERY: RequestKind[] = ["connect", "connect_dir", "resolve", "resolve_ptr", "bind", "udp_associate"];
  const PEER = { host: "192.0.2.7", port: 5000 };

  it("by default BIND and UDP ASSOCIATE get exactly the old refusals: 05 07, and 5B on SOCKS4", () => {
    for (const cmd of ["02", "03"]) {
      const r = handshake(`${GREETING} 05 ${cmd} 00 01 7f000001 0050`);
      assertClosed(r, `05 00 ${S5_COMMAND_NOT_SUPPORTED}`, "unsupported");
      assert.equal(
        r.action.type === "close" && r.action.reason,
        `unsupported command 0x${Number(`0x${cmd}`)}`,
      );
      assert.equal(r.reply, ReplyCode.CommandNotSupported);
    }
    const s4 = handshake("04 02 0050 7f000001 00");
    assertClosed(s4, S4_REJECTED, "unsupported");
    assert.equal(s4.action.type === "close" && s4.action.reason, "unsupported SOCKS4 command 0x2");
  });

  it("a kind left out of `commands` is refused as not supported", () => {
    const commands: RequestKind[] = ["connect"];
    assertClosed(
      handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, { commands }),
      `05 00 ${S5_COMMAND_NOT_SUPPORTED}`,
    );
    assertClosed(
      handshake(`${GREETING} 05 f2 00 01 c0000201 2329`, { commands }),
      `05 00 ${S5_COMMAND_NOT_SUPPORTED}`,
    );
    assertClosed(handshake("04 f0 0000 00000001 00 'web.test' 00", { commands }), S4_REJECTED, "unsupported");
    assert.equal(handshake(`${GREETING} 05 01 00 01 c0000201 0050`, { commands }).action.type, "request");
  });

  it("an unknown kind in `commands` is the driver's misuse: TypeError", () => {
    assert.throws(
      () => new SocksServerMachine({ commands: ["connect", "listen" as RequestKind] }),
      TypeError,
    );
  });

  it("SOCKS5 BIND: the first reply names the listening socket, then wait; the second names the peer, then relay", () => {
    const r = handshake(`${GREETING} 05 02 00 01 c0000207 1388 'early'`, {
      commands: EVERY,
      answer: (m) => m.answer({ type: "bound", bound: { host: "198.51.100.1", port: 40001 } }),
    });
    assertRequest(
      r,
      { version: 5, kind: "bind", target: { host: "192.0.2.7", type: "ipv4", port: 5000 } },
      "'early'",
    );
    assert.deepEqual(r.answer, { writes: wire("05 00 00 01 c6336401 9c41"), action: { type: "wait" } });
    assert.equal(r.answerReply, 0);
    assertMisuse(r.machine, () => r.machine.receive(hex("'x'")), /state bind_waiting/);
    assertMisuse(r.machine, () => r.machine.answer({ type: "bound", bound: BOUND }));
    assertMisuse(r.machine, () => r.machine.connected(BOUND));
    const second = r.machine.answer({ type: "peer", peer: PEER });
    assert.deepEqual(shownStep(second), {
      writes: wire("05 00 00 01 c0000207 1388"),
      action: { type: "relay" },
    });
    assert.equal(second.reply, 0);
    assert.equal(r.machine.state, "relaying");
  });

  it("SOCKS5 BIND: an IPv6 peer is ATYP 04; no peer in time is a refusal in the second reply", () => {
    const bind = `${GREETING} 05 02 00 04 20010db8000000000000000000000007 1388`;
    const v6 = handshake(bind, { commands: EVERY, answer: (m) => m.answer({ type: "bound", bound: BOUND }) });
    assertRequest(v6, {
      version: 5,
      kind: "bind",
      target: { host: "2001:db8::7", type: "ipv6", port: 5000 },
    });
    assert.deepEqual(
      shownStep(v6.machine.answer({ type: "peer", peer: { host: "2001:db8::7", port: 5000 } })),
      {
        writes: wire("05 00 00 04 20010db8000000000000000000000007 1388"),
        action: { type: "relay" },
      },
    );
    const late = handshake(bind, {
      commands: EVERY,
      answer: (m) => m.answer({ type: "bound", bound: BOUND }),
    });
    const step = late.machine.rejected(ReplyCode.TtlExpired);
    assertClosed(shownStep(step), "05 06 00 01 00000000 0000", "answered");
    assert.equal(step.reply, ReplyCode.TtlExpired);
    const refused = handshake(bind, { commands: EVERY, answer: (m) => m.rejected(ReplyCode.NotAllowed) });
    assertClosed(refused.answer!, "05 02 00 01 00000000 0000", "answered");
  });

  it("SOCKS4 BIND: two 00 5A replies carrying port and IPv4 (0.0.0.0 for what SOCKS4 cannot carry)", () => {
    const r = handshake("04 02 1388 c0000207 'bob' 00", {
      commands: ["bind"],
      answer: (m) => m.answer({ type: "bound", bound: { host: "198.51.100.1", port: 40001 } }),
    });
    assertRequest(r, {
      version: 4,
      kind: "bind",
      target: { host: "192.0.2.7", type: "ipv4", port: 5000 },
      user: "bob",
    });
    assert.deepEqual(r.answer, { writes: wire("00 5A 9c41 c6336401"), action: { type: "wait" } });
    assert.equal(r.answerReply, 0x5a);
    const second = r.machine.answer({ type: "peer", peer: { host: "2001:db8::7", port: 5000 } });
    assert.deepEqual(shownStep(second), { writes: wire("00 5A 1388 00000000"), action: { type: "relay" } });
    assert.equal(second.reply, 0x5a);
    const refused = handshake("04 02 1388 c0000207 00", {
      commands: ["bind"],
      answer: (m) => m.answer({ type: "bound", bound: BOUND }),
    });
    assertClosed(shownStep(refused.machine.rejected(ReplyCode.HostUnreachable)), S4_REJECTED, "answered");
  });

  it("UDP ASSOCIATE: one reply with the relay's address, then hold; SOCKS4 has no UDP", () => {
    const r = handshake(`${GREETING} 05 03 00 01 00000000 0000`, {
      commands: EVERY,
      answer: (m) => m.answer({ type: "associated", bound: BOUND }),
    });
    assertRequest(r, {
      version: 5,
      kind: "udp_associate",
      target: { host: "0.0.0.0", type: "ipv4", port: 0 },
    });
    assert.deepEqual(r.answer, { writes: wire("05 00 00 01 7f000001 9c40"), action: { type: "hold" } });
    assert.equal(r.answerReply, 0);
    assert.equal(r.machine.state, "holding");
    assertMisuse(r.machine, () => r.machine.receive(hex("00")), /state holding/);
    const v6 = handshake(`${GREETING} 05 03 00 03 04 'host' 1f90`, {
      commands: ["udp_associate"],
      answer: (m) => m.answer({ type: "associated", bound: { host: "2001:db8::1", port: 40000 } }),
    });
    assertRequest(v6, {
      version: 5,
      kind: "udp_associate",
      target: { host: "host", type: "domain", port: 8080 },
    });
    assert.deepEqual(v6.answer, {
      writes: wire("05 00 00 04 20010db8000000000000000000000001 9c40"),
      action: { type: "hold" },
    });
    const refused = handshake(`${GREETING} 05 03 00 01 00000000 0000`, {
      commands: EVERY,
      answer: (m) => m.rejected(ReplyCode.CommandNotSupported),
    });
    assertClosed(refused.answer!, S5_COMMAND_NOT_SUPPORTED, "answered");
    assertClosed(handshake("04 03 0000 00000000 00", { commands: EVERY }), S4_REJECTED, "unsupported");
    assertClosed(handshake("04 f1 0000 01020304 00", { commands: EVERY }), S4_REJECTED, "unsupported");
  });
});

// ---------------------------------------------------------------------------
// What the machine decides on its own: the reply byte and the close code
// ---------------------------------------------------------------------------

describe("refusals by the machine", () => {
  it("carry the reply byte written and a close code, with the reason in words", () => {
    const cases: [string, HandshakeOptions, number | undefined, CloseCode, string][] = [
      [`${GREETING} 05 02 00 01 7f000001 0050`, {}, 0x07, "unsupported", "unsupported command 0x2"],
      [`${GREETING} 05 01 00 02`, {}, 0x08, "protocol_error", "bad address type 0x2"],
      [`${GREETING} 05 01 00 03 00 0050`, {}, 0x01, "protocol_error", "malformed domain name"],
      [`${GREETING} 04 01 00 01 7f000001 0050`, {}, 0x01, "protocol_error", "bad request version"],
      [
        `${GREETING} 05 f1 00 03 08 'web.test' 0000`,
        {},
        0x08,
        "unsupported",
        "RESOLVE_PTR needs an IP address",
      ],
      [
        "04 01 0050 7f000001 00",
        { allowSocks4: false },
        0x5b,
        "auth_unavailable",
        "SOCKS4 refused: authentication is required",
      ],
      ["04 01 0050 00000001 00 'a b' 00", {}, 0x5b, "protocol_error", "malformed SOCKS4A host name"],
      [`04 01 0050 7f000001 ${repeat(0x61, 256)}`, {}, 0x5b, "protocol_error", "SOCKS4 user id too long"],
      [
        `04 01 0050 00000001 00 ${repeat(0x68, 256)}`,
        {},
        0x5b,
        "protocol_error",
        "SOCKS4A host name too long",
      ],
      ["04 09 0050 7f000001 00", {}, 0x5b, "unsupported", "unsupported SOCKS4 command 0x9"],
      // No request was read: no request reply, so no `reply`.
      ["05 01 02", {}, undefined, "auth_unavailable", "client did not offer no-auth"],
      [
        "05 01 00",
        { authenticate: credentials().authenticate },
        undefined,
        "auth_unavailable",
        "client did not offer username/password",
      ],
      ["05 01 02 01 05 'alice' 05 'wrong'", credentials(), undefined, "auth_failed", "authentication failed"],
      ["05 01 02 02 05 'alice' 06 'secret'", credentials(), undefined, "protocol_error", "bad auth version"],
      ["'GET / HTTP/1.0' 0d0a 0d0a", {}, undefined, "http_request", "HTTP request on SOCKS port"],
      ["16 0301", {}, undefined, "protocol_error", "unknown protocol version 0x16"],
    ];
    for (const [input, options, reply, code, reason] of cases) {
      const r = handshake(input, options);
      // A failed login names the user that was tried (never the password).
      const user = code === "auth_failed" ? { user: "alice" } : {};
      assert.deepEqual(r.action, { type: "close", code, reason, ...user }, input);
      assert.equal(r.reply, reply, `reply of ${input}`);
    }
  });

  it("answers carry the reply byte written: 00 / 5A granted, the code refused, 04 for no usable answer", () => {
    const cases: [string, (m: Machine) => Step<RequestKind>, number, CloseCode | undefined][] = [
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.connected(BOUND), 0x00, undefined],
      ["04 01 0050 7f000001 00", (m) => m.connected(BOUND), 0x5a, undefined],
      ["04 01 0050 7f000001 00", (m) => m.rejected(ReplyCode.ConnectionRefused), 0x5b, "answered"],
      [
        `${GREETING} 05 01 00 01 7f000001 0050`,
        (m) => m.rejected(ReplyCode.ConnectionRefused),
        0x05,
        "answered",
      ],
      [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, (m) => m.resolved("2001:db8::1"), 0x00, "answered"],
      ["04 f0 0000 00000001 00 'web.test' 00", (m) => m.resolved("1.2.3.4"), 0x5a, "answered"],
      ["04 f0 0000 00000001 00 'web.test' 00", (m) => m.resolved("2001:db8::1"), 0x5b, "answered"],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.resolvedName("web.test"), 0x00, "answered"],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.resolvedName("a b"), 0x04, "answered"],
    ];
    for (const [input, answer, reply, code] of cases) {
      const r = handshake(input, { answer });
      assert.equal(r.answerReply, reply, input);
      assert.equal(r.answer!.action.type === "close" ? r.answer!.action.code : undefined, code, input);
    }
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

  it("the page's body is an HTML document right after the header", () => {
    assert.match(page, /^HTTP\/1\.0 501 [^\r]*\r\n(.+\r\n)*\r\n<!DOCTYPE html>/);
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
  it("receive() while a request is pending throws, and the request can still be answered", () => {
    const m: Machine = new SocksServerMachine();
    assert.equal(m.receive(hex(`${GREETING} 05 01 00 01 7f000001 0050`)).action.type, "request");
    assertMisuse(m, () => m.receive(hex("'more'")), /^unexpected input in state connect_pending$/);
    assert.deepEqual(shownStep(m.connected(BOUND)), {
      writes: wire("05 00 00 01 7f000001 9c40"),
      action: { type: "relay" },
    });
  });

  it("receive() while relaying or after close throws, with nothing written", () => {
    const relaying: Machine = new SocksServerMachine();
    relaying.receive(hex(`${GREETING} 05 01 00 01 7f000001 0050`));
    assert.equal(relaying.connected(BOUND).action.type, "relay");
    assertMisuse(relaying, () => relaying.receive(hex("'data'")), /^unexpected input in state relaying$/);
    const closed: Machine = new SocksServerMachine();
    assert.equal(closed.receive(hex("05 00")).action.type, "close");
    assertMisuse(closed, () => closed.receive(hex(GREETING)), /^unexpected input in state closed$/);
    const done: Machine = new SocksServerMachine();
    done.receive(hex("07"));
    assert.throws(() => done.receive(hex("05 01 00")), {
      name: "TypeError",
      message: "unexpected input in state closed",
    });
  });

  it("answers before any request throw, and the handshake goes on", () => {
    for (const answerWith of ANSWERS) {
      const m: Machine = new SocksServerMachine();
      assertMisuse(m, () => answerWith(m));
      assert.deepEqual(shownStep(m.receive(hex(GREETING))), {
        writes: wire("05 00"),
        action: { type: "need_more" },
      });
    }
    const midway: Machine = new SocksServerMachine();
    assert.equal(midway.receive(hex(GREETING)).action.type, "need_more");
    assertMisuse(midway, () => midway.connected(BOUND), /^connected\(\) without a pending tunnel request/);
  });

  it("an answer that does not fit the request throws, and the right one still works", () => {
    const cases: [string, (m: Machine) => Step<RequestKind>][] = [
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.resolved("1.2.3.4")],
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.resolvedName("web.test")],
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.answer({ type: "bound", bound: BOUND })],
      [`${GREETING} 05 01 00 01 7f000001 0050`, (m) => m.answer({ type: "associated", bound: BOUND })],
      [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, (m) => m.connected(BOUND)],
      [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, (m) => m.resolvedName("web.test")],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.resolved("1.2.3.4")],
      [`${GREETING} 05 f1 00 01 c0000201 0000`, (m) => m.connected(BOUND)],
      ["04 f0 0000 00000001 00 'web.test' 00", (m) => m.connected(BOUND)],
      ["04 01 0050 7f000001 00", (m) => m.resolved("1.2.3.4")],
      ["04 01 0050 7f000001 00", (m) => m.answer({ type: "peer", peer: BOUND })],
    ];
    for (const [input, wrong] of cases) {
      const r = handshake(input);
      assert.equal(r.action.type, "request", input);
      assertMisuse(r.machine, () => wrong(r.machine));
      assert.notEqual(r.machine.rejected(ReplyCode.NotAllowed).write.length, 0, input);
    }
  });

  it("a second answer throws", () => {
    const r = handshake(`${GREETING} 05 01 00 01 7f000001 0050`, { answer: (m) => m.connected(BOUND) });
    assert.equal(r.answer!.action.type, "relay");
    for (const again of ANSWERS) assertMisuse(r.machine, () => again(r.machine));
    const resolved = handshake(`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {
      answer: (m) => m.resolved("1.2.3.4"),
    });
    assertMisuse(resolved.machine, () => resolved.machine.rejected(ReplyCode.GeneralFailure));
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

  const corpus: [string, MachineOptions<RequestKind>][] = [
    [`${GREETING} 05 01 00 01 7f000001 0050 'x'`, {}],
    [`${GREETING} 05 01 00 04 20010db8000000000000000000000001 01bb`, {}],
    [`${GREETING} 05 f0 00 03 08 'web.test' 0000`, {}],
    [`${GREETING} 05 f1 00 01 c0000201 0000`, {}],
    ["05 01 02 01 05 'alice' 06 'secret' 05 01 00 03 0b 'example.com' 0050", credentials()],
    ["04 01 0050 7f000001 'alice' 00", {}],
    ["04 f0 0000 00000001 'u' 00 'web.test' 00 'early'", {}],
    ["'GET / HTTP/1.0' 0d0a", {}],
    [`${GREETING} 05 02 00 01 7f000001 0050`, { commands: ["connect", "bind", "udp_associate"] }],
    [`${GREETING} 05 03 00 04 ${repeat(0, 16)} 0000`, { commands: ["udp_associate"] }],
    ["04 02 0050 7f000001 'u' 00", { commands: ["bind"] }],
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
      const pick = next(2);
      const r = handshake(input, { ...options, answer: (m) => FITTING[m.request!.kind][pick](m) });
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
