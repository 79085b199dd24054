/**
 * RFC 6455 framing, sans-IO, for the one WebSocket client edgesocks writes
 * itself (Deno's bridge: its WHATWG `WebSocket` cannot stop reading, so a
 * slow local reader could only be cut off). Binary payloads stream out as
 * they arrive, whatever the frame size; only control frames are buffered.
 *
 * @module
 */

/** Frame opcodes (RFC 6455 section 5.2). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** What {@linkcode FrameDecoder.feed} reports, in order. */
export type FrameEvent =
  | { kind: "data"; bytes: Uint8Array }
  | { kind: "end"; empty: boolean }
  | { kind: "text" }
  | { kind: "ping"; payload: Uint8Array }
  | { kind: "pong" }
  | { kind: "close"; code: number; reason: string }
  | { kind: "error"; reason: string };

/**
 * Bytes a frame of `n` payload bytes takes on the wire: its header (2 to
 * 14 bytes, with the mask when `masked`) and the payload.
 *
 * @example
 * ```ts
 * frameSize(65536, true); // 65550: 2 + 8 length bytes + 4 mask bytes + the payload
 * ```
 */
export function frameSize(n: number, masked: boolean): number {
  return 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + (masked ? 4 : 0) + n;
}

/**
 * Encodes one frame with FIN set; `mask` (4 bytes, a client's) masks the payload.
 * `into`, when it is big enough ({@linkcode frameSize}), is written instead of a new array and the frame
 * is a view of its start.
 *
 * @example
 * ```ts
 * encodeFrame(Opcode.Binary, new Uint8Array([1, 2])); // 82 02 01 02
 * ```
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  mask?: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = 2 + lengthBytes + (mask ? 4 : 0);
  const out = into && into.length >= head + n ? into.subarray(0, head + n) : new Uint8Array(head + n);
  out[0] = 0x80 | opcode;
  out[1] = (mask ? 0x80 : 0) | (n < 126 ? n : n < 65536 ? 126 : 127);
  if (lengthBytes === 2) out[2] = n >> 8, out[3] = n & 0xff;
  else if (lengthBytes === 8) {
    const hi = Math.floor(n / 2 ** 32);
    for (let i = 0; i < 4; i++) out[2 + i] = (hi >>> (24 - 8 * i)) & 0xff;
    for (let i = 0; i < 4; i++) out[6 + i] = (n >>> (24 - 8 * i)) & 0xff;
  }
  out.set(payload, head);
  if (!mask) return out;
  out.set(mask, head - 4);
  xorMask(out, head, n, mask, 0);
  return out;
}

/**
 * XORs `n` bytes of `buf` from `at` with `mask`, starting at mask offset `phase`: byte by byte up to a
 * 4-byte boundary of the buffer, then a 32-bit word at a time, four words a turn (signed words: V8 keeps
 * them in registers, unsigned ones above 2^31 it does not; measured, 1.7–2.2× the speed of a plain
 * Uint32Array loop on Node and Deno).
 */
function xorMask(buf: Uint8Array, at: number, n: number, mask: Uint8Array, phase: number): void {
  let i = 0;
  while (i < n && ((buf.byteOffset + at + i) & 3) !== 0) buf[at + i] ^= mask[(phase + i++) & 3];
  const words = (n - i) >> 2;
  if (words > 0) {
    const m = new Uint8Array(4);
    for (let k = 0; k < 4; k++) m[k] = mask[(phase + i + k) & 3];
    const key = new Int32Array(m.buffer)[0];
    const view = new Int32Array(buf.buffer, buf.byteOffset + at + i, words);
    const four = words & ~3;
    let w = 0;
    for (; w < four; w += 4) {
      view[w] ^= key;
      view[w + 1] ^= key;
      view[w + 2] ^= key;
      view[w + 3] ^= key;
    }
    for (; w < words; w++) view[w] ^= key;
    i += words * 4;
  }
  while (i < n) buf[at + i] ^= mask[(phase + i++) & 3];
}

/**
 * Decodes frames: a client's (`masked`: each must be masked, and is
 * unmasked here) or a server's (none may be).
 * Payloads of binary messages come out as `data` pieces, then `end` when the
 * message is complete (`empty`: it had no bytes at all).
 *
 * @example
 * ```ts
 * const d = new FrameDecoder();
 * d.feed(new Uint8Array([0x82, 0x01, 0x41])); // [{ kind: "data", bytes: [0x41] }, { kind: "end", empty: false }]
 * ```
 */
export class FrameDecoder {
  readonly #masked: boolean;
  #mask = new Uint8Array(4);
  #phase = 0;
  #head = new Uint8Array(14);
  #headLength = 0;
  #remaining = 0; // payload bytes of the current frame still to come
  #inFrame = false;
  #opcode = 0;
  #fin = false;
  #control: Uint8Array | undefined;
  #controlAt = 0;
  #messageBytes = 0;
  #inMessage = false;
  #failed = false;

  /** `masked`: frames come from a client, masked. */
  constructor(options: { masked?: boolean } = {}) {
    this.#masked = options.masked === true;
  }

