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
import type {
  ByteConnection,
  DialOptions,
  HostPort,
  Listener,
  ListenOptions,
  NativeRelay,
  RuntimeAdapter,
  UnixListener,
} from "../runtime.ts";
import { type RelayOptions, type RelayResult, Tunnel } from "../relay.ts";
import { SocksError } from "../core/errors.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { connectError, connectTimedOut } from "./_errors.ts";
import { endpoint, type Handover, SocketConnection } from "./_socket_conn.ts";
import { nameServerResolver, systemResolver } from "./_node_dns.ts";
import { nodeInterfaceAddresses } from "./_interfaces.ts";
import { bunUdp } from "./_bun_udp.ts";
import { DescriptorProbe } from "./_fd_probe.ts";
import { connectWebSocketBun, serveWebSocketBun } from "./_websocket_bun.ts";

/**
 * Out of descriptors, `Bun.listen` leaves new connections in the listen queue (retrying, at a third of a
 * core here) and tells nobody: a probe tells (see _fd_probe.ts).
 */
const descriptors = new DescriptorProbe("new connections wait in the listen queue until some are free");

/** What a socket's events are delivered to: a connection, or one side of the native relay. */
interface SocketState {
  onData(data: Uint8Array): void;
  onDrain(): void;
  onEnd(): void;
  onClose(error?: Error): void;
}

/** The part of Bun's socket API used here (Bun's own types are not available to `deno check`). */
interface BunSocket {
  data: SocketState | undefined;
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
  listen(
    options: ({ hostname: string; port: number; reusePort?: boolean } | { unix: string }) & {
      allowHalfOpen: boolean;
      socket: SocketHandlers;
    },
  ): { port: number; hostname: string; stop(closeActiveConnections?: boolean): void };
  connect(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    socket: SocketHandlers;
  }): Promise<BunSocket>;
}

const bun = () => (globalThis as unknown as { Bun: BunApi }).Bun;

/** A socket handed over to the native relay, with the bytes read but not consumed. */
type Detached = Handover & { socket: BunSocket };

/** One Bun socket as a {@linkcode ByteConnection}: the shared socket connection over Bun's sockets. */
class BunConnection extends SocketConnection implements SocketState {
  #socket: BunSocket;

  constructor(socket: BunSocket) {
    // Attached from `open`, before Bun can deliver data. The socket is not paused: the driver reads at
    // once, and a chunk that comes with no read pending pauses it (each pause and resume is a system call).
    super(false);
    this.#socket = socket;
    socket.data = this;
    // No setNoDelay(true): Bun sets TCP_NODELAY itself on every socket it accepts or connects (traced on
    // Bun 1.4: once at accept, twice around connect), so ours was one more setsockopt each.
  }

  protected pauseSocket(): void {
    this.#socket.pause();
  }

  protected resumeSocket(): void {
    this.#socket.resume();
  }

  // Unbuffered: the bytes the kernel took, maybe not all; the rest is finished on `drain`.
  protected send(chunk: Uint8Array): number {
    return this.#socket.write(chunk);
  }

  protected shutdown(): void {
    this.#socket.shutdown();
  }

  protected end(): boolean {
    // Everything write() resolved for is in the kernel, which still sends it before the FIN; what waits
    // here is lost.
    this.#socket.end();
    return true;
  }

  protected reset(): void {
    this.#socket.terminate();
  }

  override abort(): void {
    if (this.finished) return;
    super.abort();
  }

