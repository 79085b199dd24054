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
import { connect, createServer, type NetConnectOpts, type Socket } from "node:net";
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
  UnixListener,
} from "../runtime.ts";
import { type RelayOptions, type RelayResult, Tunnel } from "../relay.ts";
import { freeBuffer, spansBuffer } from "../core/bytes.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { endpoint, type Handover, SocketConnection } from "./_socket_conn.ts";
import { connectError, connectTimedOut } from "./_errors.ts";
import { nameServerResolver, systemResolver } from "./_node_dns.ts";
import { nodeInterfaceAddresses } from "./_interfaces.ts";
import { DescriptorProbe } from "./_fd_probe.ts";
import { nodeUdp } from "./_node_udp.ts";
import { connectWebSocketNode, serveWebSocketNode } from "./_websocket_node.ts";

/**
 * Out of descriptors, libuv accepts each new connection with its reserve descriptor and closes it at once,
 * telling nobody (no 'error' on the server): a probe tells (see _fd_probe.ts).
 */
const descriptors = new DescriptorProbe("Node closes new connections at once until some are free");

/** How long a gracefully closed socket may take to flush to a peer that does not read. */
const LINGER_MS = 30_000;

/**
 * What a socket buffers before `write()` asks the writer to wait: barely anything, so that a client that
 * stops reading holds one chunk here, not a 64 KiB buffer and a chunk on top, and a write that resolved
 * is done with its chunk (one under this is copied). Also an accepted socket's read-ahead while paused:
 * one read.
 */
const HIGH_WATER_MARK = 1024;
/**
 * Every dialed socket reads into this one shared buffer (`onread`) and each read is copied once, at its
 * size (unless its tunnel moves bulk: {@linkcode isBulk}): no read-ahead into a readable buffer, nothing
 * per idle socket. Its size is the most a tunnel whose client stops reading holds here (one read, in the
 * write the client does not drain): 48 KiB, under the 64 KiB bound with room for the tunnel's own objects
 * (Node's own reads are 64 KiB).
 */
const READ_CHUNK = 48 * 1024;
const READ_BUFFER = Buffer.allocUnsafeSlow(READ_CHUNK);
/**
 * Bulk, and what it reads into: a tunnel whose upstream fills a whole read ({@linkcode READ_CHUNK}) is
 * moving bulk, and reads into a buffer of the tunnel's own next (as big), written to the client as it
 * is, no copy, and read into again once the client's socket has taken it all (its `writableLength` back
 * to 0 right after the write: Node and Deno write from that memory until then, Bun copies). A read that
 * does not fill it (a burst's last, an idle or chatty tunnel) goes back to the shared buffer and lets
 * the tunnel's own go, so that a tunnel idle after a download holds no buffer. The copy, its allocation
 * and the collections that freed them were half the relay's CPU upstream → client (measured on a
 * loopback download: all but 0.2% of the reads full; 0.36-0.50 s/GiB with this, 0.87-1.07 before, the
 * bare forwarder 0.63-0.76).
 */
const isBulk = (n: number) => n === READ_CHUNK;

/** Where a dialed socket reads next: onread's buffer function, called once at connect and after every read. */
function nextBuffer(socket: Owned | undefined): Buffer {
  const owner = socket?.[kOwner];
  return owner instanceof PipeTunnel ? owner.readBuffer() : READ_BUFFER;
}

/** Whether onread's callback runs with the socket as `this` (Node, Deno; not Bun's node:net, measured on 1.4.5). */
const CALLBACK_HAS_SOCKET = process.versions.bun === undefined;

/** onread's callback where it has the socket as `this`: one function for every socket. */
function onUpstreamRead(this: Owned, n: number, buf: Uint8Array): boolean {
  return upstreamRead(this, n, buf as Buffer);
}

/** What the onread callback of a dialed socket does: the read goes to its owner (a copy, but in a tunnel's own buffer). */
function upstreamRead(socket: Owned, n: number, buf: Buffer): boolean {
  const owner = socket[kOwner];
  if (owner instanceof PipeTunnel) return owner.fromUpstream(n, buf);
  const chunk = owner?.spare(n) ?? Buffer.allocUnsafeSlow(n);
  buf.copy(chunk, 0, 0, n);
  owner?.onData(chunk);
  return true;
}

