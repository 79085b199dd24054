/**
 * The WebSocket ingress at the byte level: messages in, bytes out, FIN as an
 * empty binary message, close codes, backpressure bounds and the token check,
 * against fake sockets (no network).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  admitWebSocket,
  type ByteConnection,
  fromWebSocket,
  refusalResponse,
  relay,
  tokenProtocol,
  WebSocketClosedError,
  webSocketConnection,
  type WebSocketLike,
  type WebSocketPeer,
} from "../mod.ts";
import { encodeFrame, FrameDecoder, frameSize, Opcode } from "../lib/core/websocket_frames.ts";
import { FramedWebSocket, webSocketKey } from "../lib/adapters/_websocket_framed.ts";
import { DenoFramedWebSocket } from "../lib/adapters/_websocket_deno.ts";
import fc from "fast-check";
import { concat, hex, toHex } from "./_hex.ts";
import { sleep, within } from "./_fixtures.ts";

/** A peer that records what it is asked to do. */
function fakePeer(opts: { pausable?: boolean; status?: () => number | void } = {}) {
  const sent: string[] = [];
  const closes: [number, string][] = [];
  const state = { buffered: 0, pauses: 0, resumes: 0 };
  const peer: WebSocketPeer = {
    send(data) {
      sent.push(toHex(data));
      return opts.status?.();
    },
    bufferedAmount: () => state.buffered,
    close: (code, reason) => void closes.push([code, reason]),
    ...(opts.pausable ? { pause: () => void state.pauses++, resume: () => void state.resumes++ } : {}),
  };
  return { peer, sent, closes, state };
}

describe("WebSocket ingress: messages and half-close", () => {
  it("binary messages are the bytes, in order; an empty one is the peer's FIN", async () => {
    const { peer } = fakePeer();
    const conn = webSocketConnection(peer);
    const pending = conn.read();
    conn.message(hex("05 01 00"));
    assert.equal(toHex((await pending)!), "05 01 00");
    conn.message(hex("05 01 00 01"));
    conn.message(hex("7f 00 00 01 00 50"));
    conn.message(new Uint8Array(0));
    // Messages that waited are read as one chunk (see readCoalesce below).
    assert.equal(toHex((await conn.read())!), "05 01 00 01 7f 00 00 01 00 50");
    assert.equal(await conn.read(), null);
    assert.equal(await conn.read(), null);
  });

  it("messages that wait are read as one chunk of up to readCoalesce bytes; a message is never split", async () => {
    const { peer } = fakePeer();
    const conn = webSocketConnection(peer, { readCoalesce: 8 });
    for (const m of ["01 02 03", "04 05 06", "07 08", "09", "0a 0b 0c 0d 0e 0f 10 11 12 13", "14"]) {
      conn.message(hex(m));
    }
    conn.message(new Uint8Array(0));
    const reads: string[] = [];
    for (let chunk; (chunk = await conn.read()) !== null;) reads.push(toHex(chunk));
    assert.deepEqual(reads, [
      "01 02 03 04 05 06 07 08", // 3 + 3 + 2 = 8: the bound
      "09", // 1 + 10 > 8
      "0a 0b 0c 0d 0e 0f 10 11 12 13", // one message longer than the bound: whole
      "14",
    ]);
    const single = webSocketConnection(fakePeer().peer, { readCoalesce: 0 });
    single.message(hex("01"));
    single.message(hex("02"));
    assert.deepEqual([toHex((await single.read())!), toHex((await single.read())!)], ["01", "02"]);
  });

  it("writes are binary messages; an empty write sends nothing; closeWrite sends one empty message", async () => {
    const { peer, sent, closes } = fakePeer();
    const conn = webSocketConnection(peer);
    await conn.write(hex("05 00"));
    await conn.write(new Uint8Array(0));
    await conn.closeWrite();
    assert.deepEqual(sent, ["05 00", ""]);
    assert.deepEqual(closes, [], "not closed while the peer may still send");
    await assert.rejects(conn.write(hex("01")), TypeError);
    conn.message(hex("'GET'"));
    assert.equal(toHex((await conn.read())!), "47 45 54");
    conn.message(new Uint8Array(0));
    assert.deepEqual(closes, [[1000, ""]], "1000 once both ways have ended");
    assert.equal(await conn.read(), null);
  });

  it("the peer's FIN first, ours second: 1000 after ours", async () => {
    const { peer, sent, closes } = fakePeer();
    const conn = webSocketConnection(peer);
    conn.message(new Uint8Array(0));
    assert.equal(await conn.read(), null);
    assert.deepEqual(closes, []);
    await conn.write(hex("00 5a"));
    await conn.closeWrite();
    assert.deepEqual(sent, ["00 5a", ""]);
    assert.deepEqual(closes, [[1000, ""]]);
  });

  it("close() sends our FIN and 1000; abort() closes with 1011", async () => {
    const a = fakePeer();
    const one = webSocketConnection(a.peer);
    const pending = one.read();
    one.close();
    assert.deepEqual(a.sent, [""]);
    assert.deepEqual(a.closes, [[1000, ""]]);
    assert.equal(await pending, null);
    const b = fakePeer();
    const two = webSocketConnection(b.peer);
    two.abort!();
    assert.deepEqual(b.closes, [[1011, "tunnel failed"]]);
    await assert.rejects(two.write(hex("01")));
  });

  it("a text message is a protocol error: 1003, and reading fails", async () => {
    const { peer, closes } = fakePeer();
    const conn = webSocketConnection(peer);
    const pending = conn.read();
    conn.message("05 01 00");
    await assert.rejects(pending, /text message/);
    assert.deepEqual(closes, [[1003, "text messages are not part of the protocol"]]);
  });

  it("data after the peer's FIN: 1002", async () => {
    const { peer, closes } = fakePeer();
    const conn = webSocketConnection(peer);
    conn.message(new Uint8Array(0));
    conn.message(hex("01"));
    assert.deepEqual(closes, [[1002, "data after the end of the stream"]]);
    await assert.rejects(conn.read(), /after its FIN/);
  });

  it("the peer's close: 1000 is the end, 1011 (or 4011) a failure after the queued bytes", async () => {
    const a = fakePeer();
    const ok = webSocketConnection(a.peer);
    ok.message(hex("01 02"));
    ok.closed(1000, "");
    assert.equal(toHex((await ok.read())!), "01 02");
    assert.equal(await ok.read(), null);
    await assert.rejects(ok.write(hex("01")));
    for (const code of [1011, 4011, 1006]) {
      const b = fakePeer();
      const bad = webSocketConnection(b.peer);
      bad.message(hex("03"));
      bad.closed(code, "boom");
      assert.equal(toHex((await bad.read())!), "03");
      await assert.rejects(bad.read(), new RegExp(`closed by the peer with ${code}`));
      assert.deepEqual(b.closes, [], "nothing sent back on a closed socket");
    }
  });
});

