/**
 * The SOCKS machine's transition table, walked pair by pair: every state ×
 * every input kind has a decision written down here (a step of the expected
 * shape, or a TypeError that changes nothing), so a state or an input kind
 * added to the machine without one fails this test.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { SocksServerMachine } from "../lib/core/socks_server.ts";
import { type InputKind, type SocksState, TRANSITIONS } from "../lib/core/_socks_states.ts";
import {
  type Action,
  type Answer,
  type CloseCode,
  REQUEST_KINDS,
  type RequestKind,
} from "../lib/core/request.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { hex, toHex } from "./_hex.ts";

type Machine = SocksServerMachine<RequestKind>;

const EVERY_COMMAND: readonly RequestKind[] = REQUEST_KINDS;
const latin1 = (b: Uint8Array) => String.fromCharCode(...b);
const authenticate = (u: Uint8Array, p: Uint8Array) => latin1(u) === "alice" && latin1(p) === "secret";

const BOUND = { host: "127.0.0.1", port: 40000 };
const PEER = { host: "192.0.2.7", port: 5000 };

/** The answer fed for each answer kind. */
const ANSWER: { [K in Exclude<InputKind, "bytes">]: Answer & { type: K } } = {
  connected: { type: "connected", bound: BOUND },
  bound: { type: "bound", bound: BOUND },
  peer: { type: "peer", peer: PEER },
  associated: { type: "associated", bound: BOUND },
  resolved: { type: "resolved", address: "1.2.3.4" },
  resolved_name: { type: "resolved_name", name: "web.test" },
  rejected: { type: "rejected", reply: ReplyCode.NotAllowed },
};

/** A fresh machine (every command served) fed `input`, then `answers`. */
function reach(input: string, answers: Answer[] = [], withAuth = false): () => Machine {
  return () => {
    const m: Machine = new SocksServerMachine({
      commands: EVERY_COMMAND,
      ...(withAuth ? { authenticate } : {}),
    });
    if (input) m.receive(hex(input));
    for (const a of answers) m.answer(a);
    return m;
  };
}

const REQUEST = {
  connect: "05 01 00 05 01 00 01 7f000001 0050",
  resolve: "05 01 00 05 f0 00 03 08 'web.test' 0000",
  resolvePtr: "05 01 00 05 f1 00 01 c0000201 0000",
  bind: "05 01 00 05 02 00 01 c0000207 1388",
  udp: "05 01 00 05 03 00 01 00000000 0000",
};

/** How to bring a machine into each state. */
const REACH: Record<SocksState, () => Machine> = {
  start: reach(""),
  s5_greeting: reach("05"),
  s5_auth: reach("05 01 02", [], true),
  s5_request: reach("05 01 00"),
  s4_request: reach("04"),
  connect_pending: reach(REQUEST.connect),
  resolve_pending: reach(REQUEST.resolve),
  resolve_ptr_pending: reach(REQUEST.resolvePtr),
  bind_pending: reach(REQUEST.bind),
  bind_waiting: reach(REQUEST.bind, [ANSWER.bound]),
  udp_pending: reach(REQUEST.udp),
  relaying: reach(REQUEST.connect, [ANSWER.connected]),
  holding: reach(REQUEST.udp, [ANSWER.associated]),
  closed: reach("07"),
};

/** A decision: the input throws a TypeError, or gives this step and leaves the machine in `state`. */
type Expect = "throws" | {
  /** For `bytes`: what is fed, as hex. */
  input?: string;
  writes: string;
  action: Action["type"];
  reply?: number;
  code?: CloseCode;
  state: SocksState;
};

const X = "throws";
const refused = (writes: string, reply: number): Expect => ({
  writes,
  action: "close",
  reply,
  code: "answered",
  state: "closed",
});
const REFUSED = refused("05 02 00 01 00000000 0000", ReplyCode.NotAllowed);

