/**
 * The Deno adapter: TCP through `Deno.listen` / `Deno.connect` driven by a
 * plain read/write loop on `Deno.Conn`, DNS through `Deno.resolveDns` (given a
 * name server) or `node:dns` (the system resolver).
 *
 * `conn.readable` / `conn.writable` are deliberately not used: closing the
 * writable or reaching EOF on the readable closes the whole socket, which
 * breaks half-close (denoland/deno#22258, #27510).
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
  Resolver,
  RuntimeAdapter,
  UnixListener,
} from "../runtime.ts";
import { runRelay, Tunnel } from "../relay.ts";
import { nextReadSize, spansBuffer } from "../core/bytes.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { connectError, connectTimedOut } from "./_errors.ts";
import { notFound, reverseLookupName, systemResolver } from "./_node_dns.ts";
import { denoUdp, denoUdpUnavailable } from "./_deno_udp.ts";
import { connectWebSocketDeno, serveWebSocketDeno } from "./_websocket_deno.ts";

// A read buffer stays pending for as long as a socket is idle, so it starts
// small and only grows (doubling) while reads fill it: a fixed 64 KiB costs
// ~110 KiB per idle tunnel; starting at 1 KiB rather than 4 KiB measured
// 29 KiB instead of 39 KiB per idle tunnel in bench/.
// It is also the most a tunnel whose client stops reading holds here: the one read whose write the client
// does not drain (each direction reads only after its last write went out). 48 KiB keeps that under 64 KiB
// with room for the tunnel's own objects.
const MIN_READ = 1024;
const MAX_READ = 48 * 1024;
// After a failed accept (out of descriptors, above all: the connection stays in the queue), the next try.
// An accept() that fails again costs one system call, so this is short: new connections wait at most about
// this long once descriptors free up (100 ms made recovery take 105-207 ms).
const ACCEPT_RETRY_MS = 20;
// Deno's default accept queue is 511: a burst beyond it has its SYNs dropped and retried after 1, 3, 7 s,
// enough to run into the client's or the handshake timeout. The kernel caps this at net.core.somaxconn.
const LISTEN_BACKLOG = 4096;

function hostPort(addr: Deno.Addr): HostPort | undefined {
  return addr.transport === "tcp" ? { host: unmapIPv4(addr.hostname), port: addr.port } : undefined;
}

/** True when `error` is what a pending read or write sees after our own close(). */
function closedUnderneath(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted;
}