describe("WebSocket ingress: handing messages back", () => {
  it("recycle() hands a chunk read back to the socket; messages joined into one are handed back as they are copied", async () => {
    const back: string[] = [];
    const { peer } = fakePeer();
    const conn = webSocketConnection({ ...peer, recycle: (data) => void back.push(toHex(data)) });
    conn.message(hex("01"));
    const one = (await conn.read())!;
    assert.deepEqual(back, []);
    conn.recycle!(one);
    assert.deepEqual(back, ["01"]);
    conn.message(hex("02"));
    conn.message(hex("03"));
    assert.equal(toHex((await conn.read())!), "02 03");
    assert.deepEqual(back, ["01", "02", "03"]);
    assert.equal(webSocketConnection(fakePeer().peer).recycle, undefined, "a peer that takes nothing back");
  });
});

describe("WebSocket ingress: bounded memory", () => {
  it("where the socket can pause: pauses above receivePause, resumes once half of it is read", async () => {
    const { peer, state, closes } = fakePeer({ pausable: true });
    const conn = webSocketConnection(peer, { receivePause: 1000, receiveLimit: 5000, readCoalesce: 300 });
    for (let i = 0; i < 4; i++) conn.message(new Uint8Array(300));
    assert.equal(state.pauses, 1, "paused at 1,200 queued");
    await conn.read();
    await conn.read();
    assert.equal(state.resumes, 0, "600 queued: still above 500");
    await conn.read();
    assert.equal(state.resumes, 1, "300 queued: resumed");
    assert.deepEqual(closes, []);
  });

  it("more than receiveLimit unread closes with 1008 (a peer that cannot pause, or ignores it)", async () => {
    const { peer, closes } = fakePeer();
    const conn = webSocketConnection(peer, { receiveLimit: 1000 });
    conn.message(new Uint8Array(600));
    conn.message(new Uint8Array(400));
    assert.deepEqual(closes, [], "exactly the limit is fine");
    conn.message(new Uint8Array(1));
    assert.deepEqual(closes, [[1008, "more than 1000 bytes unread"]]);
    assert.equal((await conn.read())!.length, 1000, "what was queued is still read (as one chunk)");
    await assert.rejects(conn.read(), /not yet read/);
  });

  it("write() waits while bufferedAmount is above sendHighWater (polled, or told by drained())", async () => {
    const { peer, state } = fakePeer();
    const conn = webSocketConnection(peer, { sendHighWater: 100, pollMs: 1 });
    state.buffered = 101;
    let done = false;
    const w = conn.write(hex("01")).then(() => (done = true));
    await sleep(30);
    assert.equal(done, false, "waits above the mark");
    state.buffered = 100;
    await within(2_000, "write after the buffer drained (polled)", w);
    state.buffered = 500;
    done = false;
    const w2 = conn.write(hex("02")).then(() => (done = true));
    await sleep(5);
    conn.drained();
    assert.equal(done, false, "drained() while still above the mark does not release it");
    state.buffered = 0;
    conn.drained();
    await within(2_000, "write after drained()", w2);
  });

  it("a waiting write fails when the socket closes", async () => {
    const { peer, state } = fakePeer();
    const conn = webSocketConnection(peer, { sendHighWater: 10 });
    state.buffered = 11;
    const w = conn.write(hex("01"));
    conn.closed(1011, "");
    await assert.rejects(w);
  });

  it("Bun's status 0 (message dropped) fails the tunnel with 1011; -1 waits", async () => {
    let status = -1;
    const { peer, closes, state } = fakePeer({ status: () => status });
    const conn = webSocketConnection(peer, { sendHighWater: 10 });
    state.buffered = 20;
    const w = conn.write(hex("01"));
    state.buffered = 0;
    conn.drained();
    await w;
    status = 0;
    await assert.rejects(conn.write(hex("02")), /dropped/);
    assert.deepEqual(closes, [[1011, "send dropped"]]);
  });
});

