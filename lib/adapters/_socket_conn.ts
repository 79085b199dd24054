/**
 * The part of a {@linkcode ByteConnection} that Node's and Bun's sockets
 * share, both being event-driven (data, drain, end, close pushed at us)
 * where the contract is pulled (`read()`, `write()` resolving with
 * backpressure): the one-chunk-ahead reader, the write waiters, the FIN
 * queued behind them, the handover to a native relay, the cached addresses.
 * Each adapter subclasses it with what is truly its runtime's: how to pause,
 * resume, write, half-close, close and reset its socket, and feeds it its
 * socket's events from listeners shared by all its sockets.
 *
 * @module
 */
import type { ByteConnection, HostPort } from "../runtime.ts";
import { concatBytes } from "../core/bytes.ts";
import { unmapIPv4 } from "../core/replies.ts";

/** A pending `read()`. */
interface Reader {
  resolve: (chunk: Uint8Array | null) => void;
  reject: (error: Error) => void;
}

/**
 * A pending `write()` (or the FIN of `closeWrite()`): `rest` is what the
 * socket has not taken yet, empty once it took it all (a FIN's is empty from
 * the start). It resolves on a `drain` that leaves the socket ready for more.
 */
interface PendingWrite {
  rest: Uint8Array;
  resolve: () => void;
  reject: (error: Error) => void;
}

const EMPTY = new Uint8Array(0);

/**
 * A socket's address as a {@linkcode HostPort} (IPv4-mapped IPv6 shown as IPv4), when it has one.
 *
 * @example
 * ```ts
 * import { endpoint } from "./_socket_conn.ts";
 * endpoint("::ffff:127.0.0.1", 1080); // { host: "127.0.0.1", port: 1080 }
 * endpoint(undefined, undefined); // undefined: the socket is closed
 * ```
 */
export function endpoint(host: string | undefined, port: number | undefined): HostPort | undefined {
  return host && port !== undefined ? { host: unmapIPv4(host), port } : undefined;
}

/**
 * What {@linkcode SocketConnection.detach} hands a native relay besides the
 * socket: the bytes read but not consumed, whether the peer's FIN came, and
 * whether the socket is paused.
 *
 * @example
 * ```ts
 * import type { Handover } from "./_socket_conn.ts";
 * const nothingYet: Handover = { pending: null, eof: false, paused: false };
 * ```
 */
export interface Handover {
  /** Read from the socket, never read() by the driver: the relay sends it first. */
  pending: Uint8Array | null;
  /** The peer's FIN already came. */
  eof: boolean;
  /** The socket is paused (a chunk was waiting): the relay resumes it. */
  paused: boolean;
}

/**
 * A socket as a {@linkcode ByteConnection}, reading at most one chunk ahead
 * of `read()`: a chunk that comes with no read pending is kept and the socket
 * paused until the next `read()`. A socket is not paused while reads keep up
 * (each pause and resume costs a system call or stream machinery), only once
 * a chunk waits. The subclass provides the socket operations and calls the
 * `on…` methods from its socket's events.
 *
 * @example
 * ```ts
 * import { SocketConnection } from "./_socket_conn.ts";
 * // A socket that takes every byte at once and never needs a drain.
 * interface Raw {
 *   send(b: Uint8Array): void;
 *   pause(): void;
 *   resume(): void;
 *   fin(): void;
 *   close(): void;
 * }
 * class RawConnection extends SocketConnection {
 *   raw: Raw;
 *   constructor(raw: Raw) {
 *     super(false);
 *     this.raw = raw;
 *   }
 *   protected pauseSocket() {
 *     this.raw.pause();
 *   }
 *   protected resumeSocket() {
 *     this.raw.resume();
 *   }
 *   protected send(chunk: Uint8Array) {
 *     this.raw.send(chunk);
 *     return chunk.length;
 *   }
 *   protected shutdown() {
 *     this.raw.fin();
 *   }
 *   protected end() {
 *     this.raw.close();
 *     return false;
 *   }
 *   protected reset() {
 *     this.raw.close();
 *   }
 *   protected localEndpoint() {
 *     return undefined;
 *   }
 *   protected remoteEndpoint() {
 *     return undefined;
 *   }
 * }
 * ```
 */
