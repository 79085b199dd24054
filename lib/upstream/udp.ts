/**
 * UDP ASSOCIATE's way out (RFC 1928 §7): one relay socket per association,
 * bound to the address the client reached the proxy on, and the destination
 * policy on every datagram, on the address actually sent to (after DNS, as
 * for CONNECT).
 *
 * Who may send: a datagram is the client's when its source IP is the control
 * connection's peer IP and its port is the client's port (the request's
 * DST.PORT when the request named the client, "0", or the unspecified
 * address with a port; otherwise the port of the first datagram from that
 * IP). A datagram from anywhere else is relayed to the client only when it
 * comes from an address and port the client sent to; every other one is
 * dropped and counted. No datagram, however malformed, ends an association.
 * A target of the other address family is reached through a second socket,
 * bound to that family's wildcard address on first use, which takes answers
 * from targets only.
 *
 * @module
 */
import { canonicalIP, type HostPort } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import type { ProxyRequest } from "../core/request.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { decodeUdpDatagram, encodeUdpDatagram } from "../core/udp.ts";
import { ReplyCode } from "../core/wire.ts";
import { type DestinationPolicy, evaluateDestination } from "../policy.ts";
import type { Resolver, RuntimeAdapter, UdpSocket } from "../runtime.ts";

/**
 * How UDP ASSOCIATE is served: where the relay sockets bind and what the
 * reply advertises, and the limits. Every field has a default.
 *
 * @example
 * ```ts
 * import type { UdpOptions } from "@edgesocks/edgesocks";
 * const udp: UdpOptions = { advertise: "203.0.113.7", ports: [40000, 40999], maxPerClient: 4 };
 * ```
 */
export interface UdpOptions {
  /** The address UDP ASSOCIATE replies carry (behind NAT, in a container); default: the control connection's local address. */
  advertise?: string;
  /** The ports relay sockets bind to, inclusive; default: any free port. */
  ports?: readonly [number, number];
  /** Associations open at once per client IP address; more are refused (0x01). Default 8. */
  maxPerClient?: number;
  /** Datagrams per second through one association, both ways together; more are dropped. Default 20,000; 0: no cap. */
  datagramsPerSecond?: number;
  /** Bytes one association may have waiting (for DNS, or in the runtime's send queue); more are dropped. Default 1 MiB. */
  maxQueuedBytes?: number;
  /** Names kept in the lookup cache (shared by a server's associations). Default 1,024. */
  dnsCacheSize?: number;
  /** How long a lookup's answer is kept, in milliseconds (a failure: a tenth of it). Default 60 s. */
  dnsCacheTtl?: number;
}

/**
 * The defaults of {@linkcode UdpOptions}.
 *
 * @example
 * ```ts
 * import { UDP_DEFAULTS, type UdpOptions } from "@edgesocks/edgesocks";
 * const busy: UdpOptions = { datagramsPerSecond: 4 * UDP_DEFAULTS.datagramsPerSecond };
 * ```
 */
export const UDP_DEFAULTS = {
  maxPerClient: 8,
  datagramsPerSecond: 20_000,
  maxQueuedBytes: 1024 * 1024,
  dnsCacheSize: 1024,
  dnsCacheTtl: 60_000,
} as const;

/**
 * Why datagrams were dropped, counted per association: `malformed` (no
 * readable header, or port 0), `fragment` (FRAG ≠ 0), `policy` (the
 * destination policy refused the address), `dns` (the name did not resolve),
 * `rate` (over the datagrams per second), `queue` (over the bytes queued),
 * `source` (from neither the client nor a target it sent to), `send` (the
 * socket did not take it: too large; or no socket of the target's family
 * could be bound).
 *
 * @example
 * ```ts
 * import type { Association, UdpDrop } from "@edgesocks/edgesocks";
 * const refused = (a: Association, why: UdpDrop = "policy") => a.dropped[why] ?? 0;
 * ```
 */
export type UdpDrop = typeof UDP_DROPS[number];

/**
 * Every {@linkcode UdpDrop}, in the order logs list them.
 *
 * @example
 * ```ts
 * import { type Association, UDP_DROPS } from "@edgesocks/edgesocks";
 * const line = (a: Association) => UDP_DROPS.map((why) => `${why}=${a.dropped[why] ?? 0}`).join(" ");
 * ```
 */