/**
 * Closes `socket` with a RST where the runtime can, so the peer learns the
 * tunnel failed or was cut.
 *
 * Not once `end()` has handed everything written to the kernel (the FIN is
 * being sent, or about to be): libuv refuses the reset while its shutdown is
 * pending (`uv_tcp_close_reset` returns EINVAL), and Node then marks the
 * handle closing anyway and never closes it: the descriptor stays open for
 * the process's life, the socket emits 'error' EINVAL, and at exit Node's
 * handle cleanup waits for it forever, spinning at 100% CPU in `uv_run`
 * (measured on Node 24: a `--workers` worker never exiting; the same as
 * libp2p/js-libp2p#3597). That direction has then ended by itself (every
 * byte of it is in the kernel, the FIN follows them), so `destroy()` tells
 * the peer the truth there.
 */
function reset(socket: Socket): void {
  if (socket.destroyed) return;
  try {
    // A socket still connecting, or whose both directions are done, has no connection to reset.
    if (socket.readyState === "opening" || socket.readyState === "closed") socket.destroy();
    // end() called, nothing left in Node's buffer, not finished: the shutdown is under way (or on nextTick).
    else if (socket.writableEnded && !socket.writableFinished && socket.writableLength === 0) {
      socket.destroy();
    } else socket.resetAndDestroy();
  } catch {
    socket.destroy(); // node:net without resetAndDestroy, or not over a TCP handle
  }
}

/**
 * Frees the memory of `chunk`, a read the client socket handed over and that the kernel has taken all of,
 * at once instead of at the next garbage collection: its ArrayBuffer is detached (`transfer(0)`), only when
 * the chunk spans all of it (a read of its own, never a slice of a pool). Node allocates every read of an
 * accepted socket (64 KiB) as an ArrayBuffer of its own, and V8 counts them as external memory until a
 * collection: at 1 GiB/s that was 16 full (mark-compact) collections per GiB, each marking the whole
 * proxy's heap, most of the CPU the relay spent beyond a bare forwarder client → upstream (measured with
 * `--trace-gc`: 36 mark-compacts for 2 GiB up, 1 with this).
 */
function release(chunk: Buffer): void {
  if (spansBuffer(chunk)) freeBuffer(chunk.buffer);
}

const kOwner = Symbol("edgesocks.owner");
/**
 * A socket with what its (shared) listeners serve: the connection that wraps
 * it, then the tunnel that relays it. The listeners stay on the socket for its
 * life; handing it to the relay changes only its owner.
 */
type Owned = Socket & { [kOwner]?: NodeConnection | PipeTunnel };

/** A `net.Socket` as a {@linkcode ByteConnection}: the shared socket connection over `node:net`. */
class NodeConnection extends SocketConnection {
  #socket: Owned;