export abstract class SocketConnection implements ByteConnection {
  #chunk: Uint8Array | null = null;
  #paused: boolean;
  #eof = false;
  #error: Error | null = null;
  #closed = false;
  #finQueued = false;
  #reader: Reader | null = null;
  #writes: PendingWrite[] = [];
  // Looked up when first asked (a system call or two each) and kept: the driver wants only the
  // client's remote and the upstream's local end.
  #local: HostPort | undefined | null = null;
  #remote: HostPort | undefined | null = null;

  /** `paused`: whether the socket starts paused (Node's accepted sockets do). */
  constructor(paused: boolean) {
    this.#paused = paused;
  }

  // -- what the runtime provides --

  /** Stops reading from the socket. */
  protected abstract pauseSocket(): void;
  /** Reads from the socket again. */
  protected abstract resumeSocket(): void;
  /**
   * Hands `chunk` to the socket: how many bytes of it the socket took (the
   * rest is offered again on `drain`), or -1 when the socket is closed.
   */
  protected abstract send(chunk: Uint8Array): number;
  /**
   * After a `send()` that took everything: whether the writer must still wait
   * for a `drain` (Node: its buffer is above the high-water mark).
   */
  protected backedUp(): boolean {
    return false;
  }
  /** Sends a FIN (everything written before it has gone to the socket); resolves when it is out. */
  protected abstract shutdown(): Promise<void> | void;
  /**
   * Closes both directions gracefully. Returns true when the writes still
   * waiting here are lost with it (they fail at once), false when the
   * socket still delivers them (they settle on its events).
   */
  protected abstract end(): boolean;
  /** Closes both directions with a reset where the runtime can. */
  protected abstract reset(): void;
  /** The socket's local address (asked once). */
  protected abstract localEndpoint(): HostPort | undefined;
  /** The socket's remote address (asked once). */
  protected abstract remoteEndpoint(): HostPort | undefined;

  // -- the socket's events, called by the adapter's shared listeners --

