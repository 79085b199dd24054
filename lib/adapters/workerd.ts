/**
 * The workerd adapter: the sockets of Cloudflare's open-source edge runtime.
 * An accepted connection is the socket a `tcp = ()` socket of the config
 * hands to a worker's `connect(socket, env, ctx)` export; an outbound one is
 * `connect()` from `cloudflare:sockets`, passed in by the worker (this module
 * never imports `cloudflare:sockets`, so it loads and type-checks on Deno,
 * Bun and Node too). The ready-made worker, configured from its `env`, is
 * `lib/cli/workerd.ts`.
 *
 * Measured on workerd 1.20261117 (see the README's "At the edge"):
 * - both the accepted and the dialled socket (with `allowHalfOpen: true`)
 *   half-close: closing the writable sends a FIN and reading goes on; the
 *   peer's FIN ends the readable and writing goes on. Without
 *   `allowHalfOpen` the peer's FIN closes the writable too.
 * - a peer's reset makes a pending read reject with "Network connection
 *   lost."; `socket.closed` still resolves.
 * - a worker cannot send a reset: `close()`, aborting the writable and
 *   cancelling the readable all end in a FIN.
 * - every failed connect rejects `socket.opened` with the same error, "proxy
 *   request failed, cannot connect to the specified address", whether the
 *   network service's `allow` list refused the address, the name did not
 *   resolve or the target refused (workerd logs the reason, the worker never
 *   sees it): see `_errors.ts` for the reply it maps to.
 * - timers and I/O objects belong to the request (here: the connection) that
 *   made them, so this adapter's relay times each tunnel's idleness with a
 *   timer of its own instead of the list the other runtimes share.
 * - a socket's `readable.pipeTo()` into another socket's `writable` runs in
 *   C++, but through kj's 4 KiB pump buffer (16 times the system calls of
 *   the JavaScript relay's 64 KiB reads, and more CPU); through an
 *   `IdentityTransformStream` between them each half is workerd's 64 KiB
 *   pump, a third of the JavaScript relay's CPU per byte. A `TransformStream`
 *   of JavaScript there instead costs ten times the JavaScript relay's CPU.
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { type WorkerdConnect, workerdAdapter, type WorkerdSocket } from "@edgesocks/edgesocks/workerd";
 * declare const connect: WorkerdConnect; // import { connect } from "cloudflare:sockets"
 * const adapter = workerdAdapter({ connect });
 * let started: Promise<unknown> | undefined;
 * export default {
 *   async connect(socket: WorkerdSocket) {
 *     started ??= serve(adapter, { listen: [{ host: "0.0.0.0", port: 0 }], hostAddressRefresh: 0 });
 *     await started;
 *     await adapter.accept(socket); // resolves when the connection has ended
 *   },
 * };
 * ```
 *
 * @module
 */
import type {
  ByteConnection,
  DialOptions,
  HostPort,
  Listener,
  NativeRelay,
  RelayOptions,
  RelayResult,
  Resolver,
  RuntimeAdapter,
} from "../runtime.ts";
import { pumpConnection, runRelay, Tunnel } from "../relay.ts";
import { ReplyCode } from "../core/wire.ts";
import { SocksError } from "../core/errors.ts";
import { connectTimedOut, workerdConnectError } from "./_errors.ts";

/**
 * What `socket.opened` resolves with.
 *
 * @example
 * ```ts
 * import type { WorkerdSocketInfo } from "@edgesocks/edgesocks/workerd";
 * const info: WorkerdSocketInfo = { remoteAddress: "127.0.0.1:50000", localAddress: "127.0.0.1:1080" };
 * ```
 */
export interface WorkerdSocketInfo {
  /** `host:port` (IPv6 in brackets) of the peer, where workerd knows it. */
  remoteAddress?: string;
  /** `host:port` of this end, for an accepted socket. */
  localAddress?: string;
}

/**
 * The part of workerd's `Socket` this adapter uses.
 *
 * @example
 * ```ts
 * import type { WorkerdSocket } from "@edgesocks/edgesocks/workerd";
 * async function greet(socket: WorkerdSocket) {
 *   const writer = socket.writable.getWriter();
 *   await writer.write(new TextEncoder().encode("hello\n"));
 *   await writer.close(); // a FIN: the readable stays open
 * }
 * ```
 */