  // One set of listener functions for every socket and its whole life (each finds its owner on the
  // socket, `this` of a listener): no closures per connection, and none added or removed when the relay
  // takes the socket (that was a dozen listener changes per tunnel).
  // deno-lint-ignore no-explicit-any -- node:events listeners take any arguments
  static readonly #listeners: [string, (this: Owned, ...args: any[]) => void][] = [
    ["data", function (this: Owned, data: Buffer) {
      const o = this[kOwner];
      if (o instanceof PipeTunnel) o.fromClient(data);
      else o?.onData(data);
    }],
    ["end", function (this: Owned) {
      const o = this[kOwner];
      if (o instanceof PipeTunnel) o.ended(this);
      else o?.onEnd();
    }],
    ["error", function (this: Owned, error: Error) {
      const o = this[kOwner];
      if (o instanceof PipeTunnel) o.stop("error", error);
      else o?.onError(error);
    }],
    ["close", function (this: Owned) {
      const o = this[kOwner];
      if (o instanceof PipeTunnel) o.closed(this);
      else o?.onClose();
    }],
    ["drain", function (this: Owned) {
      const o = this[kOwner];
      if (o instanceof PipeTunnel) o.drained(this);
      else o?.onDrain();
    }],
    // Node emits no 'drain' once end() was called; 'finish' means everything went out.
    ["finish", function (this: Owned) {
      const o = this[kOwner];
      if (!(o instanceof PipeTunnel)) o?.onDrain();
    }],
  ];

  /**
   * A dialed socket's bulk read (all of {@linkcode READ_CHUNK}) that the relay handed back: the next full
   * read is copied into it instead of a new one. Moving bulk through the generic relay (to a WebSocket),
   * a new buffer for every read cost as much again as the copy (first touch of fresh memory) and most of
   * the collections (measured, a 1 GiB download through a Node edge: 0.5 s of 1.9 s/GiB). A read that
   * does not fill it lets it go, so a tunnel idle after a download holds none.
   */
  #spare: Buffer | undefined;

  /** Dialed (it reads through onread, into the shared buffer), not accepted. */
  readonly #dialed: boolean;

  constructor(socket: Socket, dialed = false) {
    // Paused before the listeners go on, so that adding the 'data' one does not start the flow.
    super(true);
    this.#dialed = dialed;
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.pause();
    this.#socket[kOwner] = this;
    for (const [event, fn] of NodeConnection.#listeners) socket.on(event, fn);
  }

  /** Where a dialed socket's read of `n` bytes is copied: the spare, for a full one. */
  spare(n: number): Buffer | undefined {
    const spare = this.#spare;
    this.#spare = undefined;
    return isBulk(n) ? spare : undefined;
  }

  /**
   * A chunk read() returned, done with: a dialed socket's full read is kept for the next, and any other
   * read of its own ArrayBuffer (an accepted socket's every read) is freed now instead of at a collection.
   */
  recycle(chunk: Uint8Array): void {
    if (this.#dialed && isBulk(chunk.length) && spansBuffer(chunk)) {
      this.#spare = chunk as Buffer;
    } else release(chunk as Buffer);
  }

  protected pauseSocket(): void {
    this.#socket.pause();
  }

  protected resumeSocket(): void {
    this.#socket.resume();
  }

  // Node buffers what it cannot send yet: it takes every byte, and says (write() returning false, kept
  // as writableNeedDrain) when the writer should wait for 'drain'.
  protected send(chunk: Uint8Array): number {
    const s = this.#socket;
    if (s.destroyed || s.writableEnded) return -1;
    // A chunk under the high-water mark may still wait in Node's buffer when write() resolves (no 'drain'
    // to wait for): it is copied, so that the caller may reuse or free its memory then (recycle).
    // (Uint8Array.prototype.slice: a Buffer's own slice() is a view.)
    s.write(chunk.length < s.writableHighWaterMark ? Uint8Array.prototype.slice.call(chunk) : chunk);
    return chunk.length;
  }

  protected override backedUp(): boolean {
    return this.#socket.writableNeedDrain;
  }

  protected shutdown(): Promise<void> | void {
    const s = this.#socket;
    if (s.destroyed || s.writableEnded) return;
    // end() sends only a FIN (the socket is half-open); its callback runs once flushed, or with the error.
    return new Promise((resolve, reject) =>
      s.end((error?: Error | null) => error ? reject(error) : resolve())
    );
  }

  protected end(): boolean {
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
    // The waiting writes are in Node's buffer: they settle on 'finish' or 'close'.
    return false;
  }

  protected reset(): void {
    reset(this.#socket);
  }

  // (Node also keeps the answers for the socket's life.)
  protected localEndpoint(): HostPort | undefined {
    return endpoint(this.#socket.localAddress, this.#socket.localPort);
  }

  protected remoteEndpoint(): HostPort | undefined {
    return endpoint(this.#socket.remoteAddress, this.#socket.remotePort);
  }

  /**
   * Hands the socket over to the native relay, with the chunk already read
   * but not consumed. Only when `detachable`.
   */
  detach(): Handover & { socket: Socket } {
    this.#socket[kOwner] = undefined;
    return { socket: this.#socket, ...this.handOver() };
  }
}

// Under Deno's node:net, a write that resolved may still read the chunk's memory: measured, the generic
// relay delivered other bytes than were sent once handed-back chunks were freed or read into again (the
// adapter contract's generic-relay check). There, nothing is handed back.
if (process.versions.deno !== undefined) delete (NodeConnection.prototype as Partial<NodeConnection>).recycle;

/**
 * A dial under way. Its socket's 'connect' and 'error' listeners are the same two functions for every dial
 * (each finds its dial on the socket, `this` of a listener), and the dial itself is the listener of its
 * signal (an event listener object): no closures, `once()` wrappers or their removal per dial.
 */
class Dialing {
  readonly socket: Socket;
  readonly host: string;
  readonly port: number;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (conn: ByteConnection) => void;
  readonly reject: (error: unknown) => void;

  constructor(
    options: DialOptions,
    resolve: (conn: ByteConnection) => void,
    reject: (error: unknown) => void,
  ) {
    this.host = options.host;
    this.port = options.port;
    this.signal = options.signal;
    this.resolve = resolve;
    this.reject = reject;
    // onread's buffer function is called with no `this`: one small closure per socket, which runs first
    // inside connect(), before `socket` is set. Its callback has the socket as `this` on Node and Deno, not
    // on Bun: a second closure there only.
    // deno-lint-ignore prefer-const -- assigned after connect() returns; read by the buffer function
    let dialed: Socket | undefined;
    const socket: Socket = connect({
      host: options.host,
      port: options.port,
      allowHalfOpen: true,
      noDelay: true,
      // As an accepted socket's: a write waiting for the kernel makes the writer wait for 'drain' (then
      // write() has let go of the chunk), but for one under 1 KiB, which is copied (see send()).
      highWaterMark: HIGH_WATER_MARK,
      onread: {
        buffer: () => nextBuffer(dialed),
        callback: CALLBACK_HAS_SOCKET
          ? onUpstreamRead
          : (n: number, buf: Uint8Array) => upstreamRead(socket, n, buf as Buffer),
      },
      // (net.Socket passes highWaterMark on to its streams; @types/node's NetConnectOpts leaves it out.)
    } as NetConnectOpts);
    dialed = socket;
    this.socket = socket;
    (socket as Dialed)[kOwner] = this;
    socket.on("connect", Dialing.onConnect);
    socket.on("error", Dialing.onError);
    this.signal?.addEventListener("abort", this, { once: true });
  }

  static onConnect(this: Dialed): void {
    const d = this[kOwner];
    if (!(d instanceof Dialing)) return;
    d.#settle();
    d.resolve(new NodeConnection(this, true));
  }

  static onError(this: Dialed, error: Error): void {
    const d = this[kOwner];
    if (!(d instanceof Dialing)) return;
    d.#settle();
    this.destroy();
    const code = (error as { code?: string }).code;
    // Out of descriptors for the dial: most likely for the listener too, which would not say.
    if (code === "EMFILE" || code === "ENFILE") descriptors.check();
    d.reject(connectError(error, d.host, d.port));
  }

  /** The signal aborted (the connect timeout, or the server shutting down). */
  handleEvent(): void {
    this.#settle();
    this.socket.destroy();
    this.reject(connectTimedOut());
  }

  #settle() {
    const s = this.socket as Dialed;
    s[kOwner] = undefined;
    this.signal?.removeEventListener("abort", this);
    s.off("connect", Dialing.onConnect);
    s.off("error", Dialing.onError);
  }
}

/** A socket being dialed: its owner is the dial until it connects, then the connection. */
type Dialed = Socket & { [kOwner]?: NodeConnection | PipeTunnel | Dialing };

function dial(options: DialOptions): Promise<ByteConnection> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(connectTimedOut());
    new Dialing(options, resolve, reject);
  });
}

