/**
 * A listening SOCKS server: one or more listeners, the connection handler,
 * and a graceful stop.
 *
 * @module
 */
import type { ByteConnection, HostPort, Listener, RuntimeAdapter, UnixListener } from "./runtime.ts";
import { parseIPv4, parseIPv6 } from "./core/address.ts";
import { DEFAULT_COMMANDS } from "./core/socks_server.ts";
import { type AuthBackoff, clientKey, DEFAULT_AUTH_BACKOFF, LoginBackoff } from "./admission.ts";
import { hostAddressSet } from "./policy.ts";
import { admitWebSocket, fromWebSocket, refusalResponse } from "./ingress/websocket.ts";
import { makeRules, type Rules, type RulesOptions } from "./rules.ts";
import type { Outcome } from "./record.ts";
import {
  IngressRefusal,
  type IngressStage,
  type ProxyProtocolOptions,
  proxyProtocolStage,
  UNIX_CLIENT,
} from "./ingress/proxy_protocol.ts";
import {
  type HandlerOptions,
  refuseSession,
  serveSession,
  type SessionContext,
  sessionContext,
} from "./session.ts";
import { type UdpOptions, udpService } from "./upstream/udp.ts";

/**
 * Options for {@linkcode serve}.
 *
 * @example
 * ```ts
 * import { serve, type ServeOptions } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const options: ServeOptions = { listen: [{ host: "::1", port: 1080 }], maxConnectionsPerClient: 64 };
 * const server = await serve(nodeAdapter, options);
 * ```
 */
export interface ServeOptions extends Omit<HandlerOptions, "dial" | "resolver" | "openListener"> {
  /**
   * Addresses to listen on. Default `127.0.0.1:1080`. Port 0 picks a free
   * port. Each may say whether its connections start with a PROXY protocol
   * header (see {@linkcode ListenAddress}).
   */
  listen?: ListenAddress[];
  /**
   * Whether the listeners' connections start with a PROXY protocol header
   * (v1 or v2, from a load balancer): `true` (default options) or its
   * options, for every listener that does not say otherwise; default false.
   * Then the header is required, and the client it names is the client for
   * every client rule, cap and log line.
   */
  proxyProtocol?: boolean | ProxyProtocolOptions;
  /** Nameserver for RESOLVE, RESOLVE_PTR and CONNECT by name; default: the system's resolver. */
  dns?: HostPort;
  /** Most connections served at once; more are closed at once. Default 10,000; 0: no cap. */
  maxConnections?: number;
  /** Most connections from one client address at once; more are closed at once. Default 0: no cap. */
  maxConnectionsPerClient?: number;
  /**
   * Told once when accepting connections starts failing (out of file
   * descriptors, above all), with the first error; not again until
   * {@linkcode ServeOptions.onAcceptRecovered} has been told the episode is
   * over. The server keeps listening and accepts again as soon as
   * descriptors free up. (Node and Bun do not report a failed accept: their
   * adapters find out by probing, every second and after a failed dial.)
   */
  onAcceptError?: (error: unknown) => void;
  /**
   * Told once an episode told to `onAcceptError` is over: a connection was
   * accepted, and no accept has failed for 2 s since. `ms`: from the first
   * failure to that connection.
   */
  onAcceptRecovered?: (ms: number) => void;
  /**
   * IPv6 clients count as one for `maxConnectionsPerClient` and the login
   * backoff per this prefix length (one host often holds a whole /64).
   * Default 64; 128: each address on its own.
   */
  clientPrefixV6?: number;
  /**
   * Failed logins (RFC 1929) that make a client wait: after `failures`
   * within `windowMs`, its new connections are refused for `blockMs`.
   * Default {@linkcode DEFAULT_AUTH_BACKOFF} (10 within 60 s block for 60 s);
   * `false`: none. Applies only while users are configured.
   */
  authBackoff?: AuthBackoff | false;
  /**
   * How often the host's interface addresses are read again (they are
   * refused as destinations by default), in milliseconds. Default 60 s; 0:
   * only at start.
   */
  hostAddressRefresh?: number;
  /**
   * Listen with SO_REUSEPORT, so that several processes can serve the same
   * address (the CLI's `--workers`). Default false.
   */
  reusePort?: boolean;
  /**
   * Serve UDP ASSOCIATE (RFC 1928 §7), with these options (`{}`: the
   * defaults). Default: not served (0x07). On a runtime without UDP
   * (`adapter.udp` absent) it stays 0x07.
   */
  udp?: UdpOptions;
  /**
   * SOCKS over WebSocket (see `lib/ingress/websocket.ts`): the addresses
   * and paths to serve upgrades on, with the bearer token they require.
   * The client's address is the HTTP peer's. Needs the adapter's
   * `serveWebSocket`.
   */
  webSocket?: WebSocketServe;
}