export const UDP_DROPS = [
  "malformed",
  "fragment",
  "policy",
  "dns",
  "rate",
  "queue",
  "source",
  "send",
] as const;

/**
 * One open association: the relay socket and its counts.
 *
 * @example
 * ```ts
 * import type { Association } from "@edgesocks/edgesocks";
 * const show = (a: Association) => `${a.datagramsUp} up, ${a.datagramsDown} down, relay ${a.bound.port}`;
 * ```
 */
export interface Association {
  /** What the reply carries: the advertised (or local) address and the relay socket's port. */
  readonly bound: HostPort;
  /** Payload bytes relayed from the client to targets. */
  readonly up: number;
  /** Payload bytes relayed from targets to the client. */
  readonly down: number;
  /** Datagrams relayed from the client. */
  readonly datagramsUp: number;
  /** Datagrams relayed to the client. */
  readonly datagramsDown: number;
  /** Datagrams dropped, by reason. */
  readonly dropped: Readonly<Partial<Record<UdpDrop, number>>>;
  /** Resolves once no datagram went either way for the idle timeout (never when it is 0). */
  readonly idle: Promise<void>;
  /** Closes the relay socket; idempotent. */
  close(): void;
}

/**
 * What {@linkcode UdpService.associate} needs from the session.
 *
 * @example
 * ```ts
 * import { type AssociateRequest, DEFAULT_POLICY } from "@edgesocks/edgesocks";
 * const ask: AssociateRequest = {
 *   request: { version: 5, kind: "udp_associate", target: { host: "0.0.0.0", type: "ipv4", port: 0 } },
 *   policy: DEFAULT_POLICY,
 *   client: { host: "127.0.0.1", port: 50000 },
 *   local: { host: "127.0.0.1", port: 1080 },
 *   idleTimeout: 300_000,
 * };
 * ```
 */
export interface AssociateRequest {
  /** The UDP ASSOCIATE request (DST: where the client will send from, or what a client put there). */
  request: ProxyRequest;
  /** The rules' destination policy, checked on every datagram. */
  policy: DestinationPolicy;
  /** The control connection's peer: the client. */
  client?: HostPort;
  /** The control connection's local end: the relay binds to its address. */
  local?: HostPort;
  /** No datagram either way for this long ends the association; 0: never. */
  idleTimeout: number;
}

/**
 * A server's UDP ASSOCIATE service: the runtime's UDP, a lookup cache shared
 * by its associations, and the count per client.
 *
 * @example
 * ```ts
 * import type { AssociateRequest, UdpService } from "@edgesocks/edgesocks";
 * declare const service: UdpService, ask: AssociateRequest;
 * const association = await service.associate(ask);
 * console.log(`relay on ${association.bound.host}:${association.bound.port}`);
 * association.close();
 * ```
 */
export interface UdpService {
  /** Opens an association; rejects with a `SocksError` (0x01) when no relay socket can be bound or a cap is reached. */
  associate(request: AssociateRequest): Promise<Association>;
}

const failure = (message: string, code = "upstream_failed") =>
  new SocksError(ReplyCode.GeneralFailure, message, { code });

/** A bounded cache of lookups with a time to live; a pending lookup is shared. */
class LookupCache {
  readonly #entries = new Map<string, { expires: number; value: Promise<string[]> }>();
  readonly resolver: Resolver;
  readonly size: number;
  readonly ttl: number;
  constructor(resolver: Resolver, size: number, ttl: number) {
    this.resolver = resolver;
    this.size = size;
    this.ttl = ttl;
  }

  lookup(name: string): Promise<string[]> {
    const key = name.toLowerCase().replace(/\.$/, "");
    const now = Date.now();
    const hit = this.#entries.get(key);
    if (hit && hit.expires > now) return hit.value;
    if (hit) this.#entries.delete(key);
    const value = this.resolver.lookup(key);
    const entry = { expires: now + this.ttl, value };
    // A failure is kept a tenth as long: a name that appears soon is found soon.
    value.catch(() => void (entry.expires = Date.now() + this.ttl / 10));
    this.#entries.set(key, entry);
    while (this.#entries.size > this.size) this.#entries.delete(this.#entries.keys().next().value!);
    return value;
  }
}

/** The targets an association sent to, most recent last; replies are taken only from these. */
const MAX_TARGETS = 1024;

/** Sets `key` in a map bounded to {@linkcode MAX_TARGETS} entries (the oldest goes first). */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.set(key, value);
  if (map.size > MAX_TARGETS) map.delete(map.keys().next().value!);
}