// Node's default accept queue is 511: a burst beyond it has its SYNs dropped and retried after 1, 3, 7 s
// (measured: 1,000 simultaneous CONNECTs dropped 20-1,725 SYNs). The kernel caps this at somaxconn.
const LISTEN_BACKLOG = 4096;

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
    const server = createServer({
      allowHalfOpen: true,
      noDelay: true,
      pauseOnConnect: true,
      highWaterMark: HIGH_WATER_MARK,
    }, (socket) => {
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
    const listenOptions = { host: address.host, port: address.port, backlog: LISTEN_BACKLOG };
    server.listen({ ...listenOptions, ...(reusePort ? { reusePort } : {}) }, () => {
      server.off("error", reject);
      // After listening, accept errors are transient: libuv retries; never crash. (Out of descriptors,
      // libuv emits none: the probe tells.)
      server.on("error", (error) => onAcceptError?.(error));
      const unwatch = onAcceptError ? descriptors.watch(onAcceptError) : () => {};
      const bound = server.address();
      const real = typeof bound === "object" && bound
        ? { host: unmapIPv4(bound.address), port: bound.port }
        : address;
      resolve({
        address: real,
        close: () =>
          new Promise<void>((done) => {
            unwatch();
            server.close();
            done();
          }),
      });
    });
  });
}

/** Listens on a Unix domain socket; Node removes the socket file on close. */
function listenUnix(
  path: string,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
): Promise<UnixListener> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      const conn = new NodeConnection(socket);
      try {
        onConnection(conn);
      } catch {
        conn.abort();
      }
    });
    server.once("error", reject);
    server.listen({ path, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      server.on("error", (error) => onAcceptError?.(error));
      const unwatch = onAcceptError ? descriptors.watch(onAcceptError) : () => {};
      resolve({
        path,
        close: () =>
          new Promise<void>((done) => {
            unwatch();
            server.close();
            done();
          }),
      });
    });
  });
}