  /** Bytes came; `data` is ours to keep. */
  onData(data: Uint8Array): void {
    // After close() incoming bytes are dropped but still read, so unread data in the kernel does not turn
    // our FIN into a RST.
    if (this.#closed) return;
    const r = this.#reader;
    if (r) {
      this.#reader = null;
      r.resolve(data);
      return;
    }
    // Nobody is reading: hold one chunk (plus whatever the socket had already read) and stop reading.
    this.#chunk = this.#chunk ? concatBytes(this.#chunk, data) : data;
    if (!this.#paused) {
      this.#paused = true;
      this.pauseSocket();
    }
  }

  /** The socket can take more: finish the waiting writes in order, as far as it takes them. */
  onDrain(): void {
    while (this.#writes.length > 0) {
      const w = this.#writes[0];
      if (w.rest.length > 0) {
        const n = this.send(w.rest);
        if (n < 0) return this.#failWrites(this.#error ?? new Error("socket closed"));
        if (n < w.rest.length) {
          w.rest = w.rest.subarray(n);
          return;
        }
        w.rest = EMPTY;
        if (this.backedUp()) return;
      }
      this.#writes.shift();
      w.resolve();
    }
  }

  /** The peer's FIN came. */
  onEnd(): void {
    this.#eof = true;
    this.#settleReader();
  }

  /** The socket failed; a close follows. */
  onError(error: Error): void {
    this.#error ??= error;
    this.#settleReader();
    this.#failWrites(this.#error);
  }

  /** The socket closed, with `error` if it failed. */
  onClose(error?: Error): void {
    if (error) this.#error ??= error;
    this.#eof = true;
    this.#settleReader();
    // (Every socket closes: an Error, with its stack trace, only for writes still waiting.)
    if (this.#writes.length > 0) this.#failWrites(this.#error ?? new Error("socket closed"));
  }

  #settleReader() {
    const r = this.#reader;
    if (!r || this.#chunk) return;
    this.#reader = null;
    // A reset rejects, so the relay can tell it from a FIN; our own close() reads as the end.
    if (this.#error && !this.#closed) r.reject(this.#error);
    else r.resolve(null);
  }

  #failWrites(error: Error) {
    for (const w of this.#writes.splice(0)) w.reject(error);
  }

  // -- the handover to a native relay --

  /** True while nothing is in flight: the socket can be handed over. */
  get detachable(): boolean {
    const busy = this.#reader || this.#writes.length > 0 || this.#finQueued;
    return !(this.#closed || this.#error || busy);
  }

  /**
   * Gives the socket up (this connection is closed from then on) with the
   * bytes already read but not consumed. Only when `detachable`; the
   * subclass's `detach()` adds the socket and unhooks its listeners.
   */
  protected handOver(): Handover {
    this.#closed = true;
    const pending = this.#chunk;
    this.#chunk = null;
    return { pending, eof: this.#eof, paused: this.#paused };
  }

  // -- ByteConnection --

  /** Local end of the socket. */
  get localAddress(): HostPort | undefined {
    if (this.#local === null) this.#local = this.localEndpoint();
    return this.#local;
  }

  /** Remote end of the socket. */
  get remoteAddress(): HostPort | undefined {
    if (this.#remote === null) this.#remote = this.remoteEndpoint();
    return this.#remote;
  }

  /** The chunk in hand, or the next one, or `null` at the peer's FIN; rejects on a reset. */
  read(): Promise<Uint8Array | null> {
    const c = this.#chunk;
    if (c) {
      this.#chunk = null;
      return Promise.resolve(c);
    }
    if (this.#error && !this.#closed) return Promise.reject(this.#error);
    if (this.#eof || this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#reader = { resolve, reject };
      if (this.#paused) {
        this.#paused = false;
        this.resumeSocket();
      }
    });
  }

  /** Resolves once the socket took all of `chunk` and may take more (after a `drain` if need be). */
  write(chunk: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed || this.#finQueued) return Promise.reject(new Error("write after close"));
    let rest = chunk;
    if (this.#writes.length === 0) {
      const n = this.send(chunk);
      if (n < 0) return Promise.reject(new Error("socket closed"));
      if (n === chunk.length && !this.backedUp()) return Promise.resolve();
      rest = n === chunk.length ? EMPTY : chunk.subarray(n);
    }
    // What the socket did not take is copied: the caller may reuse its buffer once we resolve, and only
    // then do we write the rest.
    // (Uint8Array.prototype.slice: a Buffer's own slice() is a view, not a copy.)
    const kept = rest.length > 0 ? Uint8Array.prototype.slice.call(rest) : EMPTY;
    return new Promise((resolve, reject) => this.#writes.push({ rest: kept, resolve, reject }));
  }

  /** Sends a FIN after the waiting writes; reading goes on. */
  closeWrite(): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed || this.#finQueued) return Promise.resolve();
    this.#finQueued = true;
    if (this.#writes.length === 0) return Promise.resolve(this.shutdown());
    return new Promise((resolve, reject) =>
      this.#writes.push({ rest: EMPTY, resolve: () => resolve(this.shutdown()), reject })
    );
  }

  /** Closes both directions, gracefully: what the socket took is still delivered, then a FIN. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunk = null;
    const lost = this.end();
    this.#settleReader();
    if (lost) this.#failWrites(new Error("socket closed"));
  }

  /** Closes both directions with a reset, so the peer learns the tunnel failed. */
  abort(): void {
    this.#closed = true;
    this.#chunk = null;
    this.reset();
    this.#settleReader();
    this.#failWrites(new Error("connection aborted"));
  }

  /** True once closed here and the peer's FIN came: nothing is left to reset. */
  protected get finished(): boolean {
    return this.#closed && this.#eof;
  }
}