/** Whether the request's DST names the client's own port (the client's address, unspecified, or "0"). */
function clientPortOf(request: ProxyRequest, clientIp: string): number | undefined {
  const { host, port } = request.target;
  if (port === 0) return undefined;
  const ip = canonicalIP(host);
  const names = ip === null ? host === "0" : ip === "0.0.0.0" || ip === "::" || unmapIPv4(ip) === clientIp;
  return names ? port : undefined;
}

/**
 * Builds the UDP ASSOCIATE service over a runtime's `udp`.
 *
 * @example
 * ```ts
 * import { type RuntimeAdapter, udpService } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const service = udpService(adapter.udp!, adapter.resolver(), { ports: [40000, 40099] });
 * ```
 */
export function udpService(
  bind: NonNullable<RuntimeAdapter["udp"]>,
  resolver: Resolver,
  options: UdpOptions = {},
): UdpService {
  // A field given as undefined keeps its default.
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const limits: Limits = { ...UDP_DEFAULTS, ...given };
  const cache = new LookupCache(resolver, limits.dnsCacheSize, limits.dnsCacheTtl);
  const perClient = new Map<string, number>();

  async function bindRelay(host: string, onDatagram: (d: Uint8Array, from: HostPort) => void) {
    const range = options.ports;
    if (!range) return await bind({ host, port: 0, onDatagram });
    const [lo, hi] = range;
    const size = hi - lo + 1;
    const start = Math.floor(Math.random() * size);
    let last: unknown;
    for (let i = 0; i < Math.min(size, 64); i++) {
      try {
        return await bind({ host, port: lo + ((start + i) % size), onDatagram });
      } catch (error) {
        last = error;
      }
    }
    throw failure(`no free UDP port in ${lo}-${hi} on ${host}: ${String(last)}`);
  }

  return {
    async associate({ request, policy, client, local, idleTimeout }) {
      if (!client || !local) throw failure("UDP ASSOCIATE needs a socket connection (no addresses known)");
      const clientIp = unmapIPv4(canonicalIP(client.host) ?? client.host);
      const count = perClient.get(clientIp) ?? 0;
      if (count >= limits.maxPerClient) {
        throw failure(`UDP associations per client limit (${limits.maxPerClient}) reached`, "refused_limit");
      }
      const association = new Relay(request, policy, clientIp, cache, limits, idleTimeout);
      let socket: UdpSocket;
      try {
        socket = await bindRelay(unmapIPv4(local.host), association.receive);
      } catch (error) {
        throw error instanceof SocksError ? error : failure(`cannot bind a UDP relay: ${String(error)}`);
      }
      perClient.set(clientIp, (perClient.get(clientIp) ?? 0) + 1);
      const advertised = options.advertise ?? unmapIPv4(local.host);
      association.start(socket, { host: advertised, port: socket.address.port }, bind, () => {
        const left = (perClient.get(clientIp) ?? 1) - 1;
        if (left > 0) perClient.set(clientIp, left);
        else perClient.delete(clientIp);
      });
      return association;
    },
  };
}

/** The limits an association applies. */
type Limits = { readonly [K in keyof typeof UDP_DEFAULTS]: number };

/** One association: the relay socket's two directions. */
class Relay implements Association {
  bound: HostPort = { host: "0.0.0.0", port: 0 };
  up = 0;
  down = 0;
  datagramsUp = 0;
  datagramsDown = 0;
  readonly dropped: Partial<Record<UdpDrop, number>> = {};
  readonly idle: Promise<void>;
  #idle!: () => void;
  #socket: UdpSocket | undefined;
  /** Whether the relay socket is IPv4. */
  #v4Socket = true;
  /** For targets of the other address family: a second socket, bound on the wildcard on first use. */
  #other: UdpSocket | undefined;
  #otherBinding: Promise<UdpSocket | undefined> | undefined;
  #bind: NonNullable<RuntimeAdapter["udp"]> | undefined;
  #released: (() => void) | undefined;
  #closed = false;
  #clientPort: number | undefined;
  readonly #targets = new Map<string, true>();
  /**
   * The policy's verdict on address literals already seen ("host port" as the client wrote it → the
   * address to send to, or null when refused): the rules are the session's snapshot, so a verdict
   * holds for the association's life, and a datagram stream to one target is checked once.
   */
  readonly #verdicts = new Map<string, string | null>();
  /** The header of answers from each target ("host port"), built once. */
  readonly #headers = new Map<string, Uint8Array>();
  /** Bytes waiting for a lookup. */
  #waiting = 0;
  #tokens: number;
  #refilled = Date.now();
  #lastActive = Date.now();
  #timer: ReturnType<typeof setTimeout> | undefined;

