/**
 * The WebSocket ingress at the byte level: messages in, bytes out, FIN as an
 * empty binary message, close codes, backpressure bounds and the token check,
 * against fake sockets (no network).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  admitWebSocket,
  fromWebSocket,
  refusalResponse,
  tokenProtocol,
  webSocketConnection,
  type WebSocketLike,
  type WebSocketPeer,
} from "../mod.ts";
import { encodeFrame, FrameDecoder, Opcode } from "../lib/core/websocket_frames.ts";
import { hex, toHex } from "./_hex.ts";
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

  it("codes a browser-like socket refuses go out as 4000 + (code - 1000)", () => {
    const ws = new FakeWebSocket();
    ws.readyState = 1;
    const conn = fromWebSocket(ws);
    conn.abort!();
    assert.deepEqual(ws.closes, [4011]);
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
});