const EXPECTED: Record<SocksState, Record<InputKind, Expect>> = {
  start: {
    bytes: { input: "05 01 00", writes: "05 00", action: "need_more", state: "s5_request" },
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  s5_greeting: {
    bytes: { input: "01 00", writes: "05 00", action: "need_more", state: "s5_request" },
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  s5_auth: {
    bytes: { input: "01 05 'alice' 06 'secret'", writes: "01 00", action: "need_more", state: "s5_request" },
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  s5_request: {
    bytes: { input: "05 01 00 01 7f000001 0050", writes: "", action: "request", state: "connect_pending" },
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  s4_request: {
    bytes: { input: "01 0050 7f000001 00", writes: "", action: "request", state: "connect_pending" },
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  connect_pending: {
    bytes: X,
    connected: { writes: "05 00 00 01 7f000001 9c40", action: "relay", reply: 0, state: "relaying" },
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: REFUSED,
  },
  resolve_pending: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: refused("05 00 00 01 01020304 0000", 0),
    resolved_name: X,
    rejected: REFUSED,
  },
  resolve_ptr_pending: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: refused("05 00 00 03 08 'web.test' 0000", 0),
    rejected: REFUSED,
  },
  bind_pending: {
    bytes: X,
    connected: X,
    bound: { writes: "05 00 00 01 7f000001 9c40", action: "wait", reply: 0, state: "bind_waiting" },
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: REFUSED,
  },
  bind_waiting: {
    bytes: X,
    connected: X,
    bound: X,
    peer: { writes: "05 00 00 01 c0000207 1388", action: "relay", reply: 0, state: "relaying" },
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: REFUSED,
  },
  udp_pending: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: { writes: "05 00 00 01 7f000001 9c40", action: "hold", reply: 0, state: "holding" },
    resolved: X,
    resolved_name: X,
    rejected: REFUSED,
  },
  relaying: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  holding: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
  closed: {
    bytes: X,
    connected: X,
    bound: X,
    peer: X,
    associated: X,
    resolved: X,
    resolved_name: X,
    rejected: X,
  },
};

const MISUSE_MESSAGE: Record<InputKind, RegExp> = {
  bytes: /^unexpected input in state [a-z0-9_]+$/,
  connected: /^connected\(\) without a pending tunnel request \(state /,
  bound: /^bound\(\) without a pending BIND \(state /,
  peer: /^peer\(\) without a BIND waiting for its peer \(state /,
  associated: /^associated\(\) without a pending UDP ASSOCIATE \(state /,
  resolved: /^resolved\(\) without a pending RESOLVE \(state /,
  resolved_name: /^resolvedName\(\) without a pending RESOLVE_PTR \(state /,
  rejected: /^rejected\(\) without a pending request \(state /,
};

describe("the transition table", () => {
  const states = Object.keys(TRANSITIONS) as SocksState[];

  it("has a decision in this test for every state and every input kind of the machine, and no other", () => {
    assert.deepEqual(Object.keys(EXPECTED).sort(), [...states].sort());
    assert.deepEqual(Object.keys(REACH).sort(), [...states].sort());
    for (const state of states) {
      const kinds = Object.keys(TRANSITIONS[state]).sort();
      assert.deepEqual(kinds, Object.keys(MISUSE_MESSAGE).sort(), `input kinds of ${state}`);
      assert.deepEqual(Object.keys(EXPECTED[state]).sort(), kinds, `decisions for ${state}`);
      for (const kind of kinds) assert.equal(typeof TRANSITIONS[state][kind as InputKind], "function");
    }
  });

  it("every recipe reaches its state", () => {
    for (const state of states) assert.equal(REACH[state]().state, state);
  });

  for (const state of Object.keys(EXPECTED) as SocksState[]) {
    it(`${state}: every input kind`, () => {
      for (const [kind, expect] of Object.entries(EXPECTED[state]) as [InputKind, Expect][]) {
        const m = REACH[state]();
        const feed = () =>
          kind === "bytes"
            ? m.receive(hex(expect === X ? "05 01 00" : expect.input ?? ""))
            : m.answer(ANSWER[kind]);
        const label = `${state} × ${kind}`;
        if (expect === X) {
          const before = { state: m.state, buffered: m.buffered, request: m.request };
          assert.throws(
            feed,
            (e: unknown) => e instanceof TypeError && MISUSE_MESSAGE[kind].test(e.message),
            label,
          );
          assert.deepEqual({ state: m.state, buffered: m.buffered, request: m.request }, before, label);
          continue;
        }
        const step = feed();
        assert.equal(
          toHex(Uint8Array.from(step.write.flatMap((w) => [...w]))),
          toHex(hex(expect.writes)),
          label,
        );
        assert.equal(step.action.type, expect.action, label);
        assert.equal(step.reply, expect.reply, `${label}: reply`);
        if (step.action.type === "close") assert.equal(step.action.code, expect.code, `${label}: code`);
        assert.equal(m.state, expect.state, `${label}: state after`);
      }
    });
  }
});
