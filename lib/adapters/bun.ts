/**
 * The Bun adapter: TCP through Bun's native `Bun.listen` / `Bun.connect`
 * sockets, DNS through `node:dns`.
 *
 * Traps it is built around (measured on Bun 1.4): `write()` is unbuffered
 * and may take only part of a chunk, so the rest is kept and finished on
 * `drain`; `data` buffers are reused, so chunks are copied; `end()` closes
 * the whole socket even with `allowHalfOpen` (oven-sh/bun#35947), so a FIN
 * is sent with `shutdown()`; once both sides have sent their FIN, Bun reports
 * `close` without `end`.
 *
 * The file never touches `Bun` at module top level, so importing it under
 * another runtime does not throw.
 *
 * @module
 */
import type { ByteConnection, DialOptions, HostPort, Listener, RuntimeAdapter } from "../connection.ts";
import { SocksError } from "../core/errors.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { ReplyCode } from "../core/wire.ts";
import { CONNECT_ERRORS, nameServerResolver, systemResolver } from "./_node_dns.ts";

/** The part of Bun's socket API used here (Bun's own types are not available to `deno check`). */
interface BunSocket {
  data: BunConnection | undefined;
  write(data: Uint8Array): number;
  shutdown(halfClose?: boolean): void;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay?(noDelay?: boolean): boolean;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort: number;
}

interface SocketHandlers {
  open?(socket: BunSocket): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
  connectError?(socket: BunSocket, error: Error): void;
}

interface BunApi {
  version: string;
  listen(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    socket: SocketHandlers;
  }): { port: number; hostname: string; stop(closeActiveConnections?: boolean): void };
  connect(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    socket: SocketHandlers;
  }): Promise<BunSocket>;
}

const bun = () => (globalThis as unknown as { Bun: BunApi }).Bun;

