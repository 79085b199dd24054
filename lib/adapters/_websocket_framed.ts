/**
 * The WHATWG-shaped WebSocket that the Deno and Node adapters put over an
 * upgraded socket with the framing of `core/websocket_frames.ts`: events,
 * message dispatch, ping answers and the closing handshake, once. Either end
 * (a client masks what it sends; a server expects it masked). Each runtime
 * subclass says how a frame is written, how reading goes on and how the
 * socket is shut.
 *
 * @module
 */
import type { WebSocketLike } from "../runtime.ts";
import {
  closePayload,
  encodeFrame,
  FrameDecoder,
  type FrameEvent,
  frameSize,
  Opcode,
} from "../core/websocket_frames.ts";

/** How long a closing handshake may wait for the peer's close frame. */
export const CLOSE_WAIT_MS = 5_000;

/**
 * Data frames from this size up to {@linkcode SCRATCH_MAX} are encoded into a buffer the socket keeps and
 * reuses once the frame before is written; smaller ones (and bigger ones) get an array each, and let the
 * kept one go, so a tunnel idle after a transfer holds none. A fresh array for every frame, and the
 * collections that freed them, were most of the CPU the framing cost (measured, Node: 0.4–0.55 s of
 * garbage collection per GiB each side).
 */
const SCRATCH_MIN = 16 * 1024;
const SCRATCH_MAX = 256 * 1024;
/** Reads lent out as views that a socket follows (see `recycle`). */
const LENT_MAX = 64;

/**
 * Masks for a client's frames, drawn from the system's random source 1,024 at a time: one
 * `getRandomValues` call per frame was 5% of a Node bridge's CPU uploading.
 */
const MASKS = new Uint8Array(4096);
let maskAt = MASKS.length;
function nextMask(): Uint8Array {
  if (maskAt === MASKS.length) {
    crypto.getRandomValues(MASKS);
    maskAt = 0;
  }
  return MASKS.subarray(maskAt, maskAt += 4);
}

/**
 * A client's `Sec-WebSocket-Key` nonce, 16 random bytes in base64: four masks' worth of the pool (a call
 * to the random source per connection was 2% of a Node bridge's CPU opening tunnels).
 */
export function webSocketKey(): string {
  let binary = "";
  for (let i = 0; i < 4; i++) for (const b of nextMask()) binary += String.fromCharCode(b);
  return btoa(binary);
}

type Listen = (event: Event) => void;