/** A WHATWG-shaped socket, as browsers' refuse close codes below 3000 but 1000. */
class FakeWebSocket extends EventTarget implements WebSocketLike {
  binaryType = "blob";
  bufferedAmount = 0;
  readyState = 0;
  sent: string[] = [];
  closes: number[] = [];
  send(data: Uint8Array) {
    if (this.readyState !== 1) throw new Error("InvalidStateError");
    this.sent.push(toHex(data));
  }
  close(code = 1000) {
    if (code !== 1000 && (code < 3000 || code > 4999)) throw new Error("InvalidAccessError");
    this.closes.push(code);
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }
  receive(data: ArrayBuffer | string) {
    this.dispatchEvent(new MessageEvent("message", { data }));
  }
}

describe("WebSocket ingress: a WHATWG socket", () => {
  it("sets binaryType, waits for open before writing, reads ArrayBuffers", async () => {
    const ws = new FakeWebSocket();
    const conn = fromWebSocket(ws);
    assert.equal(ws.binaryType, "arraybuffer");
    let written = false;
    const w = conn.write(hex("05 01 00")).then(() => (written = true));
    await sleep(10);
    assert.equal(written, false);
    ws.open();
    await within(2_000, "write after open", w);
    assert.deepEqual(ws.sent, ["05 01 00"]);
    ws.receive(hex("05 00").buffer as ArrayBuffer);
    assert.equal(toHex((await conn.read())!), "05 00");
    ws.receive(new ArrayBuffer(0));
    assert.equal(await conn.read(), null);
  });

  it("a socket that fails to open fails the waiting write", async () => {
    const ws = new FakeWebSocket();
    const conn = fromWebSocket(ws);
    const w = conn.write(hex("05"));
    ws.readyState = 3;
    ws.dispatchEvent(new Event("error"));
    ws.dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "" }));
    await assert.rejects(w, /1006/);
  });

  it("a socket's writeHighWater replaces the default: 0 makes each write wait until the socket has sent it", async () => {
    const ws = Object.assign(new FakeWebSocket(), { writeHighWater: 0 });
    ws.readyState = 1;
    const conn = fromWebSocket(ws);
    ws.bufferedAmount = 5; // far under the default 1 MiB
    let written = false;
    const w = conn.write(hex("05 01 00")).then(() => (written = true));
    await sleep(20);
    assert.equal(written, false);
    ws.bufferedAmount = 0;
    ws.dispatchEvent(new Event("drain"));
    await within(2_000, "write after drain", w);
    // Without writeHighWater the same write returns at once.
    const plain = new FakeWebSocket();
    plain.readyState = 1;
    plain.bufferedAmount = 5;
    await within(2_000, "write under 1 MiB", fromWebSocket(plain).write(hex("05")));
  });

  it("codes a browser-like socket refuses go out as 4000 + (code - 1000)", () => {
    const ws = new FakeWebSocket();
    ws.readyState = 1;
    const conn = fromWebSocket(ws);
    conn.abort!();
    assert.deepEqual(ws.closes, [4011]);
  });
});