/**
 * Where and how {@linkcode serve} takes SOCKS over WebSocket.
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { denoAdapter } from "@edgesocks/edgesocks/deno";
 * const server = await serve(denoAdapter, {
 *   listen: [],
 *   webSocket: { listen: [{ host: "127.0.0.1", port: 8080, path: "/socks" }], token: "s3cret" },
 * });
 * ```
 */
export interface WebSocketServe {
  /** Addresses, each with the one path it serves. */
  listen: (HostPort & { path: string })[];
  /** The bearer token an upgrade must carry; absent: none is asked for. */
  token?: string;
  /** Serve HTTPS/WSS with this certificate chain and key (PEM text). */
  tls?: { cert: string; key: string };
}

/**
 * A listen address: TCP (`host`, `port`) or a Unix domain socket (`path`,
 * where the runtime has them: {@linkcode RuntimeAdapter.listenUnix}),
 * optionally with its own PROXY protocol setting (overriding
 * {@linkcode ServeOptions.proxyProtocol}). Every peer of a Unix socket counts
 * as one client, `unix` (for client rules, which it matches no CIDR of, caps
 * and logs).
 *
 * @example
 * ```ts
 * import { type ListenAddress, parseCidr } from "@edgesocks/edgesocks";
 * const direct: ListenAddress = { host: "127.0.0.1", port: 1080 };
 * const behindLb: ListenAddress = { host: "0.0.0.0", port: 1081, proxyProtocol: { from: [parseCidr("10.0.0.2")] } };
 * const local: ListenAddress = { path: "/run/edgesocks/socks.sock" };
 * ```
 */
export type ListenAddress = (HostPort | { path: string }) & {
  /** Connections on this listener start with a PROXY protocol header: `true` (default options) or options. */
  proxyProtocol?: boolean | ProxyProtocolOptions;
};

/**
 * Default global connection cap.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_CONNECTIONS, type ServeOptions } from "@edgesocks/edgesocks";
 * const options: ServeOptions = { maxConnections: 4 * DEFAULT_MAX_CONNECTIONS }; // a bigger host
 * ```
 */
export const DEFAULT_MAX_CONNECTIONS = 10_000;

/** An accept-failure episode is over once a connection was accepted and no accept failed for this long. */
const ACCEPT_QUIET_MS = 2_000;

/** How often `serve()` reads the host's interface addresses again: every 60 s. */
const DEFAULT_HOST_ADDRESS_REFRESH = 60_000;

/**
 * A running server.
 *
 * @example
 * ```ts
 * import type { SocksServer } from "@edgesocks/edgesocks";
 * async function stop(server: SocksServer) {
 *   console.log(`closing ${server.activeConnections} connections on`, server.addresses);
 *   await server.close(); // resolves once every tunnel has ended
 * }
 * ```
 */
export interface SocksServer {
  /** The bound TCP addresses (real ports). */
  readonly addresses: HostPort[];
  /** The Unix domain sockets listened on. */
  readonly paths: string[];
  /** Connections being served now. */
  readonly activeConnections: number;
  /**
   * Replaces the rules (users, destination and client policy, timeouts) at
   * once: connections accepted from now on see the new ones, open ones keep
   * those they started with. A field left out gets its default.
   */
  update(rules: RulesOptions): void;
  /**
   * Stops listening at once, gives the open connections up to `timeout`
   * milliseconds (default 30 s; 0: none) to end by themselves, then closes
   * the rest as {@linkcode SocksServer.close} does. Resolves when all have
   * ended, with how many finished and how many were closed. A `close()`
   * during the wait closes the rest at once.
   *
   * @example
   * ```ts
   * import type { SocksServer } from "@edgesocks/edgesocks";
   * declare const server: SocksServer;
   * const { finished, closed } = await server.drain({ timeout: 10_000 });
   * console.log(`drained: ${finished} finished, ${closed} closed at the timeout`);
   * ```
   */
  drain(options?: { timeout?: number }): Promise<DrainResult>;
  /** Stops listening, closes open connections, and resolves when all have ended. */
  close(): Promise<void>;
}