  protected localEndpoint(): HostPort | undefined {
    return endpoint(this.#socket.localAddress, this.#socket.localPort);
  }

  protected remoteEndpoint(): HostPort | undefined {
    return endpoint(this.#socket.remoteAddress, this.#socket.remotePort);
  }

  /**
   * Hands the socket over to the native relay, with the bytes already read
   * but not consumed. Only when `detachable`.
   */
  detach(): Detached {
    // Not paused here: the relay takes over the socket's events before Bun can deliver more, and resumes
    // it only if it was paused.
    return { socket: this.#socket, ...this.handOver() };
  }
}

/**
 * Handlers shared by every socket; per-socket state lives in `socket.data`. Each `data` chunk is a
 * buffer of its own, kept as it is (Bun 1.4 allocates one ArrayBuffer per callback, of the read's size;
 * the adapter contract's transfer check holds every chunk it reads and would see a reused one).
 */
const handlers: SocketHandlers = {
  data: (s, d) => s.data?.onData(d),
  drain: (s) => s.data?.onDrain(),
  end: (s) => s.data?.onEnd(),
  close: (s, e) => s.data?.onClose(e),
  error: (s, e) => s.data?.onClose(e),
};

/**
 * Handlers of outbound sockets: shared like `handlers`, since Bun keeps a
 * socket's handlers (and whatever their closures hold) for its whole life.
 */
const dialHandlers: SocketHandlers = {
  ...handlers,
  open: (s) => void new BunConnection(s),
  connectError: () => {},
};

/**
 * One direction's source in the native relay: its data goes straight to the
 * peer socket. Only what the kernel did not take is copied and kept, and the
 * source is paused until the peer's `drain` has flushed it; a FIN is passed
 * on (`shutdown()`) once everything before it went out.
 */
class RelaySide implements SocketState {
  peer!: RelaySide;
  unsent: Uint8Array | null = null;
  ended = false;
  closed = false;
  readonly socket: BunSocket;
  readonly tunnel: NativeTunnel;
  /** True for the client's side, whose bytes go up. */
  readonly up: boolean;
  constructor(socket: BunSocket, tunnel: NativeTunnel, up: boolean) {
    this.socket = socket;
    this.tunnel = tunnel;
    this.up = up;
  }

  onData(data: Uint8Array) {
    this.tunnel.moved(this.up, data.length);
    const n = this.peer.socket.write(data);
    if (n < 0) return this.tunnel.stop("error", new Error("peer socket closed"));
    if (n < data.length) {
      // `data` is ours (see the handlers): keep the part the peer did not take.
      this.unsent = data.subarray(n);
      this.socket.pause();
    }
  }

  /** The peer socket drained: flush what this side's peer left unsent (its data, our socket). */
  onDrain() {
    const from = this.peer;
    const rest = from.unsent;
    if (!rest) return;
    const n = this.socket.write(rest);
    if (n < 0) return this.tunnel.stop("error", new Error("socket closed"));
    if (n < rest.length) {
      from.unsent = rest.subarray(n);
      return;
    }
    from.unsent = null;
    this.tunnel.active();
    if (from.ended) this.socket.shutdown();
    else from.socket.resume();
  }

  onEnd() {
    if (this.ended) return;
    this.ended = true;
    if (!this.unsent) this.peer.socket.shutdown();
  }

  onClose(error?: Error) {
    if (this.closed) return;
    this.closed = true;
    // Once our side of a socket is shut down, Bun reports its FIN as `close` without `end`. A close is
    // clean when our FIN went out (the peer ended and everything it sent was flushed here); anything
    // else is a reset or an abort.
    const ourFinSent = this.peer.ended && !this.peer.unsent;
    if (error) this.tunnel.stop("error", error);
    else if (!ourFinSent) this.tunnel.stop("error", new Error("socket closed early"));
    else this.onEnd();
    this.tunnel.closed();
  }
}

/**
 * Two sockets relayed natively, on the shared Tunnel bookkeeping (its links
 * in the shared idle list and shutdown watch). It holds its two sides and
 * nothing of the driver's: no timer, closure or listener of its own, not the
 * options it was started with.
 */
class NativeTunnel extends Tunnel {
  #a: RelaySide;
  #b: RelaySide;
  #done: (r: RelayResult) => void;

  constructor(a: BunSocket, b: BunSocket, done: (r: RelayResult) => void) {
    super();
    this.#done = done;
    this.#a = new RelaySide(a, this, true);
    this.#b = new RelaySide(b, this, false);
    this.#a.peer = this.#b;
    this.#b.peer = this.#a;
    a.data = this.#a;
    b.data = this.#b;
  }

  start(options: RelayOptions, a: Detached, b: Detached) {
    this.track(options.idleTimeout ?? 0, options.signal);
    for (const [side, { pending, eof, paused }] of [[this.#a, a], [this.#b, b]] as const) {
      if (pending) side.onData(pending);
      // A side whose chunk the peer did not take all of was paused by onData; the rest must flow.
      if (eof) side.onEnd();
      else if (!side.unsent && paused) side.socket.resume();
    }
  }

  // A failure or a shutdown resets both; a side closed already (both FINs exchanged, or reset) is left alone.
  override close(reset: boolean): void {
    for (const side of [this.#a, this.#b]) {
      if (side.closed) continue;
      if (reset) side.socket.terminate();
      else side.socket.end();
    }
  }

  /** One side closed (each does once); the second ends the tunnel. */
  closed() {
    // Told by the sides' own flags, not a count: one field less keeps the tunnel in JSC's 112-byte size
    // class (a count made it 160 bytes).
    if (!this.#a.closed || !this.#b.closed) return;
    this.#done(this.result());
  }
}

/** The relay on Bun's own sockets, for two connections this adapter made. */
const nativeRelay: NativeRelay = (client, upstream, options) => {
  if (!(client instanceof BunConnection) || !(upstream instanceof BunConnection)) return undefined;
  if (!client.detachable || !upstream.detachable) return undefined;
  const a = client.detach(), b = upstream.detach();
  return new Promise<RelayResult>((resolve) => {
    new NativeTunnel(a.socket, b.socket, resolve).start(options, a, b);
  });
};

async function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  if (signal?.aborted) throw connectTimedOut();
  let socket: BunSocket;
  try {
    const connecting = bun().connect({
      hostname: host,
      port,
      allowHalfOpen: true,
      socket: dialHandlers,
    });
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(connectTimedOut());
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
    // Bun reports a dial that was out of descriptors as ECONNREFUSED (like ENETUNREACH, oven-sh/bun#37093):
    // probe, since the listener would not say either, and answer as Node and Deno do (general failure),
    // not "refused", which would blame the destination.
    const code = (error as { code?: string } | null)?.code;
    if (code === "ECONNREFUSED" || code === "EMFILE" || code === "ENFILE") {
      const out = descriptors.check();
      if (out) {
        throw connectError(
          Object.assign(new Error(`${out}: too many open files`), { code: out }),
          host,
          port,
        );
      }
    }
    throw connectError(error, host, port);
  }
  return socket.data instanceof BunConnection ? socket.data : new BunConnection(socket);
}

/** The socket handlers of a listener: each accepted socket is wrapped and handed to `onConnection`. */
function acceptHandlers(onConnection: (conn: ByteConnection) => void) {
  return {
    ...handlers,
    open(socket: BunSocket) {
      const conn = new BunConnection(socket);
      try {
        onConnection(conn);
      } catch {
        // A failing handler costs this connection, never the process.
        conn.abort();
      }
    },
  };
}

/**
 * Watches for failed accepts while `listener` listens (Bun.listen has no hook for one: the probe is the only
 * word of one) and returns its close.
 */
function stopper(listener: { stop(closeActive: boolean): void }, onAcceptError?: (error: unknown) => void) {
  const unwatch = onAcceptError ? descriptors.watch(onAcceptError) : () => {};
  return () => {
    unwatch();
    return Promise.resolve(listener.stop(false));
  };
}

function listen(
  address: HostPort,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
  options: ListenOptions = {},
): Promise<Listener> {
  // Inside the executor a bind error (EADDRINUSE) rejects instead of throwing.
  return new Promise((resolve) => {
    const listener = bun().listen({
      hostname: address.host,
      port: address.port,
      allowHalfOpen: true,
      ...(options.reusePort ? { reusePort: true } : {}),
      socket: acceptHandlers(onConnection),
    });
    resolve({
      address: { host: unmapIPv4(listener.hostname), port: listener.port },
      close: stopper(listener, onAcceptError),
    });
  });
}

/** Listens on a Unix domain socket; Bun removes the socket file on stop. */
function listenUnix(
  path: string,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
): Promise<UnixListener> {
  return new Promise((resolve) => {
    const listener = bun().listen({
      unix: path,
      allowHalfOpen: true,
      socket: acceptHandlers(onConnection),
    });
    resolve({ path, close: stopper(listener, onAcceptError) });
  });
}

/**
 * The runtime adapter for Bun.
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { bunAdapter } from "@edgesocks/edgesocks/bun";
 * const server = await serve(bunAdapter, { listen: [{ host: "127.0.0.1", port: 1080 }] });
 * ```
 */
export const bunAdapter: RuntimeAdapter = {
  get name() {
    return `bun ${bun().version}`;
  },
  dial,
  listen,
  listenUnix,
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
  relay: nativeRelay,
  interfaceAddresses: nodeInterfaceAddresses,
  udp: bunUdp,
  serveWebSocket: serveWebSocketBun,
  connectWebSocket: connectWebSocketBun,
};
