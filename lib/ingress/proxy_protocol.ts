/**
 * The PROXY protocol ingress stage: on a listener behind a load balancer
 * (HAProxy, an NLB), reads the header the balancer sends first and replaces
 * the connection's client with the one the header names, before the SOCKS
 * machine sees a byte. The header is required; one from a source not trusted
 * to send it, a malformed one, or one not complete within the deadline ends
 * the connection, with no reply.
 *
 * @module
 */
import { formatHostPort, formatIPv4, type HostPort, parseIPv6 } from "../core/address.ts";
import { ProxyHeaderParser } from "../core/proxy_protocol.ts";
import { type Cidr, clientAllowed, parseCidr } from "../policy.ts";
import type { Outcome } from "../record.ts";
import { unwatch, watch } from "../relay.ts";
import type { ByteConnection } from "../runtime.ts";

/**
 * A connection as it passes the ingress stages: the byte stream, the client
 * it serves (decided here, once, for every client rule, cap and log line),
 * and bytes already read from it that the SOCKS machine must see first.
 *
 * @example
 * ```ts
 * import type { Accepted, ByteConnection } from "@edgesocks/edgesocks";
 * declare const conn: ByteConnection;
 * const accepted: Accepted = { conn, client: conn.remoteAddress, head: new Uint8Array(0) };
 * ```
 */
export interface Accepted {
  /** The client's byte stream. */
  conn: ByteConnection;
  /** The client, when known. */
  client: HostPort | undefined;
  /** Bytes read already, to be fed to the machine before any other. */
  head: Uint8Array;
}

/**
 * A stage between accept and the SOCKS machine. Rejects with an
 * {@linkcode IngressRefusal} to end the connection (the caller closes it and
 * records the refusal's outcome).
 *
 * @example
 * ```ts
 * import type { IngressStage } from "@edgesocks/edgesocks";
 * const passThrough: IngressStage = (accepted) => Promise.resolve(accepted);
 * ```
 */
export type IngressStage = (accepted: Accepted, signal: AbortSignal) => Promise<Accepted>;

/**
 * Why an ingress stage ended a connection: a record outcome and words.
 *
 * @example
 * ```ts
 * import { IngressRefusal } from "@edgesocks/edgesocks";
 * const refusal = new IngressRefusal("proxy_header_timeout", "no PROXY header within 5 s");
 * console.log(refusal.outcome); // "proxy_header_timeout"
 * ```
 */
export class IngressRefusal extends Error {
  /** The connection record's outcome. */
  readonly outcome: Outcome;
  /** Builds a refusal with `outcome` and `message` (the record's reason). */
  constructor(outcome: Outcome, message: string) {
    super(message);
    this.name = "IngressRefusal";
    this.outcome = outcome;
  }
}

/**
 * PROXY protocol options of a listener.
 *
 * @example
 * ```ts
 * import { parseCidr, type ProxyProtocolOptions } from "@edgesocks/edgesocks";
 * const behindLb: ProxyProtocolOptions = { from: [parseCidr("10.0.0.0/24")], timeout: 3_000 };
 * ```
 */
export interface ProxyProtocolOptions {
  /**
   * Peers trusted to send a header (the balancers); a connection from any
   * other peer is closed. Default {@linkcode DEFAULT_PROXY_PROTOCOL_FROM}
   * (loopback); empty: nobody. Peers of a Unix socket listener are always
   * trusted (the socket file's permissions decide who connects).
   */
  from?: readonly Cidr[];
  /** Milliseconds for the whole header to arrive. Default {@linkcode DEFAULT_PROXY_PROTOCOL_TIMEOUT}. */
  timeout?: number;
}

/**
 * Who may send a PROXY header by default: loopback (`127.0.0.0/8`, `::1`).
 *
 * @example
 * ```ts
 * import { DEFAULT_PROXY_PROTOCOL_FROM, parseCidr, type ProxyProtocolOptions } from "@edgesocks/edgesocks";
 * const options: ProxyProtocolOptions = { from: [...DEFAULT_PROXY_PROTOCOL_FROM, parseCidr("10.0.0.5")] };
 * ```
 */
export const DEFAULT_PROXY_PROTOCOL_FROM: readonly Cidr[] = Object.freeze([
  parseCidr("127.0.0.0/8"),
  parseCidr("::1"),
]);