/**
 * What {@linkcode SocksServer.drain} did with the connections open when it
 * stopped listening.
 *
 * @example
 * ```ts
 * import type { DrainResult } from "@edgesocks/edgesocks";
 * const line = (r: DrainResult) => `${r.finished} finished, ${r.closed} closed`;
 * ```
 */
export interface DrainResult {
  /** Connections that ended by themselves. */
  finished: number;
  /** Connections still open at the timeout (or at a `close()`), and closed. */
  closed: number;
}

/**
 * How long {@linkcode SocksServer.drain} waits for open connections by default: 30 s.
 *
 * @example
 * ```ts
 * import { DEFAULT_DRAIN_TIMEOUT, type SocksServer } from "@edgesocks/edgesocks";
 * declare const server: SocksServer;
 * await server.drain({ timeout: 2 * DEFAULT_DRAIN_TIMEOUT }); // long downloads get a minute
 * ```
 */
export const DEFAULT_DRAIN_TIMEOUT = 30_000;

/**
 * The default listen address: loopback only.
 *
 * @example
 * ```ts
 * import { DEFAULT_LISTEN, serve } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const server = await serve(nodeAdapter, { listen: [DEFAULT_LISTEN, { host: "::1", port: 1080 }] });
 * ```
 */
export const DEFAULT_LISTEN: HostPort = { host: "127.0.0.1", port: 1080 };

/** True when `host` is a loopback address (`127.0.0.0/8`, `::1`, `localhost`). */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const v4 = parseIPv4(host);
  if (v4) return v4[0] === 127;
  const v6 = parseIPv6(host);
  return !!v6 && v6.subarray(0, 15).every((b) => b === 0) && v6[15] === 1;
}

/**
 * Starts a SOCKS server on a runtime adapter.
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const server = await serve(nodeAdapter, { listen: [{ host: "127.0.0.1", port: 0 }] });
 * console.log(server.addresses[0].port);
 * await server.close();
 * ```
 */
