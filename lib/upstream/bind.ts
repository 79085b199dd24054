/**
 * BIND the direct way: a listening socket on the address the client reached
 * the proxy on (the control connection's local address), that takes exactly
 * one connection, and only from the address the request named (DST.ADDR,
 * after DNS for a name; each address checked by the destination policy under
 * the rule command `bind`). A connection from any other address is closed at
 * once with no byte sent, and the wait goes on; the listener is closed as
 * soon as the peer is in, the wait is aborted (connect timeout, control
 * connection closed, shutdown), or the binding is closed.
 *
 * @module
 */
import { canonicalIP, type HostPort } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import type { ProxyRequest } from "../core/request.ts";
import { fitsSocks4, unmapIPv4 } from "../core/replies.ts";
import { ReplyCode } from "../core/wire.ts";
import { type DestinationPolicy, evaluateDestination } from "../policy.ts";
import type { ByteConnection, Listener, Resolver } from "../runtime.ts";
import { type Binding, type Opened, UpstreamError } from "./upstream.ts";

/**
 * Opens a listening socket: a runtime adapter's `listen`, as BIND uses it.
 *
 * @example
 * ```ts
 * import type { OpenListener, RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const openListener: OpenListener = (address, onConnection) => adapter.listen(address, onConnection);
 * ```
 */
export type OpenListener = (
  address: HostPort,
  onConnection: (conn: ByteConnection) => void,
) => Promise<Listener>;

/** An address in one spelling: IPv4-mapped IPv6 as IPv4, IPv6 canonical. */
function normal(host: string): string | null {
  const ip = canonicalIP(host);
  return ip === null ? null : unmapIPv4(ip);
}

const UNSPECIFIED = new Set(["0.0.0.0", "::"]);

function refused(message: string, dialed?: string): UpstreamError {
  return new UpstreamError(ReplyCode.NotAllowed, message, {
    code: "refused_policy",
    ...(dialed !== undefined ? { dialed } : {}),
  });
}

/** The addresses that may connect back: DST.ADDR, resolved when it is a name, each allowed by the policy. */
async function peersAllowed(
  request: ProxyRequest,
  policy: DestinationPolicy,
  resolver: Resolver,
): Promise<Set<string>> {
  const port = request.target.port;
  const literal = normal(request.target.host);
  const name = literal === null ? request.target.host : undefined;
  if (name !== undefined) {
    const verdict = evaluateDestination({ command: "bind", name, port }, policy);
    if (verdict !== "undecided" && verdict !== null) throw refused(`${name} not allowed by policy`);
  }
  let candidates: string[];
  if (literal !== null) candidates = [literal];
  else {
    try {
      candidates = (await resolver.lookup(name!)).map((a) => normal(a) ?? a);
    } catch (error) {
      throw error instanceof SocksError
        ? new SocksError(error.reply, error.message, { cause: error.cause ?? error, code: "dns_failed" })
        : error;
    }
  }
  // 0.0.0.0 would mean "anyone": BIND waits for one named host, never for whoever comes first.
  if (candidates.every((ip) => UNSPECIFIED.has(ip))) {
    throw refused("BIND needs the address of the host that will connect (not 0.0.0.0 or ::)");
  }
  const allowed = candidates.filter((ip) =>
    !UNSPECIFIED.has(ip) && evaluateDestination({ command: "bind", name, ip, port }, policy) === null
  );
  if (allowed.length === 0) {
    throw refused(`BIND peer ${candidates.join(", ")} not allowed by policy`, candidates[0]);
  }
  return new Set(allowed);
}

/**
 * The direct BIND: listens on `options.address`, else on `local` (the
 * control connection's local address), port 0, and waits for one connection
 * from the request's DST.ADDR.
 * Rejects with a `SocksError` (NotAllowed when the policy refuses DST.ADDR,
 * GeneralFailure when there is no local address or the listen fails).
 *
 * @example
 * ```ts
 * import { directBind, DEFAULT_POLICY, type RuntimeAdapter, type ProxyRequest } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter, request: ProxyRequest;
 * const bind = directBind((a, on) => adapter.listen(a, on), adapter.resolver());
 * const binding = await bind(request, DEFAULT_POLICY, { host: "127.0.0.1", port: 1080 });
 * const peer = await binding.accept(AbortSignal.timeout(10_000)); // the one connection from DST.ADDR
 * ```
 */
export function directBind(
  openListener: OpenListener,
  resolver: Resolver,
  options: { address?: string } = {},
): (request: ProxyRequest, policy: DestinationPolicy, local: HostPort | undefined) => Promise<Binding> {
  const fixed = options.address !== undefined ? normal(options.address) : undefined;
  if (fixed === null) {
    throw new TypeError(`BIND address ${JSON.stringify(options.address)} is not an IP address`);
  }
  return async (request, policy, local) => {
    const peers = await peersAllowed(request, policy, resolver);
    const host = fixed ?? (local ? normal(local.host) : null);
    if (host === null || UNSPECIFIED.has(host)) {
      throw new UpstreamError(ReplyCode.GeneralFailure, "BIND: the control connection has no local address", {
        code: "upstream_failed",
      });
    }
    if (request.version === 4 && !fitsSocks4(host)) {
      // The reply's address field is 4 bytes: an IPv6 listener could not be told.
      throw new UpstreamError(ReplyCode.AddressTypeNotSupported, "SOCKS4 BIND over IPv6 cannot be answered", {
        code: "upstream_failed",
      });
    }
    let peer: ByteConnection | undefined;
    let taken = false;
    let closed = false;
    let deliver: ((conn: ByteConnection) => void) | undefined;
    let listener: Listener | undefined;
    const stop = () => {
      if (closed) return;
      closed = true;
      listener?.close().catch(() => {});
    };
    const onConnection = (conn: ByteConnection) => {
      const from = conn.remoteAddress ? normal(conn.remoteAddress.host) : null;
      // Exactly one connection, and only from DST.ADDR: anyone else is closed with no byte sent.
      if (closed || peer !== undefined || from === null || !peers.has(from)) return conn.close();
      peer = conn;
      stop();
      deliver?.(conn);
    };
    try {
      listener = await openListener({ host, port: 0 }, onConnection);
    } catch (error) {
      throw new UpstreamError(ReplyCode.GeneralFailure, `BIND: cannot listen on ${host}: ${String(error)}`, {
        cause: error,
        code: "upstream_failed",
      });
    }
    const address = { host: listener.address.host, port: listener.address.port };
    return {
      address,
      accept(signal: AbortSignal): Promise<Opened> {
        const opened = (conn: ByteConnection): Opened => {
          const remote = conn.remoteAddress ?? { host: "0.0.0.0", port: 0 };
          taken = true;
          return { conn, bound: remote, dialed: normal(remote.host) ?? remote.host };
        };
        if (peer) return Promise.resolve(opened(peer));
        if (closed || signal.aborted) {
          stop();
          return Promise.reject(signal.reason ?? new SocksError(ReplyCode.GeneralFailure, "BIND closed"));
        }
        return new Promise<Opened>((resolve, reject) => {
          const onAbort = () => {
            stop();
            deliver = undefined;
            reject(signal.reason);
          };
          signal.addEventListener("abort", onAbort, { once: true });
          deliver = (conn) => {
            signal.removeEventListener("abort", onAbort);
            resolve(opened(conn));
          };
        });
      },
      close() {
        stop();
        // A peer that came in but was never handed out is nobody's: close it.
        if (peer && !taken) peer.close();
      },
    };
  };
}
