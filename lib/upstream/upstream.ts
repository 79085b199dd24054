/**
 * How a granted request reaches its target: the shape every way out has
 * (a direct connection, `direct.ts`; a SOCKS hop, `socks5.ts`; an HTTP CONNECT hop,
 * `http.ts`; routes between them, `route.ts`).
 *
 * @module
 */
import type { HostPort } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import type { ProxyRequest } from "../core/request.ts";
import type { ReplyCode } from "../core/wire.ts";
import type { DestinationPolicy } from "../policy.ts";
import type { ByteConnection } from "../runtime.ts";

/**
 * An open tunnel to the target.
 *
 * @example
 * ```ts
 * import type { Opened } from "@edgesocks/edgesocks";
 * const show = (o: Opened) => `via ${o.dialed}, bound ${o.bound.host}:${o.bound.port}`;
 * ```
 */
export interface Opened {
  /** The connection to the target. */
  conn: ByteConnection;
  /** Its local end, as CONNECT's reply carries it. */
  bound: HostPort;
  /** The address actually dialled. */
  dialed: string;
}

/**
 * A way out. Each method rejects with a {@linkcode SocksError} carrying the
 * reply for the client and, as its `code`, the record's outcome
 * (`refused_policy`, `dns_failed`, `upstream_failed`, `connect_timeout`); an
 * {@linkcode UpstreamError} also names the address it dialled.
 *
 * @example
 * ```ts
 * import { type Upstream, type ProxyRequest, DEFAULT_POLICY } from "@edgesocks/edgesocks";
 * declare const upstream: Upstream, request: ProxyRequest;
 * const address = await upstream.lookup(request, DEFAULT_POLICY); // RESOLVE's answer
 * ```
 */
export interface Upstream {
  /** Opens a tunnel for a CONNECT or CONNECT_DIR; `signal` aborts the attempt. */
  open(request: ProxyRequest, policy: DestinationPolicy, signal: AbortSignal): Promise<Opened>;
  /** Answers a RESOLVE: one address of the name (IPv4 only for SOCKS4); `signal` aborts it. */
  lookup(request: ProxyRequest, policy: DestinationPolicy, signal?: AbortSignal): Promise<string>;
  /** Answers a RESOLVE_PTR: one name of the address; `signal` aborts it. */
  reverse(request: ProxyRequest, policy: DestinationPolicy, signal?: AbortSignal): Promise<string>;
  /**
   * Serves a BIND: listens for the one connection from the request's
   * DST.ADDR; `local` is the control connection's local address. Absent: BIND
   * is not served.
   */
  bind?(request: ProxyRequest, policy: DestinationPolicy, local: HostPort | undefined): Promise<Binding>;
}

/**
 * A BIND's listening socket, waiting for its one peer.
 *
 * @example
 * ```ts
 * import type { Binding } from "@edgesocks/edgesocks";
 * declare const binding: Binding;
 * try {
 *   const peer = await binding.accept(AbortSignal.timeout(10_000));
 *   console.log("peer", peer.bound);
 * } finally {
 *   binding.close();
 * }
 * ```
 */
export interface Binding {
  /** Where it listens: what BIND's first reply carries. */
  readonly address: HostPort;
  /**
   * Resolves with the peer once it has connected (`bound`: the peer's
   * address, what the second reply carries); rejects with `signal`'s reason
   * when it aborts first. Either way the listener is closed.
   */
  accept(signal: AbortSignal): Promise<Opened>;
  /** Closes the listener (and a peer not handed out yet). Idempotent. */
  close(): void;
}

/**
 * A failure on the way out that names the address it concerned.
 *
 * @example
 * ```ts
 * import { ReplyCode, UpstreamError } from "@edgesocks/edgesocks";
 * const e = new UpstreamError(ReplyCode.ConnectionRefused, "refused", { code: "upstream_failed", dialed: "192.0.2.1" });
 * ```
 */
export class UpstreamError extends SocksError {
  /** The address dialled (or refused by policy), when there was one. */
  readonly dialed?: string;
  /** Builds it; `dialed` names the address. */
  constructor(
    reply: ReplyCode,
    message: string,
    options: { cause?: unknown; code?: string; dialed?: string } = {},
  ) {
    super(reply, message, options);
    this.name = "UpstreamError";
    if (options.dialed !== undefined) this.dialed = options.dialed;
  }
}