/**
 * How long a PROXY header may take to arrive by default: 5 s.
 *
 * @example
 * ```ts
 * import { DEFAULT_PROXY_PROTOCOL_TIMEOUT, type ProxyProtocolOptions } from "@edgesocks/edgesocks";
 * const options: ProxyProtocolOptions = { timeout: 2 * DEFAULT_PROXY_PROTOCOL_TIMEOUT };
 * ```
 */
export const DEFAULT_PROXY_PROTOCOL_TIMEOUT = 5_000;

/** The client of a Unix socket peer (it has no address): every such peer counts as this one client. */
export const UNIX_CLIENT: HostPort = Object.freeze({ host: "unix", port: 0 });

/** An IPv4-mapped IPv6 source as its dotted quad, as the adapters give peers. */
function unmapped(a: HostPort): HostPort {
  if (!a.host.includes(":")) return a;
  const v6 = parseIPv6(a.host);
  if (!v6 || !v6.subarray(0, 10).every((b) => b === 0) || v6[10] !== 0xff || v6[11] !== 0xff) return a;
  return { host: formatIPv4(v6.subarray(12)), port: a.port };
}

/**
 * The PROXY protocol stage (version 1 and 2 both accepted): checks that the
 * peer may send a header, reads it within the deadline, and hands on the
 * client it names (or the real peer, for a LOCAL health check, `UNKNOWN`,
 * AF_UNSPEC, AF_UNIX or UDP) and the bytes after it.
 *
 * Outcomes of a refusal: `refused_proxy_source` (a peer not in `from`),
 * `proxy_header_invalid`, `proxy_header_timeout`, `client_closed` or
 * `client_error` (the peer left or failed first), `shutdown`.
 *
 * @example
 * ```ts
 * import { proxyProtocolStage } from "@edgesocks/edgesocks";
 * const stage = proxyProtocolStage({ timeout: 2_000 });
 * // const { conn, client, head } = await stage({ conn, client: conn.remoteAddress, head }, signal);
 * ```
 */
export function proxyProtocolStage(options: ProxyProtocolOptions = {}): IngressStage {
  const from = options.from ?? DEFAULT_PROXY_PROTOCOL_FROM;
  const trusted = { rules: from.map((cidr) => ({ action: "allow" as const, cidr })) };
  const timeout = options.timeout ?? DEFAULT_PROXY_PROTOCOL_TIMEOUT;
  return async (accepted, signal) => {
    const { conn, client } = accepted;
    const unix = client === UNIX_CLIENT;
    if (!unix && (from.length === 0 || !client || !clientAllowed(client.host, trusted))) {
      throw new IngressRefusal(
        "refused_proxy_source",
        `${client ? formatHostPort(client) : "a peer of unknown address"} may not send a PROXY header ` +
          "(not in --proxy-protocol-from)",
      );
    }
    const parser = new ProxyHeaderParser();
    let timedOut = false;
    const timer = timeout > 0
      ? setTimeout(() => {
        timedOut = true;
        conn.close();
      }, timeout)
      : undefined;
    const stop = () => conn.close();
    watch(signal, stop);
    const late = () =>
      timedOut
        ? new IngressRefusal("proxy_header_timeout", `no complete PROXY header within ${timeout / 1000} s`)
        : signal.aborted
        ? new IngressRefusal("shutdown", "server shutting down")
        : undefined;
    try {
      for (let head = accepted.head;;) {
        const step = parser.receive(head);
        if (step.type === "invalid") throw new IngressRefusal("proxy_header_invalid", step.reason);
        if (step.type === "header") {
          const source = step.header.source;
          return { conn, client: source ? unmapped(source) : client, head: step.rest };
        }
        let chunk: Uint8Array | null;
        try {
          chunk = await conn.read();
        } catch (error) {
          throw late() ?? new IngressRefusal("client_error", `client error: ${String(error)}`);
        }
        if (chunk === null) {
          throw late() ?? new IngressRefusal("client_closed", "client closed before its PROXY header ended");
        }
        head = chunk;
      }
    } finally {
      clearTimeout(timer);
      unwatch(signal, stop);
    }
  };
}
