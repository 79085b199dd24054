/**
 * The Node adapter: TCP through `node:net` with half-open sockets, DNS
 * through `node:dns`.
 *
 * `Duplex.toWeb()` is deliberately not used: on Node 20/22 its writer's
 * `close()` never resolves after a half-close, which hangs a relay
 * (nodejs/node#62394). Sockets are `allowHalfOpen` on both ends, so a peer's
 * FIN does not close our side, and `end()` sends just a FIN.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { connect, createServer, type Socket } from "node:net";
import process from "node:process";
import { setImmediate, setTimeout } from "node:timers";
import type {
  ByteConnection,
  DialOptions,
  HostPort,
  Listener,
  ListenOptions,
  NativeRelay,
  RuntimeAdapter,
} from "../runtime.ts";
import type { RelayResult } from "../relay.ts";
import { unwatch, watch } from "../relay.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { connectError, connectTimedOut } from "./_errors.ts";
import { nameServerResolver, systemResolver } from "./_node_dns.ts";

/** How long a gracefully closed socket may take to flush to a peer that does not read. */
const LINGER_MS = 30_000;

function endpoint(host: string | undefined, port: number | undefined): HostPort | undefined {
  return host && port !== undefined ? { host: unmapIPv4(host), port } : undefined;
}