export async function serve(adapter: RuntimeAdapter, options: ServeOptions = {}): Promise<SocksServer> {
  // Each session takes the snapshot current at its accept. The host's own addresses join the policy the
  // options give, and are read again now and then (interfaces come and go).
  let given: RulesOptions = options;
  let own: ReadonlySet<string> = new Set();
  let rules: Rules = makeRules(options);
  const rebuild = () => {
    const hostAddresses = given.policy?.hostAddresses
      ? new Set([...given.policy.hostAddresses, ...own])
      : own;
    rules = makeRules({ ...given, policy: { ...given.policy, hostAddresses } });
  };
  const prefixV6 = options.clientPrefixV6 ?? 64;
  const backoff = options.authBackoff === false
    ? undefined
    : new LoginBackoff(options.authBackoff ?? DEFAULT_AUTH_BACKOFF);
  const resolver = adapter.resolver(options.dns);
  const base = sessionContext({
    ...options,
    dial: adapter.dial,
    resolver,
    relay: adapter.relay,
    ...(adapter.timersPerConnection ? { timersPerConnection: true } : {}),
    openListener: (address, onConnection) => adapter.listen(address, onConnection),
  });
  // UDP ASSOCIATE only where asked for and where the runtime has UDP (else the machine answers 0x07).
  const udp = options.udp && adapter.udp ? udpService(adapter.udp, resolver, options.udp) : undefined;
  const context: SessionContext = {
    ...base,
    ...(udp ? { udp, commands: [...(base.commands ?? DEFAULT_COMMANDS), "udp_associate"] } : {}),
    // Counted when the login fails, not when its connection ends: a client must not get more tries in.
    ...(backoff
      ? { onAuthFailure: (client) => backoff.failed(clientKey(client.host, prefixV6), Date.now()) }
      : {}),
  };
  // The client's address is a system call, and kept with the socket: only looked up when a record, a
  // client rule, a per-client cap or the login backoff will read it, and then once, here (admission
  // decides it).
  const clientAddress = (): boolean =>
    options.onLog !== undefined || rules.clientPolicy.rules.length > 0 || maxPerClient > 0 ||
    (backoff !== undefined && rules.authenticate !== undefined);
  const shutdown = new AbortController();
  // A count, not a set of promises: per connection only the one callback that releases it stays.
  let running = 0;
  let drained: (() => void) | undefined;
  let allEnded: Promise<void> | undefined;
  const maxTotal = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const maxPerClient = options.maxConnectionsPerClient ?? 0;
  const perClient = new Map<string, number>();
  // One function for every connection when there is no per-client cap: nothing is made per connection.
  const released = () => {
    running--;
    if (running === 0) drained?.();
  };
  // Failing accepts are one episode per server (descriptors are the process's, shared by its listeners):
  // told once when it starts and once when it is over, however many accepts (or probes) fail meanwhile.
  let troubleSince = 0, acceptedAgain = 0;
  let quiet: ReturnType<typeof setTimeout> | undefined;
  const onAcceptError = (error: unknown) => {
    acceptedAgain = 0;
    clearTimeout(quiet);
    quiet = undefined;
    if (troubleSince !== 0) return;
    troubleSince = Date.now();
    try {
      options.onAcceptError?.(error);
    } catch {
      // A faulty hook must not stop accepting.
    }
  };
  const acceptsWork = () => {
    quiet = undefined;
    const ms = acceptedAgain - troubleSince;
    troubleSince = acceptedAgain = 0;
    try {
      options.onAcceptRecovered?.(ms);
    } catch {
      // As above.
    }
  };
  /**
   * Admission, once the client is decided: the caps, the login backoff, then the session. `held`: a slot
   * of the global count was taken at accept already (while an ingress stage ran), and passes to the
   * session, or is given back when the connection is refused here.
   */
  const admit = (
    conn: ByteConnection,
    client: HostPort | undefined,
    head: Uint8Array | undefined,
    held: boolean,
  ) => {
    const refuse = (outcome: Outcome, reason: string) => {
      refuseSession(context, conn, client, outcome, reason);
      if (held) released();
    };
    if (!held && maxTotal > 0 && running >= maxTotal) {
      return refuse("refused_limit", "connection limit reached");
    }
    const key = client ? clientKey(client.host, prefixV6) : "";
    if (backoff && client && backoff.blocked(key, Date.now())) {
      return refuse("refused_backoff", "too many failed logins; wait");
    }
    if (maxPerClient === 0) {
      if (!held) running++;
      return serveSession(context, rules, conn, client, shutdown.signal, released, head);
    }
    const count = perClient.get(key) ?? 0;
    if (count >= maxPerClient) {
      return refuse("refused_limit", "per-client connection limit reached");
    }
    if (!held) running++;
    perClient.set(key, count + 1);
    serveSession(context, rules, conn, client, shutdown.signal, () => {
      const left = (perClient.get(key) ?? 1) - 1;
      if (left > 0) perClient.set(key, left);
      else perClient.delete(key);
      released();
    }, head);
  };
  const accepted = () => {
    // (One comparison per connection while all is well.)
    if (troubleSince !== 0 && acceptedAgain === 0) {
      acceptedAgain = Date.now();
      quiet = setTimeout(acceptsWork, ACCEPT_QUIET_MS);
    }
  };
  const onConnection = (conn: ByteConnection) => {
    accepted();
    admit(conn, clientAddress() ? conn.remoteAddress : undefined, undefined, false);
  };
  const onUnixConnection = (conn: ByteConnection) => {
    accepted();
    admit(conn, UNIX_CLIENT, undefined, false);
  };
  /**
   * A listener whose connections pass `stage` first (the PROXY protocol): the peer is always looked up
   * (the stage checks it), the global cap counts the connection from accept, and the client the stage
   * decides is the one admission and the session see.
   */
  const onStagedConnection = (stage: IngressStage, unix: boolean) => (conn: ByteConnection) => {
    accepted();
    const peer = unix ? UNIX_CLIENT : conn.remoteAddress;
    if (maxTotal > 0 && running >= maxTotal) {
      return refuseSession(context, conn, peer, "refused_limit", "connection limit reached");
    }
    running++;
    stage({ conn, client: peer, head: new Uint8Array(0) }, shutdown.signal).then(
      (next) => admit(next.conn, next.client, next.head, true),
      (error) => {
        const refusal = error instanceof IngressRefusal
          ? error
          : new IngressRefusal("error", `error: ${String(error)}`);
        refuseSession(context, conn, peer, refusal.outcome, refusal.message);
        released();
      },
    );
  };
  const stageOf = (address: ListenAddress): IngressStage | undefined => {
    const pp = address.proxyProtocol ?? options.proxyProtocol ?? false;
    if (pp === false) return undefined;
    return proxyProtocolStage(pp === true ? {} : pp);
  };
  // The addresses it will listen on count as its own from the start; the real ones once bound.
  const readHostAddresses = (listening: readonly HostPort[]) => {
    let found: string[] | undefined;
    try {
      found = adapter.interfaceAddresses?.();
    } catch {
      // An interface list that fails this time leaves the last one in force.
      return;
    }
    own = hostAddressSet([...(found ?? []), ...listening.map((a) => a.host)]);
    rebuild();
  };
  const tcp = (a: ListenAddress): a is HostPort & ListenAddress => !("path" in a);
  const addresses: ListenAddress[] = options.listen ?? [DEFAULT_LISTEN];
  readHostAddresses(addresses.filter(tcp));
  const listeners: Listener[] = [];
  const unixListeners: UnixListener[] = [];
  try {
    for (const address of addresses) {
      const stage = stageOf(address);
      if (!tcp(address)) {
        if (!adapter.listenUnix) throw new Error(`${adapter.name} cannot listen on a Unix socket`);
        unixListeners.push(
          await adapter.listenUnix(
            address.path,
            stage ? onStagedConnection(stage, true) : onUnixConnection,
            onAcceptError,
          ),
        );
        continue;
      }
      const { host, port } = address;
      listeners.push(
        await adapter.listen(
          { host, port },
          stage ? onStagedConnection(stage, false) : onConnection,
          onAcceptError,
          { reusePort: options.reusePort === true },
        ),
      );
    }
  } catch (error) {
    await Promise.all([...listeners, ...unixListeners].map((l) => l.close()));
    throw error;
  }
  const ws = options.webSocket;
  if (ws && ws.listen.length > 0) {
    if (!adapter.serveWebSocket) {
      await Promise.all([...listeners, ...unixListeners].map((l) => l.close()));
      throw new TypeError(`${adapter.name} cannot serve WebSockets (its adapter has no serveWebSocket)`);
    }
    const admit = async (header: (name: string) => string | null | undefined) => {
      const answer = await admitWebSocket(header, ws.token);
      return answer.ok ? answer : { ok: false as const, ...refusalResponse(answer) };
    };
    try {
      for (const address of ws.listen) {
        listeners.push(
          await adapter.serveWebSocket(
            { host: address.host, port: address.port },
            { path: address.path, admit, tls: ws.tls, reusePort: options.reusePort === true },
            (socket, client) => onConnection(fromWebSocket(socket, { remoteAddress: client })),
          ),
        );
      }
    } catch (error) {
      await Promise.all([...listeners, ...unixListeners].map((l) => l.close()));
      throw error;
    }
  }
  const listening = listeners.map((l) => l.address);
  readHostAddresses(listening);
  const refresh = options.hostAddressRefresh ?? DEFAULT_HOST_ADDRESS_REFRESH;
  const refreshing = refresh > 0 ? setInterval(() => readHostAddresses(listening), refresh) : undefined;
  let listenersClosed: Promise<unknown> | undefined;
  const stopListening = () => {
    clearInterval(refreshing);
    clearTimeout(quiet);
    return (listenersClosed ??= Promise.all([...listeners, ...unixListeners].map((l) => l.close())));
  };
  // Connections open when close() cut them (what drain() reports as closed).
  let cut = 0;
  const ended = () =>
    running === 0 ? Promise.resolve() : (allEnded ??= new Promise<void>((resolve) => (drained = resolve)));
  const close = async () => {
    await stopListening();
    if (!shutdown.signal.aborted) {
      cut = running;
      shutdown.abort();
    }
    await ended();
  };
  return {
    addresses: listening,
    paths: unixListeners.map((l) => l.path),

    get activeConnections() {
      return running;
    },
    update(next) {
      given = next;
      rebuild();
    },
    async drain({ timeout = DEFAULT_DRAIN_TIMEOUT } = {}) {
      await stopListening();
      const open = running;
      if (open > 0 && timeout > 0 && !shutdown.signal.aborted) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const aborted = new Promise<void>((resolve) =>
          shutdown.signal.addEventListener("abort", () => resolve(), { once: true })
        );
        await Promise.race([
          ended(),
          aborted,
          new Promise<void>((resolve) => (timer = setTimeout(resolve, timeout))),
        ]);
        clearTimeout(timer);
      }
      await close();
      return { finished: Math.max(0, open - cut), closed: Math.min(open, cut) };
    },
    close,
  };
}