/**
 * Two sockets relayed, on the shared Tunnel bookkeeping. Its sockets'
 * listeners are the ones every socket has (each finds its tunnel on the
 * socket), so an idle tunnel holds little more than the two sockets.
 */
class PipeTunnel extends Tunnel {
  readonly client: Owned;
  readonly upstream: Owned;
  /** The client socket's `bytesRead` when the relay took it, less what the driver had read but not consumed. */
  readonly clientRead: number;
  /** Which sockets' closes were counted: 1 the client's, 2 the upstream's. */
  #closed = 0;
  #done: (result: RelayResult) => void;
  /** The upstream's own read buffer while it moves bulk (see {@linkcode isBulk}). */
  #buffer: Buffer | undefined = undefined;

  static onTimeout(this: Owned): void {
    (this[kOwner] as PipeTunnel).stop("idle");
  }

  /**
   * A chunk from the client, written upstream; one upstream's socket does not take at once pauses the
   * client until its 'drain'. One that went to the kernel at once (nothing left in Node's buffer) is done
   * with: its memory is let go of now ({@linkcode release}), and the client reads on whatever write() said.
   */
  fromClient(chunk: Buffer): void {
    const u = this.upstream;
    if (u.destroyed || u.writableEnded) return;
    const taken = u.write(chunk);
    if (u.writableLength === 0) release(chunk);
    else if (!taken) this.client.pause();
  }

  /** `socket` can take more: the other one reads again. */
  drained(socket: Owned): void {
    if (socket === this.client) this.upstream.resume();
    else this.client.resume();
  }

  /** `socket`'s peer sent its FIN: it goes on to the other one's peer. */
  ended(socket: Owned): void {
    if (socket === this.client) this.upstream.end();
    else this.client.end();
  }

