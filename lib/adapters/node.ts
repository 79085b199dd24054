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
import type { ByteConnection, DialOptions, HostPort, Listener, RuntimeAdapter } from "../connection.ts";
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

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.pause();
    this.localAddress = endpoint(socket.localAddress, socket.localPort);
    this.remoteAddress = endpoint(socket.remoteAddress, socket.remotePort);
    socket.on("data", (data: Uint8Array) => {
      const r = this.#reader;
      if (r) {
        this.#reader = null;
        r.resolve(data);
      } else {
        this.#chunk = data;
      }
      // One chunk in hand at most: wait for the next read() before reading on.
      socket.pause();
    });
    socket.on("end", () => {
      this.#eof = true;
      this.#settleReader();
    });
    socket.on("error", (error: Error) => {
      this.#error = error;
      this.#settleReader();
      this.#settleWriters();
    });
    socket.on("close", () => {
      this.#eof = true;
      this.#settleReader();
      this.#settleWriters();
    });
    socket.on("drain", () => {
      for (const w of this.#drainWaiters.splice(0)) w.resolve();
    });
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
};
