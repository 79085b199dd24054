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
  Resolver,
  RuntimeAdapter,
} from "../connection.ts";
import { SocksError } from "../core/errors.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { ReplyCode } from "../core/wire.ts";
import { notFound, reverseLookupName, systemResolver } from "./_node_dns.ts";

// A read buffer stays pending for as long as a socket is idle, so it starts
// small and only grows (doubling) while reads fill it: a fixed 64 KiB costs
// ~110 KiB per idle tunnel; starting at 1 KiB rather than 4 KiB measured
// 29 KiB instead of 39 KiB per idle tunnel in bench/.
const MIN_READ = 1024;
const MAX_READ = 64 * 1024;
const ACCEPT_RETRY_MS = 100;

function hostPort(addr: Deno.Addr): HostPort | undefined {
  return addr.transport === "tcp" ? { host: unmapIPv4(addr.hostname), port: addr.port } : undefined;
}

class DenoConnection implements ByteConnection {
  readonly localAddress?: HostPort;
  readonly remoteAddress?: HostPort;
  #conn: Deno.Conn;
  #readSize = MIN_READ;
  #closed = false;

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    try {
      conn.setNoDelay(true);
    } catch { /* the peer may already have reset; the first read or write will say so */ }
    this.localAddress = hostPort(conn.localAddr);
    this.remoteAddress = hostPort(conn.remoteAddr);
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    // A fresh buffer per read: the caller owns the chunk and may hold it past the next read.
    const buf = new Uint8Array(this.#readSize);
    let n: number | null;
    try {
      n = await this.#conn.read(buf);
    } catch (error) {
      // Our own close() cancels the pending read; anything else (a reset above all) is real.
      if (
        this.#closed && (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted)
      ) {
        return null;
      }
      throw error;
    }
    if (n === null) return null;
    if (n === buf.length) this.#readSize = Math.min(buf.length * 2, MAX_READ);
    else if (n < buf.length / 2) this.#readSize = Math.max(buf.length / 2, MIN_READ);
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  async write(chunk: Uint8Array): Promise<void> {
    // Deno.Conn.write resolves once the kernel took some bytes, possibly not all.
    for (let off = 0; off < chunk.length;) {
      const n = await this.#conn.write(off === 0 ? chunk : chunk.subarray(off));
      if (n <= 0) throw new Deno.errors.WriteZero("socket accepted no bytes");
      off += n;
    }
  }

  async closeWrite(): Promise<void> {
    try {
      await this.#conn.closeWrite();
    } catch (error) {
      // A peer that already went away (or our own close) leaves nothing to half-close.
      if (error instanceof Deno.errors.NotConnected) return;
      if (this.#closed && error instanceof Deno.errors.BadResource) return;
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed underneath us */ }
  }
}

// Deno has error classes for a few errno values only; the rest are told apart by code or message.
function connectReply(error: unknown, text: string): ReplyCode {
  const E = Deno.errors;
  if (error instanceof E.ConnectionRefused) return ReplyCode.ConnectionRefused;
  if (/EHOSTUNREACH|host (is )?unreachable|no route to host/i.test(text)) return ReplyCode.HostUnreachable;
  if (error instanceof E.NetworkUnreachable || /ENETUNREACH|network (is )?unreachable/i.test(text)) {
    return ReplyCode.NetworkUnreachable;
  }
  if (error instanceof E.TimedOut) return ReplyCode.TtlExpired;
  if (error instanceof E.PermissionDenied || error instanceof E.NotCapable) return ReplyCode.NotAllowed;
  if (error instanceof E.NotFound || /ENOTFOUND|EAI_|name|resolv|lookup/i.test(text)) {
    return ReplyCode.HostUnreachable;
  }
  return ReplyCode.GeneralFailure;
}

function connectError(error: unknown, host: string, port: number): SocksError {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  const text = typeof code === "string" ? `${message} (${code})` : message;
  return new SocksError(connectReply(error, text), `connect to ${host}:${port} failed: ${text}`, {
    cause: error,
  });
}

async function dial({ host, port, signal }: DialOptions): Promise<ByteConnection> {
  let conn: Deno.TcpConn;
  try {
    // Deno 2.9 honours `signal` during connect and closes the half-open socket itself;
    // an abort after the connection is established leaves it alone.
    conn = await Deno.connect({ hostname: host, port, transport: "tcp", signal });
  } catch (error) {
    if (signal?.aborted) throw new SocksError(ReplyCode.TtlExpired, "connect timed out", { cause: error });
    throw connectError(error, host, port);
  }
  return new DenoConnection(conn);
}

function startListener(
  address: HostPort,
  onConnection: (conn: ByteConnection) => void,
  onAcceptError?: (error: unknown) => void,
): Listener {
  const listener = Deno.listen({ hostname: address.host, port: address.port, transport: "tcp" });
  let closed = false;
  const acceptLoop = (async () => {
    while (!closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (closed || error instanceof Deno.errors.BadResource) return;
        // Transient (EMFILE, ECONNABORTED, ...): report, then back off rather than spin or die.
        onAcceptError?.(error);
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      try {
        onConnection(new DenoConnection(conn));
      } catch {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    }
  })();
  return {
    address: hostPort(listener.addr) ?? address,
    async close() {
      if (!closed) {
        closed = true;
        try {
          listener.close();
        } catch { /* already closed */ }
      }
      await acceptLoop;
    },
  };
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
 * The runtime adapter for Deno.
 *
 * @example
 * ```ts
 * import { denoAdapter } from "./deno.ts";
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
  listen: (address, onConnection, onAcceptError) =>
    Promise.resolve().then(() => startListener(address, onConnection, onAcceptError)),
  resolver: (nameServer) => nameServer ? nameServerResolver(nameServer) : systemResolver,
};