/** Closes `socket` with a RST where the runtime can, so the peer learns the tunnel failed. */
function reset(socket: Socket): void {
  if (socket.destroyed) return;
  try {
    // A socket still connecting, or whose both directions are done, has no connection to reset.
    if (socket.readyState === "opening" || socket.readyState === "closed") socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy(); // node:net without resetAndDestroy, or not over a TCP handle
  }
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

const kConnection = Symbol("edgesocks.connection");
/** A socket with the connection that wraps it, which its (shared) listeners find there. */
type Owned = Socket & { [kConnection]?: NodeConnection };

/** A `net.Socket` as a {@linkcode ByteConnection}: it reads at most one chunk ahead of read(). */
class NodeConnection implements ByteConnection {
  #socket: Owned;
  #chunk: Buffer | null = null;
  #eof = false;
  #error: Error | null = null;
  #closed = false;
  #reader: Waiter<Uint8Array | null> | null = null;
  #writers: Waiter<void>[] = [];

  // One set of listener functions for every socket (each finds its connection on the socket, `this` of
  // a listener): no closures per connection.
  // deno-lint-ignore no-explicit-any -- node:events listeners take any arguments
  static readonly #listeners: [string, (this: Owned, ...args: any[]) => void][] = [
    ["data", function (this: Owned, data: Buffer) {
      const c = this[kConnection];
      if (c) c.#onData(data);
    }],
    ["end", function (this: Owned) {
      const c = this[kConnection];
      if (!c) return;
      c.#eof = true;
      c.#settleReader();
    }],
    ["error", function (this: Owned, error: Error) {
      const c = this[kConnection];
      if (!c) return;
      c.#error ??= error;
      c.#settleReader();
      c.#failWriters();
    }],
    ["close", function (this: Owned) {
      const c = this[kConnection];
      if (!c) return;
      c.#eof = true;
      c.#settleReader();
      c.#failWriters();
    }],
    ["drain", function (this: Owned) {
      const c = this[kConnection];
      if (c) c.#flushed();
    }],
    // Node emits no 'drain' once end() was called; 'finish' means everything went out.
    ["finish", function (this: Owned) {
      const c = this[kConnection];
      if (c) c.#flushed();
    }],
  ];

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.pause();
    this.#socket[kConnection] = this;
    for (const [event, fn] of NodeConnection.#listeners) socket.on(event, fn);
  }

  #onData(data: Buffer) {
    // After close() incoming bytes are dropped but still read, so unread data in the kernel does not turn
    // our FIN into a RST.
    if (this.#closed) return;
    const r = this.#reader;
    this.#reader = null;
    if (r) return r.resolve(data);
    this.#chunk = this.#chunk ? Buffer.concat([this.#chunk, data]) : data;
    // One chunk in hand at most: stop reading until the next read(). A socket is not paused while reads
    // keep up (each pause and resume costs stream machinery), only once a chunk waits.
    this.#socket.pause();
  }

  #flushed() {
    for (const w of this.#writers.splice(0)) w.resolve();
  }

  // Looked up when asked (a system call each, and Node keeps the answer for the socket's life): the
  // driver wants only the client's remote and the upstream's local end.
  get localAddress(): HostPort | undefined {
    return endpoint(this.#socket.localAddress, this.#socket.localPort);
  }

  get remoteAddress(): HostPort | undefined {
    return endpoint(this.#socket.remoteAddress, this.#socket.remotePort);
  }

  /** True while nothing is in flight: the socket can be handed over. */
  get detachable(): boolean {
    return !(this.#closed || this.#error || this.#reader || this.#writers.length > 0);
  }

  /**
   * Hands the socket over to the native relay, with the chunk already read
   * but not consumed. Only when `detachable`.
   */
  detach(): { socket: Socket; pending: Uint8Array | null; eof: boolean } {
    for (const [event, fn] of NodeConnection.#listeners) this.#socket.off(event, fn);
    this.#socket[kConnection] = undefined;
    this.#closed = true;
    const pending = this.#chunk;
    this.#chunk = null;
    return { socket: this.#socket, pending, eof: this.#eof };
  }

  #settleReader() {
    const r = this.#reader;
    if (!r || this.#chunk) return;
    this.#reader = null;
    // A reset rejects, so the relay can tell it from a FIN; our own close() reads as the end.
    if (this.#error && !this.#closed) r.reject(this.#error);
    else r.resolve(null);
  }

  #failWriters(error = this.#error ?? new Error("socket closed")) {
    for (const w of this.#writers.splice(0)) w.reject(error);
  }

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
      if (this.#socket.isPaused()) this.#socket.resume();
    });
  }

  write(chunk: Uint8Array): Promise<void> {
    const s = this.#socket;
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed || s.destroyed || s.writableEnded) return Promise.reject(new Error("write after close"));
    if (s.write(chunk)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#writers.push({ resolve, reject }));
  }

  closeWrite(): Promise<void> {
    const s = this.#socket;
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed || s.destroyed || s.writableEnded) return Promise.resolve();
    // end() sends only a FIN (the socket is half-open); its callback runs once flushed, or with the error.
    return new Promise((resolve, reject) =>
      s.end((error?: Error | null) => error ? reject(error) : resolve())
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunk = null;
    const s = this.#socket;
    if (!s.destroyed) {
      // What write() accepted may still sit in Node's buffer: destroySoon() sends it, then the FIN, then
      // closes. A peer that never reads must not keep the socket forever.
      const linger = setTimeout(() => s.destroy(), LINGER_MS);
      linger.unref();
      s.once("close", () => clearTimeout(linger));
      s.destroySoon();
      s.resume();
    }
    this.#settleReader();
  }

  abort(): void {
    this.#closed = true;
    this.#chunk = null;
    reset(this.#socket);
    this.#settleReader();
    this.#failWriters(new Error("connection aborted"));
  }
}

function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(connectTimedOut());
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    const cleanup = () => {
      signal?.removeEventListener("abort", onAbort);
      socket.off("connect", onConnect);
      socket.off("error", onError);
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(connectTimedOut());
    };
    const onConnect = () => {
      cleanup();
      resolve(new NodeConnection(socket));
    };
    const onError = (error: Error) => {
      cleanup();
      socket.destroy();
      reject(connectError(error, host, port));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}

/** `server.listen({ reusePort })` arrived in Node 22.12 and 23.1; older versions ignore it silently. */
function hasReusePort(): boolean {
  const [major, minor] = process.versions.node.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

function listen(
  address: HostPort,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
  options: ListenOptions = {},
): Promise<Listener> {
  if (options.reusePort && !hasReusePort()) {
    return Promise.reject(
      new Error(
        `sharing a port (SO_REUSEPORT) needs Node 22.12 or later; this is Node ${process.versions.node}`,
      ),
    );
  }
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
      // (Its address is not asked for here: that is a system call, and the driver asks only when it needs it.)
      const conn = new NodeConnection(socket);
      try {
        onConnection(conn);
      } catch {
        // A failing handler costs this connection, never the process.
        conn.abort();
      }
    });
    server.once("error", reject);
    const reusePort = options.reusePort === true;
    server.listen({ host: address.host, port: address.port, ...(reusePort ? { reusePort } : {}) }, () => {
      server.off("error", reject);
      // After listening, accept errors (EMFILE, ...) are transient: libuv retries; never crash.
      server.on("error", (error) => onAcceptError?.(error));
      const bound = server.address();
      const real = typeof bound === "object" && bound
        ? { host: unmapIPv4(bound.address), port: bound.port }
        : address;
      resolve({
        address: real,
        close: () =>
          new Promise<void>((done) => {
            server.close();
            done();
          }),
      });
    });
  });
}

/**
 * The relay on Node's own streams: `pipe()` both ways (backpressure through
 * `write()`'s return and `drain`, a FIN passed on by `end()` since the
 * sockets are half-open), the idle timeout by `setTimeout()` on the client
 * socket (every byte of the tunnel is read from or written to it, and both
 * refresh its timer), an error on one side resets both. No JavaScript runs
 * per chunk beyond the stream machinery, and sockets are not paused per
 * chunk as the generic read() loop must. An idle tunnel holds little more
 * than the two sockets: one listener of each kind, shared by both.
 */
const nativeRelay: NativeRelay = (client, upstream, options) => {
  if (!(client instanceof NodeConnection) || !(upstream instanceof NodeConnection)) return undefined;
  if (!client.detachable || !upstream.detachable) return undefined;
  const a = client.detach(), b = upstream.detach();
  const sa = a.socket, sb = b.socket;
  const readA = sa.bytesRead - (a.pending?.length ?? 0), readB = sb.bytesRead - (b.pending?.length ?? 0);
  const signal = options.signal, idle = options.idleTimeout ?? 0;
  const started = new Promise<RelayResult>((resolve) => {
    const result: RelayResult = { up: 0, down: 0, end: "done" };
    let open = 2;
    const onClose = () => {
      if (--open > 0) return;
      if (signal) unwatch(signal, onAbort);
      result.up = sa.bytesRead - readA;
      result.down = sb.bytesRead - readB;
      resolve(result);
    };
    const stop = (end: RelayResult["end"], error?: unknown) => {
      if (result.end !== "done") return;
      result.end = end;
      if (error !== undefined) result.error = error;
      if (end === "error") {
        reset(sa);
        reset(sb);
      } else {
        sa.destroy();
        sb.destroy();
      }
    };
    const onError = (error: Error) => stop("error", error);
    const onAbort = () => stop("aborted");
    for (const s of [sa, sb]) {
      s.on("error", onError);
      // A socket whose both directions were done has closed by itself: its 'close' was emitted or is
      // queued on nextTick, so it is counted after that instead, exactly once.
      if (s.destroyed) setImmediate(onClose);
      else s.on("close", onClose);
    }
    if (idle > 0) {
      sa.setTimeout(idle);
      sa.on("timeout", () => stop("idle"));
    }
    if (signal?.aborted) onAbort();
    else if (signal) watch(signal, onAbort);
  });
  // Outside the promise's executor, so that its closures do not keep the handed-over chunks alive.
  if (a.pending) sb.write(a.pending);
  if (a.eof) sb.end();
  else sa.pipe(sb);
  if (b.pending) sa.write(b.pending);
  if (b.eof) sa.end();
  else sb.pipe(sa);
  return started;
};

/**
 * The runtime adapter for Node (≥ 20).
 *
 * @example
 * ```ts
 * import { serve } from "../../mod.ts";
 * import { nodeAdapter } from "./node.ts";
 * const server = await serve(nodeAdapter, { listen: [{ host: "127.0.0.1", port: 1080 }] });
 * ```
 */
export const nodeAdapter: RuntimeAdapter = {
  name: `node ${process.versions.node}`,
  dial,
  listen,
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
  relay: nativeRelay,
};
