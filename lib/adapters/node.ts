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
import { connect, createServer, type Socket } from "node:net";
import process from "node:process";
import type {
  ByteConnection,
  DialOptions,
  HostPort,
  Listener,
  NativeRelay,
  RuntimeAdapter,
} from "../connection.ts";
import type { RelayResult } from "../relay.ts";
import { SocksError } from "../core/errors.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { ReplyCode } from "../core/wire.ts";
import { CONNECT_ERRORS, nameServerResolver, systemResolver } from "./_node_dns.ts";

function endpoint(host: string | undefined, port: number | undefined): HostPort | undefined {
  return host && port !== undefined ? { host: unmapIPv4(host), port } : undefined;
}

/** A `net.Socket` as a {@linkcode ByteConnection}: paused unless a read is pending. */
class NodeConnection implements ByteConnection {
  readonly localAddress?: HostPort;
  readonly remoteAddress?: HostPort;
  #socket: Socket;
  #chunk: Uint8Array | null = null;
  #eof = false;
  #error: Error | null = null;
  #closed = false;
  #reader: { resolve: (c: Uint8Array | null) => void; reject: (e: Error) => void } | null = null;
  #drainWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  // deno-lint-ignore no-explicit-any -- node:events listeners take any arguments
  #listeners: [string, (...args: any[]) => void][];

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.pause();
    this.localAddress = endpoint(socket.localAddress, socket.localPort);
    this.remoteAddress = endpoint(socket.remoteAddress, socket.remotePort);
    this.#listeners = [
      ["data", (data: Uint8Array) => {
        const r = this.#reader;
        if (r) {
          this.#reader = null;
          r.resolve(data);
        } else {
          this.#chunk = data;
        }
        // One chunk in hand at most: wait for the next read() before reading on.
        socket.pause();
      }],
      ["end", () => {
        this.#eof = true;
        this.#settleReader();
      }],
      ["error", (error: Error) => {
        this.#error = error;
        this.#settleReader();
        this.#settleWriters();
      }],
      ["close", () => {
        this.#eof = true;
        this.#settleReader();
        this.#settleWriters();
      }],
      ["drain", () => {
        for (const w of this.#drainWaiters.splice(0)) w.resolve();
      }],
    ];
    for (const [event, fn] of this.#listeners) socket.on(event, fn);
  }