/**
 * A target that reads nothing and whose writes never finish (its kernel buffers are full): what the relay
 * is stuck on while an upload waits, and whether (and how) the tunnel closed it.
 */
function stuckTarget() {
  const state = { writes: 0, ends: [] as string[], release: () => {}, fail: () => {} };
  const never = new Promise<never>(() => {});
  const conn: ByteConnection = {
    read: () => new Promise<Uint8Array | null>((resolve) => (state.release = () => resolve(null))),
    write: () => {
      state.writes++;
      return new Promise<void>((_, reject) => (state.fail = () => reject(new Error("aborted"))));
    },
    closeWrite: () => never,
    close: () => (state.ends.push("close"), state.release(), state.fail()),
    abort: () => (state.ends.push("abort"), state.release(), state.fail()),
  };
  return Object.assign(state, { conn });
}

describe("WebSocket ingress: a closed WebSocket ends the tunnel at once", () => {
  const stuck = async (ws: ByteConnection & { message(d: Uint8Array): void }) => {
    const target = stuckTarget();
    const tunnel = relay(ws, target.conn, { idleTimeout: 300_000 });
    ws.message(new Uint8Array(100)); // the relay reads it and is stuck writing it to the target
    await sleep(20);
    assert.equal(target.writes, 1);
    return { target, tunnel };
  };

  it("our own 1008 (too much unread) while the relay waits on a write to the target: reset, error 1008", async () => {
    const { peer, closes } = fakePeer();
    const ws = webSocketConnection(peer, { receiveLimit: 1000 });
    const { target, tunnel } = await stuck(ws);
    ws.message(new Uint8Array(1000));
    ws.message(new Uint8Array(1)); // over the bound
    const result = await within(2_000, "the tunnel's end", tunnel);
    assert.deepEqual(closes, [[1008, "more than 1000 bytes unread"]]);
    assert.deepEqual(target.ends, ["abort"], "the target is reset, not left open");
    assert.equal(result.end, "error");
    assert.ok(
      result.error instanceof WebSocketClosedError && result.error.code === 1008,
      String(result.error),
    );
    assert.equal(result.up, 100, "what was queued is dropped, not counted");
  });

  it("the peer's 1011 (or 4011, 1006) meanwhile: the same", async () => {
    for (const code of [1011, 4011, 1006]) {
      const { peer, closes } = fakePeer();
      const ws = webSocketConnection(peer);
      const { target, tunnel } = await stuck(ws);
      ws.closed(code, "boom");
      const result = await within(2_000, `the tunnel's end after ${code}`, tunnel);
      assert.deepEqual(target.ends, ["abort"], String(code));
      assert.deepEqual(closes, [], "nothing sent back on a closed socket");
      assert.equal(result.end, "error");
      assert.match(String(result.error), new RegExp(`closed by the peer with ${code} \\(boom\\)`));
    }
  });

  it("a WHATWG socket's error and close: the same", async () => {
    const ws = new FakeWebSocket();
    ws.readyState = 1;
    const conn = fromWebSocket(ws);
    const target = stuckTarget();
    const tunnel = relay(conn, target.conn, {});
    ws.receive(new Uint8Array(10).buffer);
    await sleep(20);
    assert.equal(target.writes, 1);
    ws.readyState = 3;
    ws.dispatchEvent(new Event("error"));
    ws.dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "" }));
    const result = await within(2_000, "the tunnel's end", tunnel);
    assert.deepEqual(target.ends, ["abort"]);
    assert.equal(result.end, "error");
    assert.match(String(result.error), /WebSocket error/);
  });

  it("the bridge's side (the WebSocket upstream, a local client that reads nothing): the client is reset at once", async () => {
    const { peer } = fakePeer();
    const ws = webSocketConnection(peer);
    const client = stuckTarget();
    const tunnel = relay(client.conn, ws, {});
    ws.message(new Uint8Array(100)); // a download the client does not take
    ws.message(new Uint8Array(100)); // and one that waits behind it
    await sleep(20);
    assert.equal(client.writes, 1);
    ws.closed(1011, "the edge's target reset");
    const result = await within(2_000, "the tunnel's end", tunnel);
    assert.deepEqual(client.ends, ["abort"], "a reset, not a FIN after the queued bytes");
    assert.equal(client.writes, 1, "what was queued is not passed on");
    assert.equal(result.end, "error");
    assert.match(String(result.error), /closed by the peer with 1011/);
  });

  it("the peer's 1000 is no failure: the tunnel goes on (the target gets what was queued)", async () => {
    const { peer } = fakePeer();
    const ws = webSocketConnection(peer);
    const { target, tunnel } = await stuck(ws);
    ws.message(new Uint8Array(0));
    ws.closed(1000, "");
    await sleep(50);
    assert.deepEqual(target.ends, [], "still writing to the target");
    target.fail();
    await within(2_000, "the tunnel's end", tunnel);
  });
});