/** One Bun socket as a {@linkcode ByteConnection}: paused unless a read is pending. */
class BunConnection implements ByteConnection {
  readonly localAddress?: HostPort;
  readonly remoteAddress?: HostPort;
  #socket: BunSocket;
  #chunk: Uint8Array | null = null;
  #eof = false;
  #error: Error | null = null;
  #closed = false;
  #reader: { resolve: (c: Uint8Array | null) => void; reject: (e: Error) => void } | null = null;
  /** Bytes the kernel has not taken yet, and who waits for them to go. */
  #unsent: Uint8Array | null = null;
  #flushed: { resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(socket: BunSocket) {
    this.#socket = socket;
    socket.setNoDelay?.(true);
    this.localAddress = socket.localAddress
      ? { host: unmapIPv4(socket.localAddress), port: socket.localPort }
      : undefined;
    this.remoteAddress = socket.remoteAddress && socket.remotePort !== undefined
      ? { host: unmapIPv4(socket.remoteAddress), port: socket.remotePort }
      : undefined;
  }

  // -- event handlers, called by the shared socket handlers below --
  onData(data: Uint8Array) {
    // Bun reuses `data`: copy what we keep.
    const copy = data.slice();
    const r = this.#reader;
    if (r) {
      this.#reader = null;
      r.resolve(copy);
    } else this.#chunk = this.#chunk ? concat(this.#chunk, copy) : copy;
    // One chunk in hand at most: read on only when asked.
    this.#socket.pause();
  }

  onDrain() {
    const rest = this.#unsent;
    if (!rest) return;
    const n = this.#socket.write(rest);
    if (n < 0) return this.#failWrites(new Error("socket closed"));
    if (n < rest.length) {
      this.#unsent = rest.subarray(n);
      return;
    }
    this.#unsent = null;
    const w = this.#flushed;
    this.#flushed = null;
    w?.resolve();
  }

  onEnd() {
    this.#eof = true;
    this.#settleReader();
  }

  onClose(error?: Error) {
    if (error && !this.#error) this.#error = error;
    this.#eof = true;
    this.#settleReader();
    this.#failWrites(this.#error ?? new Error("socket closed"));
  }

  #settleReader() {
    const r = this.#reader;
    if (!r || this.#chunk) return;
    this.#reader = null;
    if (this.#error && !this.#closed) r.reject(this.#error);
    else r.resolve(null);
  }

  #failWrites(error: Error) {
    this.#unsent = null;
    const w = this.#flushed;
    this.#flushed = null;
    w?.reject(error);
  }

  // -- ByteConnection --
  read(): Promise<Uint8Array | null> {
    if (this.#chunk) {
      const c = this.#chunk;
      this.#chunk = null;
      return Promise.resolve(c);
    }
    if (this.#error && !this.#closed) return Promise.reject(this.#error);
    if (this.#eof || this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#reader = { resolve, reject };
      this.#socket.resume();
    });
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) return Promise.reject(new Error("write after close"));
    if (this.#unsent) return Promise.reject(new Error("write while a write is pending"));
    const n = this.#socket.write(chunk);
    if (n < 0) return Promise.reject(new Error("socket closed"));
    if (n === chunk.length) return Promise.resolve();
    // The caller does not touch `chunk` after write(), so a view of the rest is enough.
    this.#unsent = chunk.subarray(n);
    return new Promise((resolve, reject) => (this.#flushed = { resolve, reject }));
  }

  async closeWrite(): Promise<void> {
    if (this.#closed) return;
    if (this.#flushed) {
      const pending = this.#flushed;
      await new Promise<void>((resolve, reject) => {
        this.#flushed = {
          resolve: () => (pending.resolve(), resolve()),
          reject: (e) => (pending.reject(e), reject(e)),
        };
      });
    }
    this.#socket.shutdown();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.end();
    this.#settleReader();
    this.#failWrites(new Error("socket closed"));
  }

  abort(): void {
    if (this.#closed && this.#eof) return;
    this.#closed = true;
    this.#socket.terminate();
    this.#settleReader();
    this.#failWrites(new Error("socket aborted"));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Handlers shared by every socket; per-socket state lives in `socket.data`. */
const handlers: SocketHandlers = {
  data: (s, d) => s.data?.onData(d),
  drain: (s) => s.data?.onDrain(),
  end: (s) => s.data?.onEnd(),
  close: (s, e) => s.data?.onClose(e),
  error: (s, e) => s.data?.onClose(e),
};

async function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  if (signal?.aborted) throw new SocksError(ReplyCode.TtlExpired, "connect timed out");
  let socket: BunSocket;
  try {
    const connecting = bun().connect({
      hostname: host,
      port,
      allowHalfOpen: true,
      socket: { ...handlers, connectError: () => {} },
    });
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(new SocksError(ReplyCode.TtlExpired, "connect timed out"));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    // A connection that lands after the abort is closed, not leaked.
    connecting.then((s) => signal?.aborted && s.terminate(), () => {});
    try {
      socket = await Promise.race([connecting, aborted]);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  } catch (error) {
    if (error instanceof SocksError) throw error;
    const e = error as Error & { code?: string };
    const code = CONNECT_ERRORS[e.code ?? ""] ?? ReplyCode.GeneralFailure;
    throw new SocksError(code, `connect to ${host}:${port} failed: ${e.message} (${e.code})`, {
      cause: error,
    });
  }
  const conn = new BunConnection(socket);
  socket.data = conn;
  socket.pause();
  return conn;
}

function listen(address: HostPort, onConnection: (conn: ByteConnection) => void): Promise<Listener> {
  const listener = bun().listen({
    hostname: address.host,
    port: address.port,
    allowHalfOpen: true,
    socket: {
      ...handlers,
      open(socket) {
        const conn = new BunConnection(socket);
        socket.data = conn;
        socket.pause();
        onConnection(conn);
      },
    },
  });
  return Promise.resolve({
    address: { host: unmapIPv4(listener.hostname), port: listener.port },
    close: () => Promise.resolve(listener.stop(false)),
  });
}

/**
 * The runtime adapter for Bun.
 *
 * @example
 * ```ts
 * import { serve } from "../../mod.ts";
 * import { bunAdapter } from "./bun.ts";
 * const server = await serve(bunAdapter, { listen: [{ host: "127.0.0.1", port: 1080 }] });
 * ```
 */
export const bunAdapter: RuntimeAdapter = {
  get name() {
    return `bun ${bun().version}`;
  },
  dial,
  listen,
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
};