  /**
   * Hands the socket over to the native relay, with the chunk already read
   * but not consumed. Undefined when the connection is not idle and healthy.
   */
  detach(): { socket: Socket; pending: Uint8Array | null; eof: boolean } | undefined {
    if (this.#closed || this.#error || this.#reader || this.#drainWaiters.length > 0) return undefined;
    for (const [event, fn] of this.#listeners) this.#socket.off(event, fn);
    this.#closed = true;
    const pending = this.#chunk;
    this.#chunk = null;
    return { socket: this.#socket, pending, eof: this.#eof };
  }

  #settleReader() {
    const r = this.#reader;
    if (!r || this.#chunk) return;
    this.#reader = null;
    if (this.#error && !this.#closed) r.reject(this.#error);
    else r.resolve(null);
  }

  #settleWriters() {
    const error = this.#error ?? new Error("socket closed");
    for (const w of this.#drainWaiters.splice(0)) w.reject(error);
  }

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
    if (this.#closed || this.#socket.destroyed || this.#socket.writableEnded) {
      return Promise.reject(new Error("write after close"));
    }
    if (this.#socket.write(chunk)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  closeWrite(): Promise<void> {
    if (this.#closed || this.#socket.destroyed || this.#socket.writableEnded) return Promise.resolve();
    return new Promise((resolve) => this.#socket.end(() => resolve()));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Queued data still goes out before the FIN: destroySoon() = end() + destroy once flushed.
    this.#socket.destroySoon();
    this.#socket.resume();
    this.#settleReader();
  }

  abort(): void {
    this.#closed = true;
    if (!this.#socket.destroyed) {
      if (typeof this.#socket.resetAndDestroy === "function" && this.#socket.readyState === "open") {
        this.#socket.resetAndDestroy();
      } else this.#socket.destroy();
    }
    this.#settleReader();
    this.#settleWriters();
  }
}

function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new SocksError(ReplyCode.TtlExpired, "connect timed out"));
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    const cleanup = () => {
      signal?.removeEventListener("abort", onAbort);
      socket.off("connect", onConnect);
      socket.off("error", onError);
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(new SocksError(ReplyCode.TtlExpired, "connect timed out"));
    };
    const onConnect = () => {
      cleanup();
      resolve(new NodeConnection(socket));
    };
    const onError = (error: Error & { code?: string }) => {
      cleanup();
      socket.destroy();
      const code = CONNECT_ERRORS[error.code ?? ""] ?? ReplyCode.GeneralFailure;
      reject(new SocksError(code, `connect to ${host}:${port} failed: ${error.message}`, { cause: error }));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}

function listen(address: HostPort, onConnection: (conn: ByteConnection) => void): Promise<Listener> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
      // A socket reset before we wrap it has no address; drop it.
      if (!socket.remoteAddress) return void socket.destroy();
      onConnection(new NodeConnection(socket));
    });
    server.once("error", reject);
    server.listen({ host: address.host, port: address.port }, () => {
      server.off("error", reject);
      // After listening, accept errors (EMFILE, ...) are transient: libuv retries; never crash.
      server.on("error", () => {});
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
 * sockets are half-open), the idle timeout by `setTimeout()` on both sockets
 * (any byte through the tunnel touches both), an error on one side resets
 * both. No JavaScript runs per chunk beyond the stream machinery, and
 * sockets are not paused per chunk as the generic read() loop must.
 */
const nativeRelay: NativeRelay = (client, upstream, options) => {
  if (!(client instanceof NodeConnection) || !(upstream instanceof NodeConnection)) return undefined;
  const a = client.detach();
  if (!a) return undefined;
  const b = upstream.detach();
  if (!b) {
    // Give the client side back to the generic relay's behaviour: close both, nothing half-done.
    a.socket.destroy();
    upstream.close();
    return Promise.resolve({
      up: 0,
      down: 0,
      end: "error",
      error: new Error("upstream not ready for relay"),
    });
  }
  return new Promise<RelayResult>((resolve) => {
    const result: RelayResult = { up: 0, down: 0, end: "done" };
    const sa = a.socket, sb = b.socket;
    const readA = sa.bytesRead - (a.pending?.length ?? 0), readB = sb.bytesRead - (b.pending?.length ?? 0);
    let open = 2;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      options.signal?.removeEventListener("abort", onAbort);
      result.up = sa.bytesRead - readA;
      result.down = sb.bytesRead - readB;
      resolve(result);
    };
    const stop = (end: RelayResult["end"], error?: unknown) => {
      if (result.end !== "done") return;
      result.end = end;
      if (error !== undefined) result.error = error;
      for (const s of [sa, sb]) {
        if (end === "error" && s.readyState === "open") s.resetAndDestroy();
        else s.destroy();
      }
    };
    const onAbort = () => stop("aborted");
    for (const s of [sa, sb]) {
      s.on("error", (error) => stop("error", error));
      s.on("close", () => --open === 0 && finish());
      if (options.idleTimeout) {
        s.setTimeout(options.idleTimeout);
        s.on("timeout", () => stop("idle"));
      }
    }
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    const forward = (from: typeof a, to: Socket) => {
      if (from.pending) to.write(from.pending);
      if (from.eof) to.end();
      else from.socket.pipe(to);
    };
    forward(a, sb);
    forward(b, sa);
    // A socket whose both directions are done closes by itself; one that had already closed won't emit again.
    for (const s of [sa, sb]) if (s.destroyed) --open === 0 && finish();
  });
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