export interface WorkerdSocket {
  /** Bytes from the peer. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer; closing it sends a FIN. */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves once connected; rejects when the connect failed. */
  readonly opened: Promise<WorkerdSocketInfo>;
  /** Settles once the socket is closed. */
  readonly closed: Promise<void>;
  /** Flushes what was written, then closes both directions. */
  close(): Promise<void>;
}

/**
 * The signature of `connect()` from `cloudflare:sockets`.
 *
 * @example
 * ```ts
 * import type { WorkerdConnect } from "@edgesocks/edgesocks/workerd";
 * declare const connect: WorkerdConnect;
 * const socket = connect({ hostname: "example.org", port: 443 }, { allowHalfOpen: true });
 * ```
 */
export type WorkerdConnect = (
  address: { hostname: string; port: number },
  options?: { allowHalfOpen?: boolean; secureTransport?: "off" | "on" | "starttls" },
) => WorkerdSocket;

/**
 * Options for {@linkcode workerdAdapter}.
 *
 * @example
 * ```ts
 * import type { WorkerdAdapterOptions, WorkerdConnect } from "@edgesocks/edgesocks/workerd";
 * declare const connect: WorkerdConnect;
 * const options: WorkerdAdapterOptions = { connect };
 * ```
 */
export interface WorkerdAdapterOptions {
  /** `connect` from `cloudflare:sockets`. */
  connect: WorkerdConnect;
  /** DNS for RESOLVE and RESOLVE_PTR (e.g. DNS-over-HTTPS); without one both are "command not supported". */
  resolver?: Resolver;
  /** Shown as the runtime's name; default `"workerd"`. */
  name?: string;
  /**
   * The middle of the relay's native pipes (see {@linkcode workerdRelay}):
   * a stream passing bytes through. Default: workerd's
   * `IdentityTransformStream`; where there is none, the JavaScript relay
   * only. (Tests elsewhere pass `() => new TransformStream()`.)
   */
  identityStream?: () => TransformStream<Uint8Array, Uint8Array>;
}

/**
 * The workerd adapter: a {@linkcode RuntimeAdapter} whose `listen()` takes
 * the connections handed to {@linkcode WorkerdAdapter.accept}.
 *
 * @example
 * ```ts
 * import type { WorkerdAdapter, WorkerdSocket } from "@edgesocks/edgesocks/workerd";
 * declare const adapter: WorkerdAdapter, socket: WorkerdSocket;
 * await adapter.accept(socket);
 * ```
 */
export interface WorkerdAdapter extends RuntimeAdapter {
  /**
   * Serves one accepted socket through the listener: resolves once the
   * connection has been closed (a `connect()` handler must not return
   * before: workerd then cuts the socket off). Without a listener the socket
   * is closed at once.
   */
  accept(socket: WorkerdSocket): Promise<void>;
  /**
   * Serves any byte connection (a WebSocket's, say) through the listener;
   * resolves once it has been closed.
   */
  acceptConnection(conn: ByteConnection): Promise<void>;
}

/**
 * Parses `host:port` / `[v6]:port` as workerd writes addresses (`socket.opened`'s `remoteAddress`).
 *
 * @example
 * ```ts
 * import { parseWorkerdAddress } from "@edgesocks/edgesocks/workerd";
 * parseWorkerdAddress("[::1]:5000"); // { host: "::1", port: 5000 }
 * ```
 */
export function parseWorkerdAddress(text: string | undefined): HostPort | undefined {
  if (!text) return undefined;
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  return m ? { host: m[1], port: Number(m[2]) } : undefined;
}

const ignore = () => {};
// A pending read holds its buffer for as long as the tunnel is idle, so reads start small and double while
// they fill the buffer (as on Deno): a default reader's small chunks cost 10x the CPU per byte (measured).
// Up to 256 KiB, and between two workerd sockets each read's buffer used again for the next: measured, 3 runs
// of 512 MiB each way, about half the CPU per byte of 64 KiB reads into new buffers (0.88 / 0.84 s/GiB up /
// down against 1.78 / 2.04 in the same run; 128 KiB: 1.16 / 1.12).
const MIN_READ = 4 * 1024;
const MAX_READ = 256 * 1024;