describe("WebSocket ingress: the token", () => {
  const upgrade = { upgrade: "websocket" } as Record<string, string>;
  const ask = (headers: Record<string, string>, token?: string) =>
    admitWebSocket((name) => ({ ...upgrade, ...headers })[name] ?? null, token);

  it("the subprotocol form: edgesocks.token. and unpadded base64url of the UTF-8 bytes", () => {
    assert.equal(tokenProtocol("s3cret"), "edgesocks.token.czNjcmV0");
    assert.equal(tokenProtocol("\u00ff?>"), "edgesocks.token.w78_Pg");
  });

  it("Authorization: Bearer or the subprotocol, right token: admitted; edgesocks selected when offered", async () => {
    assert.deepEqual(await ask({ authorization: "Bearer s3cret" }, "s3cret"), {
      ok: true,
      protocol: undefined,
    });
    assert.deepEqual(await ask({ authorization: "bearer  s3cret " }, "s3cret"), {
      ok: true,
      protocol: undefined,
    });
    assert.deepEqual(
      await ask({ "sec-websocket-protocol": `edgesocks, ${tokenProtocol("s3cret")}` }, "s3cret"),
      { ok: true, protocol: "edgesocks" },
    );
    assert.deepEqual(await ask({ "sec-websocket-protocol": tokenProtocol("\u00ff?>") }, "\u00ff?>"), {
      ok: true,
      protocol: undefined,
    });
  });

  it("a wrong or missing token: 401", async () => {
    const wrong = { ok: false, status: 401, reason: "wrong token" };
    const missing = { ok: false, status: 401, reason: "missing token" };
    assert.deepEqual(await ask({ authorization: "Bearer s3cre" }, "s3cret"), wrong);
    assert.deepEqual(await ask({ authorization: "Bearer s3cretx" }, "s3cret"), wrong);
    assert.deepEqual(
      await ask({ "sec-websocket-protocol": `edgesocks, ${tokenProtocol("x")}` }, "s3cret"),
      wrong,
    );
    assert.deepEqual(await ask({}, "s3cret"), missing);
    assert.deepEqual(await ask({ authorization: "Basic czNjcmV0" }, "s3cret"), missing);
    assert.deepEqual(await ask({ "sec-websocket-protocol": "edgesocks.token.***" }, "s3cret"), missing);
  });

  it("no token configured: every upgrade is admitted; not an upgrade: 426", async () => {
    assert.deepEqual(await ask({}), { ok: true, protocol: undefined });
    assert.deepEqual(await admitWebSocket(() => null, "s3cret"), {
      ok: false,
      status: 426,
      reason: "a WebSocket upgrade is required",
    });
  });

  it("the refusal: status, WWW-Authenticate for 401, a text body", () => {
    assert.deepEqual(refusalResponse({ status: 401, reason: "wrong token" }), {
      status: 401,
      headers: {
        "content-type": "text/plain; charset=utf-8",
        "www-authenticate": 'Bearer realm="edgesocks"',
      },
      body: "wrong token\n",
    });
  });
});