  readonly policy: DestinationPolicy;
  readonly clientIp: string;
  readonly cache: LookupCache;
  readonly limits: Limits;
  readonly idleTimeout: number;

  constructor(
    request: ProxyRequest,
    policy: DestinationPolicy,
    clientIp: string,
    cache: LookupCache,
    limits: Limits,
    idleTimeout: number,
  ) {
    this.policy = policy;
    this.clientIp = clientIp;
    this.cache = cache;
    this.limits = limits;
    this.idleTimeout = idleTimeout;
    this.#clientPort = clientPortOf(request, clientIp);
    this.#tokens = limits.datagramsPerSecond;
    this.idle = new Promise((resolve) => (this.#idle = resolve));
  }

  start(
    socket: UdpSocket,
    bound: HostPort,
    bind: NonNullable<RuntimeAdapter["udp"]>,
    released: () => void,
  ): void {
    this.#socket = socket;
    this.#v4Socket = canonicalIP(socket.address.host)?.includes(":") === false;
    this.#bind = bind;
    this.bound = bound;
    this.#released = released;
    if (this.idleTimeout > 0) this.#arm(this.idleTimeout);
  }

  /** Checks for idleness when the timeout could have run out, not on every datagram. */
  #arm(ms: number): void {
    this.#timer = setTimeout(() => {
      const quiet = Date.now() - this.#lastActive;
      if (quiet >= this.idleTimeout) this.#idle();
      else this.#arm(this.idleTimeout - quiet);
    }, ms);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#socket?.close();
    this.#other?.close();
    this.#released?.();
  }

  #drop(why: UdpDrop): void {
    this.dropped[why] = (this.dropped[why] ?? 0) + 1;
  }

  /** A token per datagram, both ways together, refilled at the rate per second. */
  #admit(): boolean {
    const rate = this.limits.datagramsPerSecond;
    if (rate === 0) return true;
    const now = Date.now();
    if (now > this.#refilled) {
      this.#tokens = Math.min(rate, this.#tokens + ((now - this.#refilled) * rate) / 1000);
      this.#refilled = now;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  readonly receive = (data: Uint8Array, from: HostPort): void => {
    if (this.#closed) return;
    const host = unmapIPv4(canonicalIP(from.host) ?? from.host);
    if (host === this.clientIp && (this.#clientPort === undefined || from.port === this.#clientPort)) {
      this.#clientPort ??= from.port;
      return this.#fromClient(data);
    }
    if (this.#targets.has(`${host} ${from.port}`)) return this.#fromTarget(data, host, from.port);
    this.#drop("source");
  };

  #fromClient(bytes: Uint8Array): void {
    const datagram = decodeUdpDatagram(bytes);
    if (datagram.type === "invalid" || datagram.target.port === 0) return this.#drop("malformed");
    if (datagram.frag !== 0) return this.#drop("fragment");
    if (!this.#admit()) return this.#drop("rate");
    const { target, data } = datagram;
    const port = target.port;
    const key = `${target.host} ${port}`;
    const known = this.#verdicts.get(key);
    if (known !== undefined) return known === null ? this.#drop("policy") : this.#route(known, port, data);
    const literal = canonicalIP(target.host);
    if (literal !== null) {
      const to = this.#allowed([literal], undefined, port);
      remember(this.#verdicts, key, to ?? null);
      return to === undefined ? this.#drop("policy") : this.#route(to, port, data);
    }
    const name = target.host;
    const verdict = evaluateDestination({ command: "udp", name, port }, this.policy);
    if (verdict !== "undecided" && verdict !== null) return this.#drop("policy");
    if (this.#queued() + data.length > this.limits.maxQueuedBytes) return this.#drop("queue");
    this.#waiting += data.length;
    this.cache.lookup(name).then((ips) => {
      this.#waiting -= data.length;
      this.#sendTo(ips, name, port, data);
    }, () => {
      this.#waiting -= data.length;
      this.#drop("dns");
    });
  }

  #queued(): number {
    return this.#waiting + (this.#socket?.pending ?? 0) + (this.#other?.pending ?? 0);
  }

  /** The other family's socket (`v6`: an IPv6 one): it takes answers from targets only, never a client's datagram. */
  #otherSocket(v6: boolean): Promise<UdpSocket | undefined> {
    const bind = this.#bind;
    if (!bind) return Promise.resolve(undefined);
    const fromTarget = (data: Uint8Array, from: HostPort) => {
      if (this.#closed) return;
      const host = unmapIPv4(canonicalIP(from.host) ?? from.host);
      if (this.#targets.has(`${host} ${from.port}`)) this.#fromTarget(data, host, from.port);
      else this.#drop("source");
    };
    return this.#otherBinding ??= bind({ host: v6 ? "::" : "0.0.0.0", port: 0, onDatagram: fromTarget }).then(
      (socket) => {
        if (this.#closed) return void socket.close();
        return (this.#other = socket);
      },
      () => undefined,
    );
  }

  /** Sends to the first of `ips` the policy allows (and the socket's family reaches). */

  /**
   * The address to send to: the first of `ips` the policy allows, of the relay socket's family if one
   * is (the other through a second socket); undefined when none is allowed.
   */
  #allowed(ips: string[], name: string | undefined, port: number): string | undefined {
    const allowed = ips.filter((ip) =>
      evaluateDestination(
        { command: "udp", ip, port, ...(name !== undefined ? { name } : {}) },
        this.policy,
      ) ===
        null
    );
    if (allowed.length === 0) return undefined;
    const v4Socket = this.#v4Socket;
    return unmapIPv4(allowed.find((a) => unmapIPv4(a).includes(":") !== v4Socket) ?? allowed[0]);
  }

  /** Sends to the first of `ips` the policy allows (see `#allowed`). */
  #sendTo(ips: string[], name: string | undefined, port: number, data: Uint8Array): void {
    if (this.#closed) return;
    const to = this.#allowed(ips, name, port);
    if (to === undefined) return this.#drop("policy");
    this.#route(to, port, data);
  }

  /** Sends to an allowed address through the socket of its family. */
  #route(to: string, port: number, data: Uint8Array): void {
    const socket = this.#socket;
    if (this.#closed || !socket) return;
    const v4Socket = this.#v4Socket;
    if (this.#queued() + data.length > this.limits.maxQueuedBytes) return this.#drop("queue");
    if (to.includes(":") !== v4Socket) return this.#send(socket, data, to, port);
    if (this.#other) return this.#send(this.#other, data, to, port);
    this.#waiting += data.length;
    this.#otherSocket(v4Socket).then((other) => {
      this.#waiting -= data.length;
      if (!other) return this.#drop("send");
      this.#send(other, data, to, port);
    });
  }

  #send(socket: UdpSocket, data: Uint8Array, to: string, port: number): void {
    if (this.#closed) return;
    if (!socket.send(data, to, port)) return this.#drop("send");
    const key = `${to} ${port}`;
    this.#targets.delete(key);
    this.#targets.set(key, true);
    if (this.#targets.size > MAX_TARGETS) this.#targets.delete(this.#targets.keys().next().value!);
    this.up += data.length;
    this.datagramsUp++;
    this.#lastActive = Date.now();
  }

  #fromTarget(data: Uint8Array, host: string, port: number): void {
    const socket = this.#socket;
    if (!socket || this.#clientPort === undefined) return this.#drop("source");
    if (!this.#admit()) return this.#drop("rate");
    if (this.#queued() + data.length > this.limits.maxQueuedBytes) return this.#drop("queue");
    const key = `${host} ${port}`;
    let header = this.#headers.get(key);
    if (!header) remember(this.#headers, key, header = encodeUdpDatagram(host, port, new Uint8Array(0)));
    const out = new Uint8Array(header.length + data.length);
    out.set(header);
    out.set(data, header.length);
    if (!socket.send(out, this.clientIp, this.#clientPort)) return this.#drop("send");
    this.down += data.length;
    this.datagramsDown++;
    this.#lastActive = Date.now();
  }
}