  /**
   * Feeds bytes; returns what they completed. `owned`: the chunk is the decoder's to keep and change (no
   * one reads or reuses its memory after this call), so data of a quarter of it or more comes out as
   * views of it, unmasked in place, instead of copies.
   */
  feed(chunk: Uint8Array, owned = false): FrameEvent[] {
    const out: FrameEvent[] = [];
    let at = 0;
    while (at < chunk.length && !this.#failed) {
      if (!this.#inFrame) {
        this.#head[this.#headLength++] = chunk[at++];
        const need = this.#headNeeded();
        if (need < 0) {
          return this.#fail(
            out,
            this.#masked ? "unmasked frame from a client" : "masked frame from a server",
          );
        }
        if (this.#headLength < need) continue;
        const error = this.#startFrame(out);
        if (error) return this.#fail(out, error);
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - at);
      // A view of an owned chunk, when it is a quarter of it at least; else a copy with a buffer of its own
      // (the caller may reuse the chunk's). A small view would hold the whole chunk: a peer sending a byte
      // of data and pings for the rest of every read would pin 64 KiB per byte queued.
      let piece: Uint8Array;
      if (owned && take * 4 >= chunk.length) piece = chunk.subarray(at, at + take);
      else {
        piece = new Uint8Array(take);
        piece.set(chunk.subarray(at, at + take));
      }
      at += take;
      if (this.#masked && take > 0) {
        xorMask(piece, 0, take, this.#mask, this.#phase);
        this.#phase = (this.#phase + take) & 3;
      }
      this.#remaining -= take;
      if (this.#control) {
        this.#control.set(piece, this.#controlAt);
        this.#controlAt += take;
      } else if (take > 0) {
        this.#messageBytes += take;
        out.push({ kind: "data", bytes: piece });
      }
      if (this.#remaining === 0) this.#endFrame(out);
    }
    return out;
  }

  #fail(out: FrameEvent[], reason: string): FrameEvent[] {
    this.#failed = true;
    out.push({ kind: "error", reason });
    return out;
  }

  /** Header bytes this frame needs (known after byte 2); −1 for a frame masked the wrong way. */
  #headNeeded(): number {
    if (this.#headLength < 2) return 2;
    if (((this.#head[1] & 0x80) !== 0) !== this.#masked) return -1;
    const len = this.#head[1] & 0x7f;
    return (len === 126 ? 4 : len === 127 ? 10 : 2) + (this.#masked ? 4 : 0);
  }

  #startFrame(out: FrameEvent[]): string | undefined {
    const b0 = this.#head[0];
    const len7 = this.#head[1] & 0x7f;
    let n = len7;
    if (len7 === 126) n = (this.#head[2] << 8) | this.#head[3];
    else if (len7 === 127) {
      const hi = ((this.#head[2] << 24) | (this.#head[3] << 16) | (this.#head[4] << 8) | this.#head[5]) >>> 0;
      const lo = ((this.#head[6] << 24) | (this.#head[7] << 16) | (this.#head[8] << 8) | this.#head[9]) >>> 0;
      if (hi > 0x1fffff) return "frame too long";
      n = hi * 2 ** 32 + lo;
    }
    if (this.#masked) {
      this.#mask.set(this.#head.subarray(this.#headLength - 4, this.#headLength));
      this.#phase = 0;
    }
    this.#headLength = 0;
    if (b0 & 0x70) return "reserved bits set";
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    if (opcode >= 0x8) {
      if (!fin || n > 125) return "bad control frame";
      if (opcode !== Opcode.Close && opcode !== Opcode.Ping && opcode !== Opcode.Pong) {
        return "unknown opcode";
      }
      this.#control = new Uint8Array(n);
      this.#controlAt = 0;
    } else if (opcode === Opcode.Text) {
      out.push({ kind: "text" });
      return "text message";
    } else if (opcode === Opcode.Binary) {
      if (this.#inMessage) return "new message inside a fragmented one";
      this.#inMessage = true;
      this.#messageBytes = 0;
      this.#control = undefined;
    } else if (opcode === Opcode.Continuation) {
      if (!this.#inMessage) return "continuation outside a message";
      this.#control = undefined;
    } else return "unknown opcode";
    this.#opcode = opcode;
    this.#fin = fin;
    this.#remaining = n;
    this.#inFrame = true;
    if (n === 0) this.#endFrame(out);
    return undefined;
  }

  #endFrame(out: FrameEvent[]): void {
    this.#inFrame = false;
    const control = this.#control;
    if (control) {
      this.#control = undefined;
      if (this.#opcode === Opcode.Ping) out.push({ kind: "ping", payload: control });
      else if (this.#opcode === Opcode.Pong) out.push({ kind: "pong" });
      else {
        const code = control.length >= 2 ? (control[0] << 8) | control[1] : 1005;
        out.push({ kind: "close", code, reason: new TextDecoder().decode(control.subarray(2)) });
      }
      return;
    }
    if (this.#fin) {
      this.#inMessage = false;
      out.push({ kind: "end", empty: this.#messageBytes === 0 });
    }
  }
}

/** A close frame's payload: the code (big-endian) and up to 123 bytes of the reason in UTF-8. */
export function closePayload(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const out = new Uint8Array(2 + text.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}
