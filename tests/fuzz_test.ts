/**
 * Property-based fuzzing of the sans-IO state machine with fast-check.
 *
 * Every conversation is fed twice, whole and in a random chunking, and both
 * must give the same writes and the same outcome. Along the way: receive()
 * never throws on a client's bytes, never buffers more than
 * {@linkcode Limits.MaxHandshakeBuffer} bytes, writes only messages the
 * protocol knows, in an order the protocol allows, and sets `reply` exactly
 * when it writes a request's reply; a wrong RFC 1929 credential never yields
 * a request; the answer methods give exactly one well-formed, correct reply
 * to any valid request; and every call after the machine has decided (input,
 * or an answer that does not fit) is the driver's misuse: a TypeError that
 * changes nothing.
 *
 * By default about 120,000 cases run with a fixed seed (fast-check prints the
 * seed and path of a failure, and a shrunk counterexample). Longer runs:
 *
 *   EDGESOCKS_FUZZ_RUNS=2000000 node_modules/.bin/node --test tests/fuzz_test.ts
 *   EDGESOCKS_FUZZ_SEED=12345 ...   # another seed
 *
 * EDGESOCKS_FUZZ_RUNS is the total across all properties.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import {
  type Action,
  type MachineOptions,
  type SocksRequest,
  SocksServerMachine,
  type Step,
} from "../lib/core/socks_server.ts";
import { REQUEST_KINDS, type RequestKind } from "../lib/core/request.ts";
import { HTTP_RESISTANCE_RESPONSE } from "../lib/core/replies.ts";
import { Limits, ReplyCode } from "../lib/core/wire.ts";
import { concat, toHex } from "./_hex.ts";

// ---------------------------------------------------------------- run size

function envInteger(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  // A typo must not silently fall back to the default run.
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`${name} must be a positive integer, got ${text}`);
  }
  return n;
}

const DEFAULT_TOTAL_RUNS = 120_000;
const TOTAL_RUNS = envInteger("EDGESOCKS_FUZZ_RUNS") ?? DEFAULT_TOTAL_RUNS;
const SEED = envInteger("EDGESOCKS_FUZZ_SEED") ?? 0x50c55;
/** Share of the total per property. */
const SHARE = { raw: 0.25, shaped: 0.25, auth: 0.25, answers: 0.25 } as const;
const runsOf = (share: number) => Math.max(1, Math.round(TOTAL_RUNS * share));
/** Generous per-test timeout (Bun's default is 5 s), scaled with the run size. */
const TIMEOUT = Math.ceil(Math.max(1, TOTAL_RUNS / DEFAULT_TOTAL_RUNS)) * 180_000;
/** Coverage of the generators is only asserted when enough cases run to make a miss a real regression. */
const CHECK_COVERAGE = TOTAL_RUNS >= DEFAULT_TOTAL_RUNS / 4;

/**
 * Shrinking a failure of a 1200-byte input can take many minutes. Once a
 * failure has been shrunk for this long, every further candidate is passed
 * without a run, so fast-check stops and reports the smallest failure found.
 */
const SHRINK_BUDGET_MS = 10_000;

/** Runs `predicate` over `runs` values of `arb` with a fixed seed; fast-check prints seed, path and a shrunk counterexample on failure. */
function check<T>(arb: fc.Arbitrary<T>, runs: number, seedOffset: number, predicate: (value: T) => void) {
  let failedAt: number | undefined;
  const budgeted = (value: T) => {
    if (failedAt !== undefined && Date.now() - failedAt > SHRINK_BUDGET_MS) return;
    try {
      predicate(value);
    } catch (error) {
      failedAt ??= Date.now();
      throw error;
    }
  };
  fc.assert(fc.property(arb, budgeted), { numRuns: runs, seed: SEED + seedOffset });
}