/** What the runtime subclasses fill in; the rest is the same on every socket. */
export class FramedWebSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 0;
  protocol = "";
  /** The client end masks what it sends and emits `open` once upgraded. */
  protected readonly isClient: boolean;
  readonly #listeners = new Map<string, Listen[]>();
  readonly #decoder: FrameDecoder;
  #closeSent = false;
  #done = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #scratch: Uint8Array | undefined;
  /**
   * Reads whose messages went out as views, oldest first, each with the views still out: once each of
   * them came back (`recycle`), the read's memory is the subclass's again ({@linkcode reclaim}). At most
   * {@linkcode LENT_MAX} are followed; views nobody hands back (the SOCKS handshake's) are forgotten.
   */
  #lent: { buffer: ArrayBufferLike; views: Uint8Array[] }[] = [];
  /** Which write holds the scratch buffer (0: none); a later write's callback must not free it. */
  #scratchWrite = 0;
  #writes = 0;

  constructor(role: "client" | "server") {
    this.isClient = role === "client";
    this.#decoder = new FrameDecoder({ masked: !this.isClient });
  }

  /** Bytes written and not yet handed to the network (the subclass knows). */
  get bufferedAmount(): number {
    return 0;
  }

  /** Whether a socket is attached to write frames to. */
  protected get attached(): boolean {
    return false;
  }

  /**
   * Writes one encoded frame, in order; `written`, if given, is called once the socket no longer needs the
   * frame's memory (all of it is in the kernel), or never if the socket fails first.
   */
  protected writeFrame(_frame: Uint8Array, _written?: () => void): void {
    throw new TypeError("no socket attached");
  }

  /**
   * The `bufferedAmount` above which a writer should wait: 0, the frames it writes being encoded into one
   * buffer it reuses (the ingress waits for each to be written, as a TCP relay does).
   */
  get writeHighWater(): number {
    return 0;
  }

  /** Reads on (paused or not) until the peer's close frame arrives. */
  protected readOn(): void {}

  /** Closes the socket once the frames written so far are out (or drops the attempt to connect). */
  protected shut(): void {}

  addEventListener(type: string, listener: Listen): void {
    const list = this.#listeners.get(type);
    if (list) list.push(listener);
    else this.#listeners.set(type, [listener]);
  }

  protected emit(type: string, event: Record<string, unknown>): void {
    for (const listener of this.#listeners.get(type) ?? []) listener(event as unknown as Event);
  }

  /** Whether it has ended (closed or failed). */
  protected get done(): boolean {
    return this.#done;
  }

  /**
   * Feeds bytes read from the socket; `owned`: nothing else reads or reuses their memory, so messages
   * are views of it (unmasked in place) instead of copies.
   */
  protected received(bytes: Uint8Array, owned = false): void {
    const events = this.#decoder.feed(bytes, owned);
    if (owned) {
      const views: Uint8Array[] = [];
      for (const e of events) if (e.kind === "data" && e.bytes.buffer === bytes.buffer) views.push(e.bytes);
      if (views.length > 0) {
        this.#lent.push({ buffer: bytes.buffer, views });
        if (this.#lent.length > LENT_MAX) this.#lent.shift();
      }
    }
    this.#handle(events);
    // Nothing of it went out as a view (control frames, small pieces: copies): its memory is free now.
    if (owned && this.#lent.at(-1)?.buffer !== bytes.buffer) this.reclaim(bytes.buffer);
  }

  /**
   * A message's bytes (a view `message` gave), handed back by the ingress once the relay is done with
   * them. Anything else (a part of one, a copy) is ignored.
   */
  recycle(view: Uint8Array): void {
    const lent = this.#lent;
    for (let i = 0; i < lent.length; i++) {
      const at = lent[i].views.indexOf(view);
      if (at < 0) continue;
      lent[i].views.splice(at, 1);
      if (lent[i].views.length > 0) return;
      const { buffer } = lent[i];
      // Older reads still out were read by someone who does not hand back: forget them.
      lent.splice(0, i + 1);
      return this.reclaim(buffer);
    }
  }

  /** A read's memory that no message uses any more: read into it again, or free it. */
  protected reclaim(_buffer: ArrayBufferLike): void {}

  #mask(): Uint8Array | undefined {
    return this.isClient ? nextMask() : undefined;
  }

  #handle(events: FrameEvent[]): void {
    for (const e of events) {
      if (this.#done) return;
      if (e.kind === "data") this.emit("message", { data: e.bytes });
      else if (e.kind === "end") {
        if (e.empty) this.emit("message", { data: new ArrayBuffer(0) });
      } else if (e.kind === "text") this.emit("message", { data: "" });
      else if (e.kind === "ping") this.writeFrame(encodeFrame(Opcode.Pong, e.payload, this.#mask()));
      else if (e.kind === "close") {
        if (!this.#closeSent) {
          this.#closeSent = true;
          const code = e.code === 1005 ? 1000 : e.code;
          this.writeFrame(encodeFrame(Opcode.Close, closePayload(code, ""), this.#mask()));
        }
        this.#finish(e.code, e.reason);
      } else if (e.kind === "error") {
        this.close(1002, e.reason);
        this.fail(new Error(`bad frame: ${e.reason}`));
      }
    }
  }

  /** Sends one binary message; `data` is copied (into the frame), so the caller may reuse it at once. */
  send(data: Uint8Array): void {
    if (this.readyState !== 1 || !this.attached) throw new Error("WebSocket is not open");
    const size = frameSize(data.length, this.isClient);
    if (size < SCRATCH_MIN || size > SCRATCH_MAX) this.#scratch = undefined;
    else if (this.#scratchWrite === 0) {
      if (!this.#scratch || this.#scratch.length < size) this.#scratch = new Uint8Array(size);
      const frame = encodeFrame(Opcode.Binary, data, this.#mask(), this.#scratch);
      const write = this.#scratchWrite = ++this.#writes;
      this.writeFrame(frame, () => {
        if (this.#scratchWrite === write) this.#scratchWrite = 0;
      });
      return;
    }
    this.writeFrame(encodeFrame(Opcode.Binary, data, this.#mask()));
  }

  close(code = 1000, reason = ""): void {
    if (this.#closeSent || this.#done) return;
    this.#closeSent = true;
    if (!this.attached || this.readyState !== 1) return this.fail("closed before it opened");
    this.readyState = 2;
    this.writeFrame(encodeFrame(Opcode.Close, closePayload(code, reason), this.#mask()));
    this.readOn();
    this.#closeTimer = setTimeout(() => this.#finish(1006, "no close frame from the peer"), CLOSE_WAIT_MS);
  }

  #finish(code: number, reason: string): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#closeTimer);
    this.readyState = 3;
    // The close frame (ours or the echo) goes out before the socket closes.
    this.shut();
    this.emit("close", { code, reason });
  }

  /**
   * Ends it as failed: `error` (an Error, or just what to say: every connection ends, and an Error made
   * for one already closed cost its stack trace per tunnel), then `close` with 1006.
   */
  fail(error: unknown): void {
    if (this.#done) return;
    this.emit("error", { message: error instanceof Error ? error.message : String(error) });
    this.#finish(1006, "");
  }
}