class DenoConnection implements ByteConnection {
  #conn: Deno.TcpConn;
  #readSize = MIN_READ;
  #closed = false;
  #busy = 0;

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    try {
      conn.setNoDelay(true);
    } catch { /* the peer may already have reset; the first read or write will say so */ }
  }

  get localAddress(): HostPort | undefined {
    return hostPort(this.#conn.localAddr);
  }

  get remoteAddress(): HostPort | undefined {
    return hostPort(this.#conn.remoteAddr);
  }

  /** True while no read or write is in flight: the socket can be handed over. */
  get detachable(): boolean {
    return !this.#closed && this.#busy === 0;
  }

  /** Hands the socket over to the native relay; this wrapper is closed from then on. */
  detach(): Deno.TcpConn {
    this.#closed = true;
    return this.#conn;
  }

  /**
   * A full read the relay handed back (`recycle`): the next read goes into it. Moving bulk through the
   * generic relay (to a WebSocket), a new buffer per read is an allocation, a first touch of fresh memory
   * and, later, a collection for every 48 KiB.
   */
  #spare: Uint8Array | undefined;

  async read(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    // A fresh buffer per read (or one handed back): the caller owns the chunk and may hold it past the next read.
    const spare = this.#spare;
    this.#spare = undefined;
    const buf = spare?.length === this.#readSize ? spare : new Uint8Array(this.#readSize);
    let n: number | null;
    this.#busy++;
    try {
      n = await this.#conn.read(buf);
    } catch (error) {
      // Our own close() cancels the pending read; anything else (a reset above all) is real.
      if (this.#closed && closedUnderneath(error)) return null;
      throw error;
    } finally {
      this.#busy--;
    }
    if (n === null) return null;
    this.#readSize = nextReadSize(buf.length, n, MIN_READ, MAX_READ);
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  /** A chunk read() returned, done with: a full one (all of its buffer) is read into again. */
  recycle(chunk: Uint8Array): void {
    if (chunk.length === MAX_READ && spansBuffer(chunk)) {
      this.#spare = chunk;
    }
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#busy++;
    try {
      await writeAll(this.#conn, chunk);
    } finally {
      this.#busy--;
    }
  }

  closeWrite(): Promise<void> {
    return closeWrite(this.#conn, () => this.#closed);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed underneath us */ }
  }
}

/** Sends a FIN; a peer that already went away, or our own close (`closed()`), leaves nothing to half-close. */
async function closeWrite(conn: Deno.Conn, closed: () => boolean): Promise<void> {
  try {
    await conn.closeWrite();
  } catch (error) {
    if (error instanceof Deno.errors.NotConnected) return;
    if (closed() && error instanceof Deno.errors.BadResource) return;
    throw error;
  }
}

/** Deno.Conn.write resolves once the kernel took some bytes, possibly not all. */
async function writeAll(conn: Deno.Conn, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length;) {
    const n = await conn.write(off === 0 ? chunk : chunk.subarray(off));
    if (n <= 0) throw new Deno.errors.WriteZero("socket accepted no bytes");
    off += n;
  }
}

/**
 * Two `Deno.Conn`s relayed natively. `Deno.Conn` cannot send a reset (no
 * SO_LINGER, no reset call), so a failure or a shutdown closes both sides
 * like any other end, with `close()` at once, which is the least misleading
 * Deno can do. Measured (tests/cut_tunnel_test.ts): a client that is only
 * receiving gets what was already handed to the kernel, then a FIN, which
 * looks like a complete download at the TCP level (HTTP's length or chunked
 * framing, or TLS's close_notify, still show the truncation); a client still
 * sending gets the FIN and then a reset from Linux as its next bytes reach a
 * closed socket (a reset at once when its bytes were unread at the close);
 * an upstream still sending is reset the same way. curl downloading through
 * it when the proxy gets SIGTERM: exit 18 ("transfer closed with N bytes
 * remaining") for a body with a Content-Length, exit 0 for one that ends
 * with the connection. `closeWrite()` instead would send the same FIN and
 * let a client that is still sending go on unanswered, and draining what is
 * left would make the cut look even more complete. (Deno's `node:net` does
 * send a reset, `resetAndDestroy()`, so the Node adapter under Deno resets a
 * cut tunnel, curl exit 56; a `Deno.Conn` has no such call.)
 */
class DenoTunnel extends Tunnel {
  readonly client: Deno.TcpConn;
  readonly upstream: Deno.TcpConn;
  constructor(client: Deno.TcpConn, upstream: Deno.TcpConn) {
    super();
    this.client = client;
    this.upstream = upstream;
  }

  override close(_reset: boolean): void {
    for (const c of [this.client, this.upstream]) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }
}

/** One direction of a {@linkcode DenoTunnel}, until its FIN. */
async function pumpDeno(t: DenoTunnel, up: boolean): Promise<void> {
  const src = up ? t.client : t.upstream, dst = up ? t.upstream : t.client;
  let buf = new Uint8Array(MIN_READ);
  let short = 0;
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) {
        if (!t.stopped) await closeWrite(dst, () => t.stopped);
        return;
      }
      t.moved(up, n);
      await writeAll(dst, n === buf.length ? buf : buf.subarray(0, n));
      t.active();
      // Grown while reads fill the buffer; shrunk only after several short reads in a row, so a
      // bulk transfer whose reads come back partly filled keeps its buffer.
      if (n === buf.length) {
        short = 0;
        if (buf.length < MAX_READ) buf = new Uint8Array(Math.min(buf.length * 2, MAX_READ));
      } else if (n < buf.length / 2 && buf.length > MIN_READ && ++short >= 4) {
        short = 0;
        buf = new Uint8Array(Math.max(buf.length / 2, MIN_READ));
      }
    }
  } catch (error) {
    // The relay's own stop cancels the other direction's pending read or write: not a second failure.
    if (t.stopped && closedUnderneath(error)) return;
    throw error;
  }
}

/**
 * The relay on `Deno.Conn` itself: a read/write loop per direction with one
 * buffer per direction, reused from read to read (the generic relay's
 * read() must hand out a fresh buffer each time) and sized as DenoConnection
 * sizes its reads: small while the tunnel is quiet, doubling to 64 KiB while
 * reads fill it. The generic relay's bookkeeping (`runRelay` with a Tunnel):
 * a FIN is passed on as a FIN, a failure closes both sides, the idle timeout
 * and the signal close both.
 */
const nativeRelay: NativeRelay = (client, upstream, options) => {
  if (!(client instanceof DenoConnection) || !(upstream instanceof DenoConnection)) return undefined;
  if (!client.detachable || !upstream.detachable) return undefined;
  return runRelay(new DenoTunnel(client.detach(), upstream.detach()), options, pumpDeno);
};

async function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  let conn: Deno.TcpConn;
  try {
    // Deno 2.9 honours `signal` during connect and closes the half-open socket itself;
    // an abort after the connection is established leaves it alone.
    conn = await Deno.connect({ hostname: host, port, transport: "tcp", signal });
  } catch (error) {
    if (signal?.aborted) throw connectTimedOut(error);
    throw connectError(error, host, port);
  }
  return new DenoConnection(conn);
}