/** A {@linkcode ByteConnection} over a workerd socket; `finished` resolves once it is closed. */
class WorkerdConnection implements ByteConnection {
  readonly #socket: WorkerdSocket;
  readonly #reader: ReadableStreamBYOBReader;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  #writeClosed = false;
  #released = false;
  /** Reads and writes pending (at most one each). */
  #busy = 0;
  #readSize = MIN_READ;
  #spare: ArrayBuffer | undefined;
  /**
   * Set by the relay between two workerd sockets: a read's buffer is the next read's, since the relay's pump
   * reads again only once it has written the chunk (and a workerd socket's write is done with it then).
   */
  recycling = false;
  readonly remoteAddress: HostPort | undefined;
  readonly finished: Promise<void>;
  #finish!: () => void;

  constructor(socket: WorkerdSocket, remote: HostPort | undefined) {
    this.#socket = socket;
    // BYOB: workerd fills a buffer of our size (a default reader hands over small chunks).
    this.#reader = (socket.readable as ReadableStream<Uint8Array<ArrayBuffer>>).getReader({ mode: "byob" });
    this.#writer = socket.writable.getWriter();
    this.remoteAddress = remote;
    this.finished = new Promise((resolve) => (this.#finish = resolve));
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed || this.#released) return null;
    this.#busy++;
    try {
      const size = this.#readSize;
      // The last read's buffer again (BYOB hands it back as a new ArrayBuffer over the same memory), when the
      // relay has written what it held and it has the size wanted: a smaller read must not hold a bigger one.
      const spare = this.#spare;
      this.#spare = undefined;
      const buffer = spare?.byteLength === size ? new Uint8Array(spare) : new Uint8Array(size);
      const { value, done } = await this.#reader.read(buffer);
      if (this.recycling && value) this.#spare = value.buffer;
      if (done || !value) return null;
      if (value.length === size) this.#readSize = Math.min(size * 2, MAX_READ);
      else if (value.length < size / 2) this.#readSize = Math.max(size / 2, MIN_READ);
      return value;
    } catch (error) {
      // Our own close() ends a pending read; anything else (a reset above all) is real.
      if (this.#closed) return null;
      throw error;
    } finally {
      this.#busy--;
    }
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#writeClosed || this.#released) throw new Error("write after close");
    this.#busy++;
    try {
      // Resolves once workerd has handed the chunk on: one chunk in flight per direction.
      await this.#writer.write(chunk);
    } finally {
      this.#busy--;
    }
  }

  /**
   * Hands the socket's two streams over (for {@linkcode pipeRelay}): releases this connection's reader and
   * writer, after which read() and write() are over and close() closes the socket alone. Undefined when
   * they cannot go: closed, its write side closed, or a read or write pending.
   */
  get releasable(): boolean {
    return !this.#closed && !this.#writeClosed && !this.#released && this.#busy === 0;
  }

  release(): WorkerdSocket | undefined {
    if (!this.releasable) return undefined;
    this.#released = true;
    this.#reader.releaseLock();
    this.#writer.releaseLock();
    return this.#socket;
  }

  async closeWrite(): Promise<void> {
    if (this.#writeClosed || this.#released) return;
    this.#writeClosed = true;
    await this.#writer.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writeClosed = true;
    if (!this.#released) this.#reader.cancel().catch(ignore);
    // (No abort(): a worker cannot send a reset; close() ends in a FIN however it is done.)
    this.#socket.close().then(this.#finish, this.#finish);
  }
}

/** A tunnel that times its own idleness: timers are per request on workerd, so none is shared. */
class WorkerdTunnel extends Tunnel {
  readonly client: ByteConnection;
  readonly upstream: ByteConnection;
  readonly #idleMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(client: ByteConnection, upstream: ByteConnection, idleMs: number) {
    super();
    this.client = client;
    this.upstream = upstream;
    this.#idleMs = idleMs;
    if (client instanceof WorkerdConnection && upstream instanceof WorkerdConnection) {
      client.recycling = upstream.recycling = true;
    }
    this.last = Date.now();
    if (idleMs > 0) this.#timer = setTimeout(this.#check, idleMs);
  }

  #check = () => {
    const left = this.last + this.#idleMs - Date.now();
    if (left <= 0) this.stop("idle");
    else this.#timer = setTimeout(this.#check, left);
  };

  override moved(up: boolean, n: number): void {
    if (up) this.up += n;
    else this.down += n;
    this.last = Date.now();
  }

  override active(): void {
    this.last = Date.now();
  }

  override close(_failed: boolean): void {
    clearTimeout(this.#timer);
    this.client.close();
    this.upstream.close();
  }
}

/**
 * A tunnel whose two directions are workerd's own pipes (see {@linkcode pipeRelay}): no byte passes through
 * JavaScript, so none is counted and no activity is seen; it holds only the abort of its pipes.
 */
class PipeTunnel extends Tunnel {
  readonly #abort = new AbortController();
  readonly signal: AbortSignal = this.#abort.signal;

  override close(_reset: boolean): void {
    // The pipes go first: socket.close() flushes the writable first, and a pipe holds the writable's queue
    // until it ends. (A reset cannot be sent either way on workerd.)
    this.#abort.abort(new Error("tunnel closed"));
  }
}

/**
 * `client` ⇄ `upstream` with workerd's pipes, each direction `readable.pipeThrough(identity).pipeTo(writable)`.
 * Measured on workerd 1.20261117: a socket's `readable.pipeTo()` straight into another socket's `writable`
 * runs in C++ but through a 4 KiB buffer (kj's pump: 16 times the system calls of the JavaScript relay's
 * 64 KiB reads, and more CPU than it); with an `IdentityTransformStream` between them, each half is
 * workerd's 64 KiB pump. Each pipe passes its source's FIN on as a FIN (the writable's close) and its
 * failure as an abort of the writable (a FIN too); a failure either way stops the tunnel, which cuts the
 * other direction and closes both sockets. Memory: each pipe holds one 64 KiB buffer per half, and writes
 * wait for the socket, so a slow reader slows the writer.
 */
async function pipeRelay(
  client: WorkerdConnection,
  upstream: WorkerdConnection,
  identity: IdentityStream,
  options: RelayOptions,
): Promise<RelayResult> {
  const a = client.release()!, b = upstream.release()!;
  const tunnel = new PipeTunnel();
  tunnel.track(0, options.signal);
  const { signal } = tunnel;
  const pipe = (from: WorkerdSocket, to: WorkerdSocket) =>
    from.readable.pipeThrough(identity(), { signal }).pipeTo(to.writable, { signal }).catch((error) =>
      tunnel.stop("error", error)
    );
  await Promise.all([pipe(a, b), pipe(b, a)]);
  client.close();
  upstream.close();
  return tunnel.result();
}

/** The middle of a native pipe: a byte stream that passes its writes on to its reads. */
type IdentityStream = () => TransformStream<Uint8Array, Uint8Array>;

/** workerd's `IdentityTransformStream` (implemented in C++), where there is one. */
function workerdIdentity(): IdentityStream | undefined {
  const native =
    (globalThis as { IdentityTransformStream?: new () => TransformStream<Uint8Array, Uint8Array> })
      .IdentityTransformStream;
  return native ? () => new native() : undefined;
}

/** {@linkcode workerdRelay} with `identity` as its pipes' middle (none: the JavaScript relay only). */
function relayWith(identity: IdentityStream | undefined): NativeRelay {
  return (client, upstream, options) => {
    const idle = options.idleTimeout ?? 0;
    // A native pipe shows no activity (nor counts bytes): with an idle timeout, the JavaScript relay.
    if (
      identity && idle <= 0 && client instanceof WorkerdConnection && upstream instanceof WorkerdConnection &&
      client.releasable && upstream.releasable
    ) return pipeRelay(client, upstream, identity, options);
    return runRelay(new WorkerdTunnel(client, upstream, idle), { signal: options.signal }, pumpConnection);
  };
}

/**
 * The relay on workerd. Without an idle timeout (`idleTimeout` 0) and
 * between two workerd sockets, workerd's own pipes: no JavaScript per chunk
 * (measured: a third of the CPU per byte), but no byte counts either (the
 * result's `up` and `down` are 0). Otherwise the generic relay's pumps, with
 * each tunnel's idle timeout on a timer of its own (a timer shared by
 * tunnels would belong to one connection's request and could not close the
 * others).
 *
 * @example
 * ```ts
 * import type { ByteConnection } from "@edgesocks/edgesocks";
 * import { workerdRelay } from "@edgesocks/edgesocks/workerd";
 * declare const client: ByteConnection, upstream: ByteConnection;
 * const result = await workerdRelay(client, upstream, { idleTimeout: 300_000 });
 * ```
 */
export const workerdRelay: NativeRelay = (
  client: ByteConnection,
  upstream: ByteConnection,
  options: RelayOptions,
): Promise<RelayResult> => relayWith(workerdIdentity())(client, upstream, options)!;

/** What RESOLVE and RESOLVE_PTR get without a resolver: "command not supported". */
const NO_RESOLVER: Resolver = {
  lookup: () => Promise.reject(noDns()),
  reverse: () => Promise.reject(noDns()),
};

function noDns(): SocksError {
  return new SocksError(ReplyCode.CommandNotSupported, "no DNS resolver configured", { code: "unsupported" });
}

/**
 * Builds the workerd adapter over `connect` from `cloudflare:sockets`. Its
 * `dial` takes a host name as well as an address: workerd resolves names
 * itself, and its network service's `allow` / `deny` lists judge the
 * address it resolved (the after-DNS check, on workerd).
 *
 * @example
 * ```ts
 * import { type WorkerdConnect, workerdAdapter } from "@edgesocks/edgesocks/workerd";
 * declare const connect: WorkerdConnect;
 * const adapter = workerdAdapter({ connect });
 * const conn = await adapter.dial({ host: "example.org", port: 80 });
 * ```
 */
export function workerdAdapter(options: WorkerdAdapterOptions): WorkerdAdapter {
  const connect = options.connect;
  let onConnection: ((conn: ByteConnection) => void) | undefined;

  function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
    if (signal?.aborted) return Promise.reject(connectTimedOut(signal.reason));
    let socket: WorkerdSocket;
    try {
      // IPv6 literals go in as they are ("::1"), names as names.
      socket = connect({ hostname: host, port }, { allowHalfOpen: true });
    } catch (error) {
      return Promise.reject(workerdConnectError(error, host, port));
    }
    return new Promise<ByteConnection>((resolve, reject) => {
      const onAbort = () => {
        socket.close().catch(ignore);
        reject(connectTimedOut(signal?.reason));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      socket.opened.then((info) => {
        signal?.removeEventListener("abort", onAbort);
        const conn = new WorkerdConnection(socket, parseWorkerdAddress(info?.remoteAddress));
        if (signal?.aborted) conn.close();
        resolve(conn);
      }, (error) => {
        signal?.removeEventListener("abort", onAbort);
        socket.close().catch(ignore);
        reject(workerdConnectError(error, host, port));
      });
    });
  }

  function listen(address: HostPort, handler: (conn: ByteConnection) => void): Promise<Listener> {
    onConnection = handler;
    return Promise.resolve({
      address,
      close() {
        if (onConnection === handler) onConnection = undefined;
        return Promise.resolve();
      },
    });
  }

  async function accept(socket: WorkerdSocket): Promise<void> {
    let info: WorkerdSocketInfo | undefined;
    try {
      info = await socket.opened;
    } catch {
      // The client left before it was ours.
    }
    const conn = new WorkerdConnection(socket, parseWorkerdAddress(info?.remoteAddress));
    const handler = onConnection;
    if (!handler) conn.close();
    else handler(conn);
    await conn.finished;
  }

  async function acceptConnection(conn: ByteConnection): Promise<void> {
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const close = conn.close.bind(conn);
    const watched: ByteConnection = {
      read: () => conn.read(),
      write: (chunk) => conn.write(chunk),
      closeWrite: () => conn.closeWrite(),
      close() {
        close();
        finish();
      },
      ...(conn.remoteAddress ? { remoteAddress: conn.remoteAddress } : {}),
    };
    const handler = onConnection;
    if (!handler) watched.close();
    else handler(watched);
    await finished;
  }

  return {
    name: options.name ?? "workerd",
    dial,
    listen,
    resolver: () => options.resolver ?? NO_RESOLVER,
    relay: relayWith(options.identityStream ?? workerdIdentity()),
    // A timer belongs to the request (connection) that set it: sessions must not share one.
    timersPerConnection: true,
    interfaceAddresses: () => undefined,
    accept,
    acceptConnection,
  };
}