  /**
   * A read from upstream (`n` bytes of `buf`), written to the client; one the client does not take at
   * once stops the reads. A read in the shared buffer is copied; one in the tunnel's own buffer is written
   * as it is, and that buffer is read into again only once the client's socket has taken all of it.
   */
  fromUpstream(n: number, buf: Buffer): boolean {
    const c = this.client;
    if (c.destroyed || c.writableEnded) return false;
    this.down += n;
    let chunk: Buffer;
    if (buf === READ_BUFFER) {
      chunk = Buffer.allocUnsafeSlow(n);
      buf.copy(chunk, 0, 0, n);
    } else chunk = buf.subarray(0, n);
    const taken = c.write(chunk);
    if (c.writableLength === 0) {
      // In the kernel already (the write completed at once): no buffer is held, reading goes on, whatever
      // write() said ('drain' follows, and resumes a socket that never paused).
      if (isBulk(n)) this.#buffer ??= Buffer.allocUnsafeSlow(READ_CHUNK);
      else this.#buffer = undefined;
      return true;
    }
    // The write waits for the client. Under the high-water mark (write() took it) reading goes on, and the
    // tunnel's own buffer, if it is the one written, stays with the write: the next bulk read gets another.
    if (taken) {
      if (buf === this.#buffer) this.#buffer = undefined;
      return true;
    }
    // Else no read until the client's 'drain', which comes once every write went out: the buffer is free
    // again by then. pause() as well as returning false: Bun's node:net ignores onread's false
    // (oven-sh/bun#33382).
    this.upstream.pause();
    return false;
  }

  /** Where the upstream reads next: the tunnel's own buffer while it moves bulk and the client took it, else the shared one. */
  readBuffer(): Buffer {
    return this.#buffer ?? READ_BUFFER;
  }

  constructor(
    client: Socket,
    clientRead: number,
    upstream: Socket,
    downPending: number,
    done: (result: RelayResult) => void,
  ) {
    super();
    this.client = client;
    this.upstream = upstream;
    this.clientRead = clientRead;
    // Bytes down are counted as they are written (Bun's node:net does not count onread reads in bytesRead).
    this.down = downPending;
    this.#done = done;
  }

  // A failure or a shutdown resets both (reset() leaves a socket whose both directions are done alone).
  override close(withReset: boolean): void {
    if (withReset) {
      reset(this.client);
      reset(this.upstream);
    } else {
      this.client.destroy();
      this.upstream.destroy();
    }
  }

  /** `socket` closed (each is counted once); the second ends the tunnel. */
  closed(socket: Owned): void {
    const bit = socket === this.client ? 1 : 2;
    if (this.#closed & bit) return;
    this.#closed |= bit;
    if (this.#closed !== 3) return;
    this.up = this.client.bytesRead - this.clientRead;
    this.#done(this.result());
  }
}

/** Counts a socket that had closed by itself before the relay took it. */
const closedBefore = (t: PipeTunnel, s: Owned) => t.closed(s);

/**
 * Starts the bookkeeping of a pipe relay. Apart from the relay itself, so
 * that the promise's executor holds only these arguments, never the chunks
 * handed over.
 */
function startPipeTunnel(
  sa: Owned,
  readA: number,
  sb: Owned,
  downPending: number,
  options: RelayOptions,
): Promise<RelayResult> {
  return new Promise<RelayResult>((resolve) => {
    const tunnel = new PipeTunnel(sa, readA, sb, downPending, resolve);
    for (const s of [sa, sb]) {
      s[kOwner] = tunnel;
      // A socket whose both directions were done has closed by itself: its 'close' was emitted or is
      // queued on nextTick, so it is counted after that too (once: a queued one counts it first).
      if (s.destroyed) setImmediate(closedBefore, tunnel, s);
    }
    // Node's socket timeout: refreshed by every read and write of the client socket, which sees every
    // byte of the tunnel, and kept by Node in one list per duration, the same sharing as the Tunnel's
    // idle lists, at no JavaScript per chunk.
    const idle = options.idleTimeout ?? 0;
    if (idle > 0) {
      sa.setTimeout(idle);
      sa.on("timeout", PipeTunnel.onTimeout);
    }
    tunnel.track(0, options.signal);
  });
}

/**
 * The relay on Node's own streams: client → upstream by 'data' and `write()`, upstream →
 * client by the upstream's `onread` reads (at most {@linkcode READ_CHUNK}
 * each) written to the client, the upstream's reads stopped while a write
 * waits for the client's `drain`. Backpressure both ways, a FIN passed on by
 * `end()` since the sockets are half-open, the idle timeout by
 * `setTimeout()` on the client socket, an error on one side or a shutdown
 * resets both. A client that stops reading leaves one read here, never a
 * readable buffer's read-ahead on top. Sockets are not paused per chunk as
 * the generic read() loop must.
 */
const nativeRelay: NativeRelay = (client, upstream, options) => {
  if (!(client instanceof NodeConnection) || !(upstream instanceof NodeConnection)) return undefined;
  if (!client.detachable || !upstream.detachable) return undefined;
  const a = client.detach(), b = upstream.detach();
  const sa = a.socket, sb = b.socket;
  const started = startPipeTunnel(
    sa,
    sa.bytesRead - (a.pending?.length ?? 0),
    sb,
    b.pending?.length ?? 0,
    options,
  );
  // Client → upstream as pipe() does it (a write upstream does not take pauses the client until its
  // 'drain', the client's FIN is passed on by end()), on the sockets' own shared listeners instead of
  // pipe()'s seven closures per tunnel, set up and torn down for every one; each read the kernel took at
  // once is freed at once (see PipeTunnel.fromClient).
  const taken = a.pending ? sb.write(a.pending) : true;
  if (a.eof) sb.end();
  else if (taken) sa.resume();
  else sa.pause();
  // Upstream → client without pipe(): the upstream socket reads into one shared buffer (onread) and each
  // read is copied once and written, or, moving bulk, into a buffer of the tunnel's own that is written
  // as it is; a write the client does not drain stops the upstream's reads at once, so a client that
  // stops reading leaves at most one read here (pipe() kept one read in the client's writable buffer and
  // read ahead up to the upstream's readable buffer on top).
  const flowing = b.pending ? sa.write(b.pending) : true;
  if (b.eof) sa.end();
  else if (flowing) sb.resume();
  return started;
};

/**
 * The runtime adapter for Node (≥ 20).
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const server = await serve(nodeAdapter, { listen: [{ host: "127.0.0.1", port: 1080 }] });
 * ```
 */
export const nodeAdapter: RuntimeAdapter = {
  name: `node ${process.versions.node}`,
  dial,
  listen,
  listenUnix,
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
  relay: nativeRelay,
  interfaceAddresses: nodeInterfaceAddresses,
  udp: nodeUdp,
  serveWebSocket: serveWebSocketNode,
  connectWebSocket: connectWebSocketNode,
};