function startListener(
  address: HostPort,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
  options: ListenOptions = {},
): Listener {
  // Deno.listen({ reusePort }) without --unstable-net ends the whole process (exit 70) instead of
  // throwing; Deno.listenDatagram exists exactly when the flag was given.
  if (options.reusePort && typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    throw new Error("sharing a port (SO_REUSEPORT) needs Deno's --unstable-net flag");
  }
  const listener = Deno.listen({
    hostname: address.host,
    port: address.port,
    transport: "tcp",
    tcpBacklog: LISTEN_BACKLOG,
    ...(options.reusePort ? { reusePort: true } : {}),
  });
  const accepting = acceptLoop(listener, onConnection, onAcceptError);
  return { address: hostPort(listener.addr) ?? address, close: accepting.stop };
}

/**
 * Accepts from `listener` until stopped, wrapping each connection (a
 * `Deno.UnixConn` has the same read, write, closeWrite and close as a TCP
 * one; the wrapper tries setNoDelay and forgoes it). A failed accept
 * (EMFILE, ECONNABORTED, ...) is reported, then retried after a pause rather
 * than spinning or dying. `stop()` closes the listener (then runs `onStop`
 * once) and resolves when the loop has ended.
 */
function acceptLoop(
  listener: Deno.Listener,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
  onStop?: () => void,
): { stop(): Promise<void> } {
  let closed = false;
  const loop = (async () => {
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (closed || error instanceof Deno.errors.BadResource) return;
        onAcceptError?.(error);
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      try {
        onConnection(new DenoConnection(conn as Deno.TcpConn));
      } catch {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    }
  })();
  return {
    async stop() {
      if (!closed) {
        closed = true;
        try {
          listener.close();
        } catch { /* already closed */ }
        onStop?.();
      }
      await loop;
    },
  };
}

/**
 * Listens on a Unix domain socket; its connections are wrapped as TCP ones are.
 * Deno leaves the socket file behind on close: it is removed here.
 */
function startUnixListener(
  path: string,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
): UnixListener {
  const listener = Deno.listen({ transport: "unix", path });
  const accepting = acceptLoop(listener, onConnection, onAcceptError, () => {
    try {
      Deno.removeSync(path);
    } catch { /* gone already, or no --allow-write for it */ }
  });
  return { path, close: accepting.stop };
}

function nameServerResolver(server: HostPort): Resolver {
  const options = { nameServer: { ipAddr: server.host, port: server.port } };
  return {
    async lookup(name) {
      const answers = await Promise.allSettled([
        Deno.resolveDns(name, "A", options),
        Deno.resolveDns(name, "AAAA", options),
      ]);
      const found = answers.flatMap((a) => a.status === "fulfilled" ? a.value : []);
      if (found.length > 0) return found;
      throw notFound(name, answers.find((a) => a.status === "rejected")?.reason);
    },
    async reverse(ip) {
      const ptr = reverseLookupName(ip);
      if (!ptr) throw notFound(ip);
      let names: string[];
      try {
        names = await Deno.resolveDns(ptr, "PTR", options);
      } catch (error) {
        throw notFound(ip, error);
      }
      names = names.map((n) => n.replace(/\.$/, "")).filter((n) => n !== "");
      if (names.length === 0) throw notFound(ip);
      return names;
    },
  };
}

/**
 * The host's interface addresses, when this process may read them
 * (`--allow-sys`): asked first, so a plain run never prompts.
 */
function interfaceAddresses(): string[] | undefined {
  const allowed = Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state === "granted";
  return allowed ? Deno.networkInterfaces().map((i) => i.address.split("%")[0]) : undefined;
}

/**
 * The runtime adapter for Deno.
 *
 * @example
 * ```ts
 * import { denoAdapter } from "@edgesocks/edgesocks/deno";
 * const listener = await denoAdapter.listen({ host: "127.0.0.1", port: 0 }, (conn) => conn.close());
 * const conn = await denoAdapter.dial({ host: "127.0.0.1", port: listener.address.port });
 * conn.close();
 * await listener.close();
 * ```
 */
export const denoAdapter: RuntimeAdapter = {
  name: `deno ${Deno.version.deno}`,
  dial,
  // Deno.listen throws synchronously (AddrInUse, ...): turn that into a rejection.
  listen: (address, onConnection, onAcceptError, options) =>
    Promise.resolve().then(() => startListener(address, onConnection, onAcceptError, options)),
  listenUnix: (path, onConnection, onAcceptError) =>
    Promise.resolve().then(() => startUnixListener(path, onConnection, onAcceptError)),
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
  relay: nativeRelay,
  interfaceAddresses,
  // UDP only where Deno.listenDatagram exists (--unstable-net); otherwise the reason instead.
  ...(denoUdpUnavailable() === undefined ? { udp: denoUdp } : { udpUnavailable: denoUdpUnavailable() }),
  serveWebSocket: serveWebSocketDeno,
  connectWebSocket: connectWebSocketDeno,
};