/** Runs `body`; when it fails, prefixes the message with `context()`, computed only then (hex of 1200 bytes costs). */
function withContext(context: () => string, body: () => void) {
  try {
    body();
  } catch (error) {
    throw new Error(`${context()}\n${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
}

// ---------------------------------------------------------------- bytes

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const latin1 = (bytes: Uint8Array) => String.fromCharCode(...bytes);

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------- machine options

/**
 * "open": no options. "no_socks4": SOCKS4 refused. "auth": RFC 1929 required
 * (SOCKS4 then refused by default). "auth_socks4": RFC 1929 plus SOCKS4 allowed.
 * "every_command": no auth, and BIND and UDP ASSOCIATE handed out too.
 */
type Mode = "open" | "no_socks4" | "auth" | "auth_socks4" | "every_command";
const MODES: readonly Mode[] = ["open", "no_socks4", "auth", "auth_socks4", "every_command"];
const EVERY_COMMAND: readonly RequestKind[] = REQUEST_KINDS;

/** A machine of any commands. */
type Machine = SocksServerMachine<RequestKind>;
const USER = "alice";
const PASSWORD = "secret";

/** Options for `mode`; the authenticator records every verdict it gives in `calls`. */
function optionsFor(mode: Mode, calls: boolean[]): MachineOptions<RequestKind> {
  const authenticate = (user: Uint8Array, password: Uint8Array) => {
    // The machine never asks about an empty field: RFC 1929 fields are 1-255 bytes.
    assert.ok(user.length > 0 && password.length > 0, "authenticate() called with an empty field");
    const ok = latin1(user) === USER && latin1(password) === PASSWORD;
    calls.push(ok);
    return ok;
  };
  switch (mode) {
    case "open":
      return {};
    case "no_socks4":
      return { allowSocks4: false };
    case "auth":
      return { authenticate };
    case "auth_socks4":
      return { authenticate, allowSocks4: true };
    case "every_command":
      return { commands: EVERY_COMMAND };
  }
}

const requiresAuth = (mode: Mode) => mode === "auth" || mode === "auth_socks4";
const servesSocks4 = (mode: Mode) => mode === "open" || mode === "auth_socks4" || mode === "every_command";

// ---------------------------------------------------------------- what receive() may write

const SOCKS4_REJECT = "00 5b 00 00 00 00 00 00";

/**
 * Names a message written by receive(), or fails: method selection 05 00/02/FF,
 * auth status 01 00/01 01, a SOCKS5 failure reply (REP 01-08, ATYP 1, zero
 * address and port), the SOCKS4 rejection, or the HTTP 501 page.
 */
function token(write: Uint8Array): string {
  if (sameBytes(write, HTTP_RESISTANCE_RESPONSE)) return "http";
  const h = toHex(write);
  switch (h) {
    case "05 00":
      return "sel00";
    case "05 02":
      return "sel02";
    case "05 ff":
      return "selff";
    case "01 00":
      return "auth_ok";
    case "01 01":
      return "auth_fail";
    case SOCKS4_REJECT:
      return "s4reject";
  }
  const failure = /^05 (0[1-8]) 00 01 00 00 00 00 00 00$/.exec(h);
  if (failure) return `s5fail${failure[1]}`;
  assert.fail(`receive() wrote a message the protocol does not know: ${h}`);
}

/** The whole sequence of messages one conversation may write, by mode. */
const GRAMMAR_OPEN = /^(|http|s4reject|selff|sel00(,s5fail0[1-8])?)$/;
const GRAMMAR_AUTH = /^(|http|s4reject|selff|sel02(,auth_fail|,auth_ok(,s5fail0[1-8])?)?)$/;
/** Messages after which the machine must close. */
const TERMINAL = /^(http|s4reject|selff|auth_fail|s5fail0[1-8])$/;

// ---------------------------------------------------------------- the driver model

interface Outcome {
  /** Hex of each message written, in order. */
  writes: string[];
  /** The messages named by {@linkcode token}, comma-separated. */
  sentence: string;
  /** The first action other than need_more (or the last need_more); after a request, `early` includes every byte not fed. */
  action: Action<RequestKind>;
}

/**
 * Fails unless `step.reply` is set exactly when the step wrote a request's
 * reply (a SOCKS5 failure or the SOCKS4 rejection, for receive()), and is the
 * REP / CD byte written.
 */
function checkStepReply(step: Step<RequestKind>) {
  const replies = step.write.filter((w) => /^(s5fail|s4reject)/.test(token(w)));
  assert.ok(replies.length <= 1, "two request replies in one step");
  assert.equal(step.reply, replies[0]?.[1], `reply ${step.reply} after ${step.write.map(toHex)}`);
}

/** Asserts that `call` is misuse: a TypeError, and the machine as it was. */
function assertMisuse(machine: Machine, call: () => unknown, what: string) {
  const before = { state: machine.state, buffered: machine.buffered, request: machine.request };
  assert.throws(call, TypeError, what);
  assert.deepEqual(
    { state: machine.state, buffered: machine.buffered, request: machine.request },
    before,
    what,
  );
}

/**
 * Feeds `chunks` as the per-connection driver does: stop at the first action
 * other than need_more; after a request, the chunks not fed yet are what the
 * relay reads next, so they are appended to `early`. Checks the invariants of
 * every step and of the conversation, and that the machine stays closed.
 *
 * With `scribble`, each chunk is a private copy overwritten right after
 * receive() returns, as a runtime reusing its read buffer would: the outcome
 * must not change, so the machine keeps (and returns) no view of it.
 */
function converse(input: Uint8Array, chunks: Uint8Array[], mode: Mode, scribble: boolean): Outcome {
  const calls: boolean[] = [];
  const machine: Machine = new SocksServerMachine(optionsFor(mode, calls));
  const writes: Uint8Array[] = [];
  let action: Action<RequestKind> = { type: "need_more" };
  for (let i = 0; i < chunks.length; i++) {
    const chunk = scribble ? chunks[i].slice() : chunks[i];
    const step = machine.receive(chunk);
    checkStepReply(step);
    if (scribble) chunk.fill(0xee);
    assert.ok(
      machine.buffered <= Limits.MaxHandshakeBuffer,
      `buffered ${machine.buffered} > ${Limits.MaxHandshakeBuffer}`,
    );
    assert.ok(Array.isArray(step.write) && step.write.every((w) => w instanceof Uint8Array));
    writes.push(...step.write);
    action = step.action;
    if (action.type === "request") {
      action = { ...action, early: concat(action.early, ...chunks.slice(i + 1)) };
    }
    if (action.type !== "need_more") {
      assert.equal(machine.buffered, 0, `still buffering after ${action.type}`);
      break;
    }
  }

  // The conversation as a sentence of the protocol.
  const tokens = writes.map(token);
  const sentence = tokens.join(",");
  assert.match(
    sentence,
    requiresAuth(mode) ? GRAMMAR_AUTH : GRAMMAR_OPEN,
    `writes out of order: ${sentence}`,
  );
  const last = tokens.at(-1) ?? "";
  if (TERMINAL.test(last)) assert.equal(action.type, "close", `${action.type} after ${last}`);
  if (action.type === "close" && tokens.length === 0) {
    // Only an unknown protocol version closes without a word.
    assert.ok(![0x04, 0x05].includes(input[0]), `silent close of a SOCKS${input[0]} conversation`);
  }
  if (action.type === "close" && tokens.length > 0) {
    assert.ok(TERMINAL.test(last), `close after ${sentence} without a final reply`);
  }

  // RFC 1929: the status written is the authenticator's verdict, asked at most once.
  assert.ok(calls.length <= 1, `authenticate() called ${calls.length} times`);
  assert.equal(tokens.includes("auth_ok"), calls[0] === true, `auth status ${sentence} vs verdict ${calls}`);

  if (action.type === "request") {
    const { request } = action;
    checkRequestInvariants(request, mode);
    if (request.version === 4) {
      assert.equal(sentence, "", "a SOCKS4 request after SOCKS5 messages");
      assert.ok(servesSocks4(mode), `SOCKS4 request served in mode ${mode}`);
    } else if (requiresAuth(mode)) {
      // The heart of it: no request without the right credential.
      assert.equal(sentence, "sel02,auth_ok");
      assert.deepEqual(calls, [true]);
      assert.equal(request.user, USER);
    } else {
      assert.equal(sentence, "sel00");
      assert.equal(request.user, undefined);
    }
  }

  // Once the machine has decided, more input is the driver's misuse: it throws, writes nothing, changes nothing.
  if (action.type !== "need_more") {
    for (const more of [input.subarray(0, 9), new Uint8Array(0), Uint8Array.of(5, 1, 0)]) {
      assertMisuse(machine, () => machine.receive(more), "input after the handshake ended");
      assert.equal(machine.buffered, 0);
    }
  }
  // With no request pending, no answer may be written: each one throws.
  if (action.type !== "request") {
    for (const late of ANSWER_ALL) assertMisuse(machine, () => late(machine), "an answer without a request");
  }
  return { writes: writes.map(toHex), sentence, action };
}

/** One answer of every type. */
const ANSWER_ALL: ((machine: Machine) => Step<RequestKind>)[] = [
  (m) => m.connected({ host: "127.0.0.1", port: 1 }),
  (m) => m.resolved("1.2.3.4"),
  (m) => m.resolvedName("x.test"),
  (m) => m.rejected(ReplyCode.GeneralFailure),
  (m) => m.answer({ type: "bound", bound: { host: "127.0.0.1", port: 1 } }),
  (m) => m.answer({ type: "peer", peer: { host: "127.0.0.1", port: 1 } }),
  (m) => m.answer({ type: "associated", bound: { host: "127.0.0.1", port: 1 } }),
];

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function checkRequestInvariants(request: SocksRequest<RequestKind>, mode: Mode) {
  const { version, kind, target } = request;
  assert.ok(version === 4 || version === 5);
  const served = mode === "every_command"
    ? EVERY_COMMAND
    : ["connect", "connect_dir", "resolve", "resolve_ptr"];
  assert.ok(served.includes(kind), kind);
  if (kind === "udp_associate") assert.equal(version, 5, "UDP ASSOCIATE over SOCKS4");
  if (kind === "connect" || kind === "connect_dir") assert.notEqual(target.port, 0, "a tunnel to port 0");
  assert.ok(
    Number.isInteger(target.port) && target.port >= 0 && target.port <= 0xffff,
    `port ${target.port}`,
  );
  if (target.type === "ipv4") assert.match(target.host, DOTTED_QUAD);
  else if (target.type === "ipv6") {
    const bytes = ipv6Bytes(target.host);
    assert.ok(bytes, `not IPv6: ${target.host}`);
    assert.equal(target.host, canonicalIPv6(bytes), "IPv6 target not in RFC 5952 form");
  } else {
    assert.equal(target.type, "domain");
    assert.match(target.host, /^[\x21-\x7e]{1,255}$/, "a domain name out of range");
  }
  if (kind === "resolve_ptr") {
    assert.equal(version, 5, "RESOLVE_PTR over SOCKS4");
    assert.notEqual(target.type, "domain", "RESOLVE_PTR of a name");
  }
  if (request.user !== undefined) assert.ok(request.user.length > 0);
}

/** Splits `bytes` at `cuts` (taken modulo length + 1, so empty chunks happen too), or byte by byte. */
function split(bytes: Uint8Array, cuts: number[] | "bytes"): Uint8Array[] {
  if (cuts === "bytes") return Array.from(bytes, (b) => Uint8Array.of(b));
  const at = cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const to of [...at, bytes.length]) {
    chunks.push(bytes.subarray(from, to));
    from = to;
  }
  return chunks;
}

/** Properties 1-4 for one input: fed whole and chunked, both must pass every check and agree. Returns a label of the outcome. */
function conversationAgrees(input: Uint8Array, cuts: number[] | "bytes", mode: Mode): string {
  const chunks = split(input, cuts);
  let label = "";
  withContext(() => `mode ${mode}, chunks of ${chunks.map((c) => c.length)}, input ${toHex(input)}`, () => {
    const whole = converse(input, [input], mode, false);
    const chunked = converse(input, chunks, mode, true);
    assert.deepEqual(chunked, whole, "chunking changed the outcome");
    const { action } = whole;
    label = `${whole.sentence}|${action.type}${action.type === "request" ? action.request.version : ""}`;
  });
  return label;
}

// ---------------------------------------------------------------- IP oracle (independent of lib/core)

const H16 = "[0-9a-fA-F]{1,4}";
const DEC_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const LS32 = `(${H16}:${H16}|${DEC_OCTET}(\\.${DEC_OCTET}){3})`;
const h16s = (min: number, max: number) => `(${H16}:){${min},${max}}`;
/** IPv6address of RFC 3986, section 3.2.2, spelled out as its ABNF is. */
const IPV6_ABNF = new RegExp(
  "^(" + [
    `${h16s(6, 6)}${LS32}`,
    `::${h16s(5, 5)}${LS32}`,
    `(${H16})?::${h16s(4, 4)}${LS32}`,
    `(${h16s(0, 1)}${H16})?::${h16s(3, 3)}${LS32}`,
    `(${h16s(0, 2)}${H16})?::${h16s(2, 2)}${LS32}`,
    `(${h16s(0, 3)}${H16})?::${H16}:${LS32}`,
    `(${h16s(0, 4)}${H16})?::${LS32}`,
    `(${h16s(0, 5)}${H16})?::${H16}`,
    `(${h16s(0, 6)}${H16})?::`,
  ].join("|") + ")$",
);

/** The 16 bytes of IPv6 text, or null when RFC 3986 says it is not IPv6 (zones and brackets included). */
function ipv6Bytes(text: string): Uint8Array | null {
  if (!IPV6_ABNF.test(text)) return null;
  // A trailing dotted quad is the last two groups.
  const hex = text.replace(
    /(\d+)\.(\d+)\.(\d+)\.(\d+)$/,
    (_, a, b, c, d) => `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`,
  );
  const [head, tail] = hex.split("::");
  const parse = (s: string | undefined) => (s ? s.split(":").map((g) => parseInt(g, 16)) : []);
  const h = parse(head), t = parse(tail);
  const all = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  assert.equal(all.length, 8, text);
  return Uint8Array.from(all.flatMap((g) => [g >> 8, g & 0xff]));
}

/**
 * RFC 5952 text of 16 bytes, as the runtime's WHATWG URL serialiser writes it
 * (lower-case hex, no dotted quad, `::` for the first longest run of two or
 * more zero groups). Only eight plain groups are given to the URL parser:
 * Bun's rejects some valid IPv6 text with a dotted quad, e.g. `::0:0:0:0:0.0.0.0`.
 */
function canonicalIPv6(bytes: Uint8Array): string {
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

/** What a reply must carry for `host`: an IPv4 (dotted quad or IPv4-mapped IPv6), an IPv6, or nothing. */
function expectedAddress(host: string): { ipv4: Uint8Array } | { ipv6: Uint8Array } | null {
  if (DOTTED_QUAD.test(host)) return { ipv4: Uint8Array.from(host.split("."), Number) };
  const inner = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  const v6 = ipv6Bytes(inner);
  if (!v6) return null;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? { ipv4: v6.slice(12) } : { ipv6: v6 };
}

// ---------------------------------------------------------------- answers: shapes and expected bytes

/**
 * Fails unless `w` is a well-formed answer: SOCKS5 `05 REP 00 ATYP ADDR PORT`
 * (ATYP 1 or 4; a failure has ATYP 1 and a zero address and port; a name reply
 * is `05 00 00 03 LEN NAME 00 00`), or SOCKS4 `00 5A/5B PORT IPv4` (5B all zero).
 */
function checkReplyShape(w: Uint8Array, version: 4 | 5) {
  const h = toHex(w);
  if (version === 4) {
    assert.equal(w.length, 8, h);
    assert.equal(w[0], 0, h);
    assert.ok(w[1] === 0x5a || (w[1] === 0x5b && h === SOCKS4_REJECT), h);
    return;
  }
  assert.ok(w.length >= 8 && w[0] === 5 && w[2] === 0, h);
  if (w[1] !== 0) {
    assert.match(h, /^05 [0-9a-f]{2} 00 01 00 00 00 00 00 00$/, "failure reply shape");
  } else if (w[3] === 1) assert.equal(w.length, 10, h);
  else if (w[3] === 4) assert.equal(w.length, 22, h);
  else {
    assert.equal(w[3], 3, h);
    assert.ok(w[4] >= 1 && w.length === 7 + w[4], h);
    assert.ok(w.subarray(5, 5 + w[4]).every((b) => b >= 0x21 && b <= 0x7e), h);
    assert.deepEqual([...w.subarray(-2)], [0, 0], h);
  }
}

function socks5Reply(rep: number, address: ReturnType<typeof expectedAddress>, port: number): string {
  const bytes = address && "ipv6" in address ? [4, ...address.ipv6] : [1, ...(address?.ipv4 ?? [0, 0, 0, 0])];
  return toHex(Uint8Array.of(5, rep, 0, ...bytes, port >> 8, port & 0xff));
}

function socks4Reply(granted: boolean, address: ReturnType<typeof expectedAddress>, port: number): string {
  const ip = granted && address && "ipv4" in address ? address.ipv4 : [0, 0, 0, 0];
  return granted ? toHex(Uint8Array.of(0, 0x5a, port >> 8, port & 0xff, ...ip)) : SOCKS4_REJECT;
}

type Answer =
  | { method: "connected"; host: string; port: number }
  | { method: "resolved"; address: string }
  | { method: "resolvedName"; name: string }
  | { method: "rejected"; code: ReplyCode };

function answer(machine: Machine, a: Answer): Step<RequestKind> {
  switch (a.method) {
    case "connected":
      return machine.connected({ host: a.host, port: a.port });
    case "resolved":
      return machine.resolved(a.address);
    case "resolvedName":
      return machine.resolvedName(a.name);
    case "rejected":
      return machine.rejected(a.code);
  }
}

/** The reply and action `a` must give for `request`, or null when the method does not fit the request. */
function expectedAnswer(request: SocksRequest, a: Answer): { reply: string; action: Action["type"] } | null {
  const v5 = request.version === 5;
  switch (a.method) {
    case "connected": {
      if (request.kind !== "connect" && request.kind !== "connect_dir") return null;
      const address = expectedAddress(a.host);
      return {
        reply: v5 ? socks5Reply(0, address, a.port) : socks4Reply(true, address, a.port),
        action: "relay",
      };
    }
    case "resolved": {
      if (request.kind !== "resolve") return null;
      const address = expectedAddress(a.address);
      const unreachable = v5 ? socks5Reply(ReplyCode.HostUnreachable, null, 0) : SOCKS4_REJECT;
      if (!address) return { reply: unreachable, action: "close" };
      // SOCKS4 carries only IPv4: an IPv6 answer is a rejection there.
      return {
        reply: v5 ? socks5Reply(0, address, 0) : socks4Reply("ipv4" in address, address, 0),
        action: "close",
      };
    }
    case "resolvedName": {
      if (request.kind !== "resolve_ptr") return null;
      const valid = /^[\x21-\x7e]{1,255}$/.test(a.name);
      return {
        reply: valid
          ? toHex(concat([5, 0, 0, 3, a.name.length], ascii(a.name), [0, 0]))
          : socks5Reply(ReplyCode.HostUnreachable, null, 0),
        action: "close",
      };
    }
    case "rejected":
      return {
        // A rejection never reads as success: anything but an RFC 1928 failure code (01-08) or Tor's
        // extended ones (F0-F7, passed on from a Tor upstream) is sent as a general failure.
        reply: v5
          ? socks5Reply(
            (a.code >= 1 && a.code <= 8) || (a.code >= 0xf0 && a.code <= 0xf7)
              ? a.code
              : ReplyCode.GeneralFailure,
            null,
            0,
          )
          : SOCKS4_REJECT,
        action: "close",
      };
  }
}

// ---------------------------------------------------------------- generators

const byte = fc.integer({ min: 0, max: 255 });
const port = fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 1, 80, 255, 256, 0xffff));
/** A value, or now and then `undefined` (to let a length byte lie, say). */
const rarely = <T>(arb: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
/** `value` most of the time, now and then any byte. */
const usually = (value: number) =>
  fc.oneof({ weight: 12, arbitrary: fc.constant(value) }, { weight: 1, arbitrary: byte });

/** Lengths that favour the protocol's edges (255 is the longest field, 256 one too many) as much as typical ones. */
const fieldLength = (max: number) =>
  fc.oneof(
    fc.integer({ min: 0, max: 12 }),
    fc.integer({ min: 0, max }),
    fc.constantFrom(0, 1, 254, 255, 256, 257).filter((n) => n <= max),
  );
/** `n` bytes, each mapped into [lo, hi]. */
const bytesIn = (lo: number, hi: number, length: fc.Arbitrary<number>) =>
  length.chain((n) => fc.uint8Array({ minLength: n, maxLength: n })).map((a) =>
    a.map((b) => lo + (b % (hi - lo + 1)))
  );
const hostChars = (length: fc.Arbitrary<number>) => bytesIn(0x21, 0x7e, length);
const hostName = fc.oneof(
  { weight: 4, arbitrary: hostChars(fieldLength(255).filter((n) => n > 0)) },
  { weight: 1, arbitrary: fc.constantFrom("example.org", "a", "xn--bcher-kva.test", "web.test").map(ascii) },
);
/** Name bytes as a fuzzer would send them: mostly valid, sometimes anything (NUL, space, controls, 8-bit). */
const nameBytes = fc.oneof(
  { weight: 3, arbitrary: hostName },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 260, size: "max" }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) },
);
const ipv6Wire = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  // Zero runs of every length and position, to exercise `::`.
  fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
    .map((groups) => Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff]))),
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((v4) => concat(new Array(10).fill(0), [0xff, 0xff], v4)),
);

const greeting = (wanted: number) =>
  fc.record({
    methods: fc.oneof(
      {
        weight: 6,
        arbitrary: fc.array(fc.oneof(fc.constantFrom(wanted, 0x00, 0x02, 0xff), byte), { maxLength: 6 }),
      },
      { weight: 1, arbitrary: fc.array(byte, { maxLength: 255, size: "max" }) },
    ),
    count: rarely(byte),
  }).map(({ methods, count }) => [5, count ?? methods.length, ...methods]);

const credential = (right: string) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant(ascii(right)) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "",
        "alic",
        "alice\0",
        "Alice",
        "secret ",
        "secre",
        "alicesecret",
        USER,
        PASSWORD,
      )
        .map(ascii),
    },
    { weight: 1, arbitrary: bytesIn(0, 255, fieldLength(255)) },
  );

const auth = fc.record({
  version: usually(1),
  user: credential(USER),
  password: credential(PASSWORD),
  ulen: rarely(byte),
  plen: rarely(byte),
}).map(({ version, user, password, ulen, plen }) => [
  version,
  ulen ?? user.length,
  ...user,
  plen ?? password.length,
  ...password,
]);

const command = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(0x01, 0xf0, 0xf1, 0xf2) },
  { weight: 1, arbitrary: fc.constantFrom(0x02, 0x03) },
  { weight: 1, arbitrary: byte },
);

const socks5Address = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ minLength: 4, maxLength: 4 }).map((a) => [1, ...a]) },
  { weight: 3, arbitrary: ipv6Wire.map((a) => [4, ...a]) },
  {
    weight: 4,
    arbitrary: fc.tuple(nameBytes, rarely(byte)).map(([name, len]) => [3, len ?? name.length, ...name]),
  },
  { weight: 1, arbitrary: fc.tuple(byte, fc.uint8Array({ maxLength: 20 })).map(([atyp, a]) => [atyp, ...a]) },
);

const socks5Request = fc.record({
  version: usually(5),
  cmd: command,
  rsv: usually(0),
  address: socks5Address,
  port: fc.uint8Array({ minLength: 2, maxLength: 2 }),
}).map(({ version, cmd, rsv, address, port }) => [version, cmd, rsv, ...address, ...port]);

const socks4Request = fc.record({
  cmd: command,
  port: fc.uint8Array({ minLength: 2, maxLength: 2 }),
  ip: fc.oneof(
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    byte.map((x) => [0, 0, 0, x]), // SOCKS4A when x != 0
  ),
  user: bytesIn(1, 255, fieldLength(300)),
  host: fc.oneof({ weight: 3, arbitrary: hostName }, {
    weight: 1,
    arbitrary: bytesIn(1, 255, fieldLength(300)),
  }),
  hostEnd: fc.oneof({ weight: 9, arbitrary: fc.constant([0]) }, { weight: 1, arbitrary: fc.constant([]) }),
}).map(({ cmd, port, ip, user, host, hostEnd }) => {
  const socks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
  return [4, cmd, ...port, ...ip, ...user, 0, ...(socks4a ? [...host, ...hostEnd] : [])];
});

const httpRequest = fc.constantFrom(
  "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
  "HEAD / HTTP/1.0\r\n\r\n",
  "POST /x HTTP/1.1\r\n",
  "PUT",
  "PATCH / HTTP/1.1\r\n",
  "CONNECT example.org:443 HTTP/1.1\r\n\r\n",
  "C",
).map(ascii);

/** Bytes a client sends after its request (the start of the tunnelled stream). */
const earlyData = fc.oneof(
  { weight: 3, arbitrary: fc.constant(new Uint8Array(0)) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 16 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300, size: "max" }) },
);

/** A SOCKS conversation with random fields; with `withAuth` the RFC 1929 message is usually there. */
const conversation = (withAuth: boolean) =>
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.tuple(
        greeting(withAuth ? 0x02 : 0x00),
        fc.oneof(
          { weight: withAuth ? 9 : 1, arbitrary: auth },
          { weight: withAuth ? 1 : 9, arbitrary: fc.constant([]) },
        ),
        socks5Request,
        earlyData,
      ),
    },
    { weight: 3, arbitrary: fc.tuple(socks4Request, earlyData) },
    { weight: 1, arbitrary: fc.tuple(httpRequest, earlyData) },
  ).map((parts) => concat(...parts));

type Mutation = { op: "flip" | "truncate" | "insert" | "delete"; at: number; value: number };

function mutate(bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = [...bytes];
  for (const { op, at, value } of mutations) {
    const i = at % (out.length + 1);
    if (op === "flip") out[i] = value;
    else if (op === "truncate") out = out.slice(0, i);
    else if (op === "insert") out.splice(i, 0, value);
    else out.splice(i, 1);
  }
  return Uint8Array.from(out.slice(0, 1200).map((b) => b ?? 0));
}

const mutated = (arb: fc.Arbitrary<Uint8Array>) =>
  fc.tuple(
    arb,
    fc.oneof(
      { weight: 3, arbitrary: fc.constant([]) },
      {
        weight: 1,
        arbitrary: fc.array(
          fc.record({
            op: fc.constantFrom("flip", "truncate", "insert", "delete"),
            at: fc.nat(),
            value: byte,
          }),
          { minLength: 1, maxLength: 3 },
        ),
      },
    ),
  ).map(([bytes, mutations]) => mutate(bytes, mutations as Mutation[]));

const chunking: fc.Arbitrary<number[] | "bytes"> = fc.oneof(
  { weight: 8, arbitrary: fc.array(fc.nat(), { maxLength: 12 }) },
  { weight: 1, arbitrary: fc.array(fc.nat(), { maxLength: 200, size: "max" }) },
  { weight: 1, arbitrary: fc.constant("bytes" as const) },
);

const rawBytes = fc.oneof(
  fc.uint8Array({ maxLength: 1200 }),
  fc.uint8Array({ maxLength: 1200, size: "max" }),
  // A version byte first, then anything: random greetings, requests, lengths.
  fc.tuple(fc.constantFrom(4, 5), fc.uint8Array({ maxLength: 1199 })).map(([v, rest]) => concat([v], rest)),
  fc.tuple(fc.constantFrom(4, 5), fc.uint8Array({ maxLength: 1199, size: "max" })).map(([v, rest]) =>
    concat([v], rest)
  ),
);

// ---------------------------------------------------------------- valid requests, for the answers

interface ValidRequest {
  bytes: Uint8Array;
  mode: Mode;
  request: SocksRequest;
  early: Uint8Array;
}

const KINDS = { 0x01: "connect", 0xf0: "resolve", 0xf1: "resolve_ptr", 0xf2: "connect_dir" } as const;

const validSocks5: fc.Arbitrary<ValidRequest> = fc.record({
  mode: fc.constantFrom<Mode>(...MODES),
  others: fc.array(byte, { maxLength: 5 }),
  at: fc.nat(),
  cmd: fc.constantFrom(0x01, 0xf0, 0xf1, 0xf2),
  rsv: byte,
  target: fc.oneof(
    fc.uint8Array({ minLength: 4, maxLength: 4 }).map((a) => ({
      wire: [1, ...a],
      host: [...a].join("."),
      type: "ipv4" as const,
    })),
    ipv6Wire.map((a) => ({ wire: [4, ...a], host: canonicalIPv6(a), type: "ipv6" as const })),
    hostName.map((n) => ({ wire: [3, n.length, ...n], host: latin1(n), type: "domain" as const })),
    // An IP address sent as a name: a name to CONNECT and RESOLVE, the address itself to RESOLVE_PTR.
    fc.oneof(
      fc.uint8Array({ minLength: 4, maxLength: 4 }).map((a) => ({
        text: [...a].join("."),
        host: [...a].join("."),
      })),
      fc.tuple(ipv6Wire, fc.boolean()).map(([a, upper]) => {
        const host = canonicalIPv6(a);
        return { text: upper ? host.toUpperCase() : host, host };
      }),
    ).map(({ text, host }) => ({
      wire: [3, text.length, ...ascii(text)],
      host: text,
      type: "domain" as const,
      address: { host, type: host.includes(":") ? "ipv6" as const : "ipv4" as const },
    })),
  ),
  port,
  early: earlyData,
}).map(({ mode, others, at, cmd, rsv, target: sent, port, early }) => {
  const withAuth = requiresAuth(mode);
  const methods = [...others];
  methods.splice(at % (methods.length + 1), 0, withAuth ? 0x02 : 0x00);
  // RESOLVE_PTR takes an address (maybe as text), never a name.
  const address = "address" in sent ? sent.address : undefined;
  const kind = cmd === 0xf1 && sent.type === "domain" && !address
    ? "resolve"
    : KINDS[cmd as keyof typeof KINDS];
  const target = kind === "resolve_ptr" && address ? { ...sent, ...address } : sent;
  const wireCmd = kind === "resolve" ? 0xf0 : cmd;
  const login = withAuth ? [1, USER.length, ...ascii(USER), PASSWORD.length, ...ascii(PASSWORD)] : [];
  return {
    bytes: concat([5, methods.length], methods, login, [5, wireCmd, rsv], sent.wire, [
      port >> 8,
      port & 0xff,
    ], early),
    mode,
    request: {
      version: 5,
      kind,
      target: { host: target.host, type: target.type, port },
      ...(withAuth ? { user: USER } : {}),
    },
    early,
  };
});

const validSocks4: fc.Arbitrary<ValidRequest> = fc.record({
  mode: fc.constantFrom<Mode>("open", "auth_socks4"),
  cmd: fc.constantFrom(0x01, 0xf0, 0xf2),
  ip: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  name: fc.option(hostName, { freq: 2 }),
  user: bytesIn(1, 255, fieldLength(255)),
  port,
  early: earlyData,
}).map(({ mode, cmd, ip, name, user, port, early }) => {
  // SOCKS4A: 0.0.0.x with x != 0 announces a name; plain SOCKS4 must not look like that.
  const wireIp = name
    ? Uint8Array.of(0, 0, 0, ip[3] || 1)
    : ip[0] || ip[1] || ip[2] || !ip[3]
    ? ip
    : [1, 0, 0, ip[3]];
  return {
    bytes: concat([4, cmd, port >> 8, port & 0xff], wireIp, user, [0], name ? [...name, 0] : [], early),
    mode,
    request: {
      version: 4,
      kind: KINDS[cmd as keyof typeof KINDS],
      target: name
        ? { host: latin1(name), type: "domain", port }
        : { host: [...wireIp].join("."), type: "ipv4", port },
      ...(user.length > 0 ? { user: latin1(user) } : {}),
    },
    early,
  };
});

const answerHost = fc.oneof(
  { weight: 3, arbitrary: fc.ipV4() },
  { weight: 3, arbitrary: fc.ipV6() },
  { weight: 1, arbitrary: fc.ipV6().map((h) => `[${h}]`) },
  { weight: 1, arbitrary: fc.ipV6().map((h) => h.toUpperCase()) },
  { weight: 1, arbitrary: fc.ipV4().map((h) => `::ffff:${h}`) },
  { weight: 1, arbitrary: fc.ipV4Extended() },
  { weight: 1, arbitrary: fc.domain() },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 50 }) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.[]% "), maxLength: 45 }),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "",
      "0.0.0.0",
      "255.255.255.255",
      "::",
      "::1",
      "::ffff:0.0.0.0",
      "::ffff:7f00:1",
      "0:0:0:0:0:ffff:102:304",
      "[::1]",
      "01.2.3.4",
      "1.2.3",
      "1.2.3.4 ",
      " ::1",
      "::1%eth0",
      "1.2.3.4::",
      "::1.2.3.4",
      "1:2:3:4:5:6:7:8:9",
      "localhost",
    ),
  },
);

const answerName = fc.oneof(
  fc.domain(),
  hostChars(fieldLength(260)).map(latin1),
  fc.string({ unit: "binary", maxLength: 300, size: "max" }),
  fc.constantFrom("", "a", "a b", "x".repeat(255), "x".repeat(256), "é", "tab\there"),
);

/** The named codes, and any byte: REP is one byte on the wire (values beyond 0-255 are outside the type). */
const replyCode = fc.oneof(
  fc.constantFrom(...Object.values(ReplyCode)),
  byte.map((b) => b as ReplyCode),
);

interface AnswerInputs {
  /** 0-4: the method that fits the request; 5-6: rejected(); 7-9: `method`, fitting or not. */
  pick: number;
  method: Answer["method"];
  host: string;
  port: number;
  name: string;
  code: ReplyCode;
}

const answers: fc.Arbitrary<AnswerInputs> = fc.record({
  pick: fc.integer({ min: 0, max: 9 }),
  method: fc.constantFrom<Answer["method"]>("connected", "resolved", "resolvedName", "rejected"),
  host: answerHost,
  port,
  name: answerName,
  code: replyCode,
});

function chooseAnswer(request: SocksRequest, a: AnswerInputs): Answer {
  const fitting =
    { connect: "connected", connect_dir: "connected", resolve: "resolved", resolve_ptr: "resolvedName" }[
      request.kind
    ];
  const method = a.pick >= 7 ? a.method : a.pick >= 5 ? "rejected" : fitting;
  switch (method) {
    case "connected":
      return { method, host: a.host, port: a.port };
    case "resolved":
      return { method, address: a.host };
    case "resolvedName":
      return { method, name: a.name };
    default:
      return { method: "rejected", code: a.code };
  }
}

/**
 * Property 5 for one valid request: it parses to exactly the request that was
 * encoded, then `choice` yields exactly one correct reply (or, when it does
 * not fit the request, a close without a reply), and nothing after that.
 * Returns a label of the outcome.
 */
function answerOnce(valid: ValidRequest, chunks: Uint8Array[], choice: Answer): string {
  const machine: Machine = new SocksServerMachine(optionsFor(valid.mode, []));
  let action: Action<RequestKind> = { type: "need_more" };
  const writes: string[] = [];
  for (let i = 0; i < chunks.length && action.type === "need_more"; i++) {
    const step = machine.receive(chunks[i]);
    checkStepReply(step);
    writes.push(...step.write.map(toHex));
    action = step.action;
    if (action.type === "request") {
      action = { ...action, early: concat(action.early, ...chunks.slice(i + 1)) };
    }
  }
  const handshake = valid.request.version === 4
    ? []
    : requiresAuth(valid.mode)
    ? ["05 02", "01 00"]
    : ["05 00"];
  const { kind, target, version } = valid.request;
  if (target.port === 0 && (kind === "connect" || kind === "connect_dir")) {
    // A tunnel to port 0 is refused by the machine (Tor's reply): never handed to the driver.
    const refusal = version === 5 ? "05 01 00 01 00 00 00 00 00 00" : SOCKS4_REJECT;
    assert.deepEqual(action, { type: "close", code: "protocol_error", reason: "connect to port 0 refused" });
    assert.deepEqual(writes, [...handshake, refusal]);
    for (const late of [...ANSWER_ALL, (m: Machine) => m.receive(Uint8Array.of(5, 1, 0))]) {
      assertMisuse(machine, () => late(machine), "a call after the refusal");
    }
    return `${version}:port0`;
  }
  assert.deepEqual(action, { type: "request", request: valid.request, early: valid.early });
  assert.deepEqual(writes, handshake);

  const { request } = valid;
  const expected = expectedAnswer(request, choice);
  let label: string;
  let step: Step<RequestKind>;
  if (expected === null) {
    // Misuse: the wrong method for this request throws and writes no reply; the request is still there to refuse.
    assertMisuse(machine, () => answer(machine, choice), "a method that does not fit the request");
    label = "misuse";
    step = machine.rejected(ReplyCode.NotAllowed);
    assert.equal(step.write.length, 1, "exactly one reply");
    checkReplyShape(step.write[0], request.version);
    assert.equal(
      toHex(step.write[0]),
      request.version === 5 ? "05 02 00 01 00 00 00 00 00 00" : SOCKS4_REJECT,
    );
  } else {
    step = answer(machine, choice);
    assert.equal(step.write.length, 1, "exactly one reply");
    checkReplyShape(step.write[0], request.version);
    assert.equal(toHex(step.write[0]), expected.reply);
    assert.equal(step.action.type, expected.action);
    label = `${request.version}:${choice.method}:${expected.reply.slice(0, 5)}`;
  }
  // The reply byte is reported, not left to be read back out of the bytes.
  assert.equal(step.reply, step.write[0][1], "Step.reply differs from the reply written");
  // Exactly one: nothing more is ever written, whatever is called next (each call throws).
  for (const late of [...ANSWER_ALL, (m: Machine) => m.receive(Uint8Array.of(5, 1, 0))]) {
    assertMisuse(machine, () => late(machine), "a call after the answer");
  }
  return label;
}

// ---------------------------------------------------------------- the properties

describe("fuzzing SocksServerMachine", () => {
  it(
    `arbitrary bytes, any options: never throws, bounded buffer, known messages, chunking-invariant (${
      runsOf(SHARE.raw)
    } cases)`,
    {
      timeout: TIMEOUT,
    },
    () => {
      check(
        fc.tuple(rawBytes, chunking, fc.constantFrom(...MODES)),
        runsOf(SHARE.raw),
        1,
        ([input, cuts, mode]) => {
          conversationAgrees(input, cuts, mode);
        },
      );
    },
  );

  it(`protocol-shaped conversations, no auth: deep states, same invariants (${runsOf(SHARE.shaped)} cases)`, {
    timeout: TIMEOUT,
  }, () => {
    const seen = new Set<string>();
    check(
      fc.tuple(mutated(conversation(false)), chunking, fc.constantFrom<Mode>("open", "no_socks4")),
      runsOf(SHARE.shaped),
      2,
      ([input, cuts, mode]) => {
        seen.add(`${mode}:${conversationAgrees(input, cuts, mode)}`);
      },
    );
    if (CHECK_COVERAGE) {
      assertReached(seen, [
        "open:sel00|request5",
        "open:|request4",
        "open:http|close",
        "open:s4reject|close",
        "open:selff|close",
        "open:sel00,s5fail01|close",
        "open:sel00,s5fail07|close",
        "open:sel00,s5fail08|close",
        "open:|need_more",
        "open:sel00|need_more",
        "no_socks4:s4reject|close",
        "no_socks4:sel00|request5",
      ]);
    }
  });

  it(`RFC 1929 conversations: a wrong credential never yields a request (${runsOf(SHARE.auth)} cases)`, {
    timeout: TIMEOUT,
  }, () => {
    const seen = new Set<string>();
    check(
      fc.tuple(mutated(conversation(true)), chunking, fc.constantFrom<Mode>("auth", "auth_socks4")),
      runsOf(SHARE.auth),
      3,
      ([input, cuts, mode]) => {
        seen.add(`${mode}:${conversationAgrees(input, cuts, mode)}`);
      },
    );
    if (CHECK_COVERAGE) {
      assertReached(seen, [
        "auth:sel02,auth_ok|request5",
        "auth:sel02,auth_fail|close",
        "auth:sel02,auth_ok,s5fail01|close",
        "auth:sel02,auth_ok,s5fail07|close",
        "auth:sel02,auth_ok,s5fail08|close",
        "auth:selff|close",
        "auth:s4reject|close",
        "auth:http|close",
        "auth:sel02|need_more",
        "auth:sel02,auth_ok|need_more",
        "auth_socks4:|request4",
        "auth_socks4:sel02,auth_ok|request5",
      ]);
    }
  });

  it(
    `valid requests parse exactly; every answer method gives exactly one correct reply (${
      runsOf(SHARE.answers)
    } cases)`,
    {
      timeout: TIMEOUT,
    },
    () => {
      const seen = new Set<string>();
      check(
        fc.tuple(fc.oneof(validSocks5, validSocks4), chunking, answers),
        runsOf(SHARE.answers),
        4,
        ([valid, cuts, a]) => {
          const choice = chooseAnswer(valid.request, a);
          withContext(
            () => `mode ${valid.mode}, ${JSON.stringify(choice)}, input ${toHex(valid.bytes)}`,
            () => seen.add(answerOnce(valid, split(valid.bytes, cuts), choice)),
          );
        },
      );
      if (CHECK_COVERAGE) {
        assertReached(seen, [
          "misuse",
          "5:connected:05 00",
          "4:connected:00 5a",
          "5:resolved:05 00",
          "5:resolved:05 04",
          "4:resolved:00 5a",
          "4:resolved:00 5b",
          "5:resolvedName:05 00",
          "5:resolvedName:05 04",
          "5:rejected:05 01",
          "4:rejected:00 5b",
          "5:port0",
          "4:port0",
        ]);
      }
    },
  );
});

/** The generators must keep reaching every outcome, or the properties above test less than they claim. */
function assertReached(seen: Set<string>, wanted: string[]) {
  const missing = wanted.filter((w) => !seen.has(w));
  assert.deepEqual(missing, [], `outcomes never reached; seen: ${[...seen].sort().join(" ")}`);
}
