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
  Opcode,
} from "../core/websocket_frames.ts";

/** How long a closing handshake may wait for the peer's close frame. */
export const CLOSE_WAIT_MS = 5_000;

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

  /** Writes one encoded frame, in order. */
  protected writeFrame(_frame: Uint8Array): void {
    throw new TypeError("no socket attached");
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

  /** Feeds bytes read from the socket. */
  protected received(bytes: Uint8Array): void {
    this.#handle(this.#decoder.feed(bytes));
  }

  #mask(): Uint8Array | undefined {
    return this.isClient ? crypto.getRandomValues(new Uint8Array(4)) : undefined;
  }

  #handle(events: FrameEvent[]): void {
    for (const e of events) {
      if (this.#done) return;
      if (e.kind === "data") this.emit("message", { data: e.bytes.buffer });
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

  send(data: Uint8Array): void {
    if (this.readyState !== 1 || !this.attached) throw new Error("WebSocket is not open");
    this.writeFrame(encodeFrame(Opcode.Binary, data, this.#mask()));
  }

  close(code = 1000, reason = ""): void {
    if (this.#closeSent || this.#done) return;
    this.#closeSent = true;
    if (!this.attached || this.readyState !== 1) return this.fail(new Error("closed before it opened"));
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

  /** Ends it as failed: `error`, then `close` with 1006. */
  fail(error: unknown): void {
    if (this.#done) return;
    this.emit("error", { message: error instanceof Error ? error.message : String(error) });
    this.#finish(1006, "");
  }
}