describe("RFC 6455 frames (the Deno edge and bridge)", () => {
  const mask = hex("37 fa 21 3d");

  it("encodes binary frames with 7-, 16- and 64-bit lengths; a client's masked (RFC 6455 5.7)", () => {
    assert.equal(toHex(encodeFrame(Opcode.Binary, hex("01 02"))), "82 02 01 02");
    assert.equal(toHex(encodeFrame(Opcode.Binary, new Uint8Array(0))), "82 00");
    assert.equal(toHex(encodeFrame(Opcode.Binary, new Uint8Array(256)).subarray(0, 4)), "82 7e 01 00");
    assert.equal(
      toHex(encodeFrame(Opcode.Binary, new Uint8Array(65536)).subarray(0, 10)),
      "82 7f 00 00 00 00 00 01 00 00",
    );
    // The RFC's example: a masked "Hello".
    assert.equal(toHex(encodeFrame(Opcode.Text, hex("'Hello'"), mask)), "81 85 37 fa 21 3d 7f 9f 4d 51 58");
  });

  it("decodes a server's frames in any chunking: data as it arrives, end, an empty message", () => {
    const wire = new Uint8Array([...encodeFrame(Opcode.Binary, hex("'abcdef'")), 0x82, 0x00]);
    for (let cut = 1; cut < wire.length; cut++) {
      const d = new FrameDecoder();
      const events = [...d.feed(wire.subarray(0, cut)), ...d.feed(wire.subarray(cut))];
      const data = events.filter((e) => e.kind === "data").map((e) => new TextDecoder().decode(e.bytes)).join(
        "",
      );
      assert.equal(data, "abcdef", `cut at ${cut}`);
      assert.deepEqual(events.filter((e) => e.kind === "end"), [{ kind: "end", empty: false }, {
        kind: "end",
        empty: true,
      }]);
    }
  });

  it("a client's frames must be masked and are unmasked; fragments join one message", () => {
    const d = new FrameDecoder({ masked: true });
    // "Hel" in a non-final binary frame, "lo" in a final continuation, each masked.
    const first = encodeFrame(Opcode.Binary, hex("'Hel'"), mask);
    first[0] &= 0x7f;
    const second = encodeFrame(Opcode.Continuation, hex("'lo'"), mask);
    const events = d.feed(new Uint8Array([...first, ...second]));
    assert.deepEqual(events.map((e) => e.kind === "data" ? toHex(e.bytes) : e.kind), [
      "48 65 6c",
      "6c 6f",
      "end",
    ]);
    assert.deepEqual(new FrameDecoder({ masked: true }).feed(hex("82 01 41")), [
      { kind: "error", reason: "unmasked frame from a client" },
    ]);
    assert.deepEqual(new FrameDecoder().feed(first), [{
      kind: "error",
      reason: "masked frame from a server",
    }]);
  });

  it("control frames: ping with its payload, close with code and reason; text is refused", () => {
    const d = new FrameDecoder();
    assert.deepEqual(d.feed(hex("89 02 'hi' 88 05 03 e8 'bye'")), [
      { kind: "ping", payload: hex("'hi'") },
      { kind: "close", code: 1000, reason: "bye" },
    ]);
    assert.deepEqual(new FrameDecoder().feed(hex("88 00")), [{ kind: "close", code: 1005, reason: "" }]);
    assert.deepEqual(new FrameDecoder().feed(hex("81 01 41")), [{ kind: "text" }, {
      kind: "error",
      reason: "text message",
    }]);
    assert.deepEqual(new FrameDecoder().feed(hex("c2 00")), [{ kind: "error", reason: "reserved bits set" }]);
  });

  it("the Deno socket's reads grow from 4 KiB while they fill, to 64 KiB, and shrink back: an idle one holds 4 KiB", async () => {
    // A client's masked frames, 300 of 2,000 bytes, then a trickle of small ones, then nothing (idle).
    const sent = Array.from({ length: 300 }, (_, i) => new Uint8Array(2_000).fill(i));
    const trickle = Array.from({ length: 6 }, (_, i) => new Uint8Array(10).fill(200 + i));
    const mask = Uint8Array.of(1, 2, 3, 4);
    const bulk = concat(...sent.map((m) => encodeFrame(Opcode.Binary, m, mask)));
    const small = trickle.map((m) => encodeFrame(Opcode.Binary, m, mask));
    const sizes: number[] = [];
    let at = 0;
    const conn = {
      read(buf: Uint8Array): Promise<number | null> {
        sizes.push(buf.length);
        if (at < bulk.length) {
          const n = Math.min(buf.length, bulk.length - at);
          buf.set(bulk.subarray(at, at + n));
          at += n;
          return Promise.resolve(n);
        }
        const next = small.shift();
        if (!next) return new Promise<never>(() => {}); // idle from here on
        buf.set(next);
        return Promise.resolve(next.length);
      },
      write: (b: Uint8Array) => Promise.resolve(b.length),
      close() {},
    };
    const ws = new DenoFramedWebSocket("server");
    const got: Uint8Array[] = [];
    ws.addEventListener("message", (e) => got.push((e as MessageEvent).data));
    ws.attach(conn as unknown as Deno.Conn, new Uint8Array(0));
    // (A frame split over two reads comes out as two pieces: the bytes are what counts.)
    const want = concat(...sent, ...trickle);
    const length = () => got.reduce((n, m) => n + m.length, 0);
    await within(
      2_000,
      "every byte",
      (async () => {
        while (length() < want.length) await sleep(1);
      })(),
    );
    assert.deepEqual(sizes.slice(0, 5), [4096, 8192, 16384, 32768, 65536], "doubling while reads fill");
    assert.equal(Math.max(...sizes), 65536);
    assert.equal(sizes.at(-1), 4096, "the read an idle socket waits on");
    const all = concat(...got);
    assert.equal(all.length, want.length);
    assert.ok(all.every((b, i) => b === want[i]), "every byte as sent, in order");
  });

  it("a client's Sec-WebSocket-Key is 16 random bytes in base64, a new one each time (RFC 6455 4.1)", () => {
    // More keys than the random pool they come from holds (4 KiB): each refill gives new bytes.
    const keys = Array.from({ length: 600 }, () => webSocketKey());
    for (const key of keys) {
      assert.match(key, /^[A-Za-z0-9+/]{22}==$/, key);
      assert.equal(atob(key).length, 16);
    }
    assert.equal(new Set(keys).size, keys.length, "no key twice");
  });

  it("masks any length at any alignment as the RFC says: byte i XOR mask[i % 4]", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300, size: "max" }),
        fc.uint8Array({ minLength: 4, maxLength: 4 }),
        fc.integer({ min: 0, max: 7 }),
        (payload, m, offset) => {
          // The payload at any offset of its buffer, and a frame written into a buffer at any offset.
          const at = new Uint8Array(payload.length + offset).subarray(offset);
          at.set(payload);
          const into = new Uint8Array(frameSize(payload.length, true) + offset).subarray(offset);
          const frame = encodeFrame(Opcode.Binary, at, m, into);
          const head = frame.length - payload.length;
          const expected = Array.from(payload, (b, i) => b ^ m[i % 4]);
          assert.deepEqual(Array.from(frame.subarray(head)), expected);
          assert.deepEqual(Array.from(frame.subarray(head - 4, head)), Array.from(m));
          assert.deepEqual(at, payload, "the payload is left as it was");
          const events = new FrameDecoder({ masked: true }).feed(frame.slice());
          const data = events.flatMap((e) => e.kind === "data" ? Array.from(e.bytes) : []);
          assert.deepEqual(data, Array.from(payload));
        },
      ),
      { numRuns: 500, seed: 6455 },
    );
  });

  it("encodes into a buffer it is given when it is big enough, else into a new one", () => {
    const into = new Uint8Array(16);
    const frame = encodeFrame(Opcode.Binary, hex("01 02 03"), undefined, into);
    assert.equal(frame.buffer, into.buffer);
    assert.equal(toHex(into.subarray(0, 5)), "82 03 01 02 03");
    const big = encodeFrame(Opcode.Binary, new Uint8Array(20), undefined, into);
    assert.notEqual(big.buffer, into.buffer);
    assert.equal(big.length, frameSize(20, false));
  });

  it("an owned chunk's data comes out as views of it, unmasked in place; another's as copies", () => {
    const frame = encodeFrame(Opcode.Binary, hex("'abcdef'"), mask);
    const owned = frame.slice();
    const [view] = new FrameDecoder({ masked: true }).feed(owned, true);
    assert.equal(view.kind === "data" && view.bytes.buffer, owned.buffer);
    assert.equal(view.kind === "data" && new TextDecoder().decode(view.bytes), "abcdef");
    // A small part of an owned chunk is copied: a view would hold all of it while queued.
    const pings = Array.from({ length: 20 }, () => [...encodeFrame(Opcode.Ping, new Uint8Array(125), mask)])
      .flat();
    const mostlyPings = new Uint8Array([...encodeFrame(Opcode.Binary, hex("'x'"), mask), ...pings]);
    const [small] = new FrameDecoder({ masked: true }).feed(mostlyPings, true);
    assert.equal(small.kind === "data" && toHex(small.bytes), "78");
    assert.notEqual(small.kind === "data" && small.bytes.buffer, mostlyPings.buffer);
    const reused = frame.slice();
    const [copy] = new FrameDecoder({ masked: true }).feed(reused);
    reused.fill(0); // the reader reuses its buffer for the next read
    assert.equal(copy.kind === "data" && new TextDecoder().decode(copy.bytes), "abcdef");
    assert.deepEqual(reused.subarray(0, 2), new Uint8Array(2));
  });

  it("a framed socket reuses its frame buffer only once the frame before is written", () => {
    /** Records the frames written; their `written` callbacks run when the test says. */
    class Recorder extends FramedWebSocket {
      frames: { frame: Uint8Array; written?: () => void }[] = [];
      constructor() {
        super("server");
        this.readyState = 1;
      }
      protected override get attached() {
        return true;
      }
      protected override writeFrame(frame: Uint8Array, written?: () => void) {
        this.frames.push({ frame, written });
      }
    }
    const ws = new Recorder();
    const block = (byte: number) => new Uint8Array(32 * 1024).fill(byte);
    ws.send(block(1));
    ws.send(block(2)); // the first is not written yet: a buffer of its own
    ws.frames[0].written!();
    ws.send(block(3)); // the first's buffer is free again
    const [a, b, c] = ws.frames.map((f) => f.frame);
    assert.notEqual(b.buffer, a.buffer);
    assert.equal(c.buffer, a.buffer);
    const payloads = [b, c].map((f) =>
      new Set(new FrameDecoder().feed(f).flatMap((e) => e.kind === "data" ? [...e.bytes] : []))
    );
    assert.deepEqual(payloads.map((p) => [...p]), [[2], [3]]);
    // A late callback of a write that no longer holds the buffer does not free it for the next.
    ws.frames[0].written!();
    ws.send(block(4));
    assert.notEqual(ws.frames[3].frame.buffer, c.buffer);
  });

  it("a read lent out as messages is reclaimed once every one of them is handed back, not before", () => {
    class Reader extends FramedWebSocket {
      messages: Uint8Array[] = [];
      reclaimed: ArrayBufferLike[] = [];
      constructor() {
        super("client");
        this.readyState = 1;
        this.addEventListener("message", (e) => this.messages.push((e as MessageEvent).data));
      }
      feed(bytes: Uint8Array, owned: boolean) {
        this.received(bytes, owned);
      }
      protected override reclaim(buffer: ArrayBufferLike) {
        this.reclaimed.push(buffer);
      }
      protected override writeFrame() {} // the pong
    }
    const ws = new Reader();
    const read = new Uint8Array([
      ...encodeFrame(Opcode.Binary, hex("'ab'")),
      ...encodeFrame(Opcode.Binary, hex("'cd'")),
    ]);
    ws.feed(read, true);
    const [ab, cd] = ws.messages;
    assert.deepEqual([ab.buffer, cd.buffer], [read.buffer, read.buffer]);
    ws.recycle(ab.subarray(1)); // a part of one: ignored
    ws.recycle(ab);
    ws.recycle(ab); // twice: ignored
    assert.deepEqual(ws.reclaimed, []);
    ws.recycle(cd);
    assert.deepEqual(ws.reclaimed, [read.buffer]);
    // A read that is not the socket's own is copied from, and never reclaimed.
    const other = encodeFrame(Opcode.Binary, hex("'ef'"));
    ws.feed(other, false);
    ws.recycle(ws.messages[2]);
    assert.notEqual(ws.messages[2].buffer, other.buffer);
    assert.deepEqual(ws.reclaimed, [read.buffer]);
    // An owned read that lends out nothing (a ping) is reclaimed at once.
    const ping = encodeFrame(Opcode.Ping, hex("'hi'"));
    ws.feed(ping, true);
    assert.deepEqual(ws.reclaimed, [read.buffer, ping.buffer]);
  });
});
