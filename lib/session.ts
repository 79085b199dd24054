/**
 * The per-connection driver: feeds client bytes to the state machine, does
 * what it asks (policy, DNS, dialing), then relays. Runtime-neutral: the
 * runtime comes in as `dial` and `resolver`.
 *
 * @module
 */
import { createAuthenticator } from "./auth.ts";
import type { ByteConnection, DialOptions, NativeRelay, Resolver } from "./runtime.ts";
import { canonicalIP, formatHostPort } from "./core/address.ts";
import { replyCodeOf, SocksError } from "./core/errors.ts";
import { type RequestKind, type SocksRequest, SocksServerMachine, type Step } from "./core/socks_server.ts";
import { ReplyCode } from "./core/wire.ts";
import {
  checkCommand,
  clientAllowed,
  type ClientPolicy,
  DEFAULT_POLICY,
  type DestinationPolicy,
  evaluateDestination,
  ruleCommand,
} from "./policy.ts";
import { relay, type RelayResult } from "./relay.ts";
import { DEFAULT_TIMEOUTS, type Timeouts } from "./rules.ts";
import { unwatch, watch } from "./tunnels.ts";

export { DEFAULT_TIMEOUTS, type Timeouts };

/**
 * One line per connection outcome. Never holds a password.
 *
 * @example
 * ```ts
 * import type { ConnectionLog } from "./mod.ts";
 * const onLog = (e: ConnectionLog) =>
 *   console.log(`${e.client} ${e.command} ${e.target} ${e.reply} up=${e.up} down=${e.down} ${e.durationMs}ms`);
 * ```
 */
export interface ConnectionLog {
  /** The client's address, when known. */
  client?: string;
  /** 4 or 5, once the request was parsed. */
  version?: 4 | 5;
  /** The command asked for. */
  command?: RequestKind;
  /** The destination or name asked for, `host:port`. */
  target?: string;
  /** The IP address actually dialled. */
  dialed?: string;
  /** The authenticated user (or SOCKS4 user id). */
  user?: string;
  /** Reply sent: `"granted"` for a tunnel, else the reply byte (SOCKS5 REP or SOCKS4 CD) as `"0x05"`, or `"none"`. */
  reply: string;
  /** Bytes client → destination (early data included). */
  up: number;
  /** Bytes destination → client. */
  down: number;
  /** Milliseconds from accept to close. */
  durationMs: number;
  /** Why it ended, in words. */
  reason: string;
}

/**
 * What the connection handler needs.
 *
 * @example
 * ```ts
 * import type { HandlerOptions, RuntimeAdapter } from "./mod.ts";
 * declare const adapter: RuntimeAdapter;
 * const options: HandlerOptions = {
 *   dial: adapter.dial,
 *   resolver: adapter.resolver({ host: "127.0.0.1", port: 53 }),
 *   users: new Map([["alice", "secret"]]),
 * };
 * ```
 */
export interface HandlerOptions {
  /** Opens outbound TCP connections to an IP literal (a runtime adapter's `dial`). */
  dial: (options: DialOptions) => Promise<ByteConnection>;
  /** DNS for CONNECT by name, RESOLVE and RESOLVE_PTR. */
  resolver: Resolver;
  /** A runtime's faster relay (a runtime adapter's `relay`), tried before the runtime-neutral one. */
  relay?: NativeRelay;
  /** RFC 1929 users (`user → password`); when non-empty, authentication is required and SOCKS4 is refused. */
  users?: ReadonlyMap<string, string>;
  /** Destination policy; default {@linkcode DEFAULT_POLICY}. */
  policy?: Partial<DestinationPolicy>;
  /** Which clients may connect; default everyone. */
  clientPolicy?: ClientPolicy;
  /** Timeouts; default {@linkcode DEFAULT_TIMEOUTS}. */
  timeouts?: Partial<Timeouts>;
  /** Called once per connection when it ends. */
  onLog?: (entry: ConnectionLog) => void;
}

/**
 * Serves one client connection to its end; `signal` ends it early (server shutdown). Never rejects.
 *
 * @example
 * ```ts
 * import { type ByteConnection, type ConnectionHandler, createHandler, type HandlerOptions } from "./mod.ts";
 * declare const options: HandlerOptions, client: ByteConnection;
 * const handle: ConnectionHandler = createHandler(options);
 * const log = await handle(client, AbortSignal.timeout(3_600_000)); // closed after an hour at most
 * ```
 */
export type ConnectionHandler = (client: ByteConnection, signal?: AbortSignal) => Promise<ConnectionLog>;

const LINGER_MS = 1_000;
const LINGER_BYTES = 64 * 1024;

/**
 * Bounds a request's work by the connect timeout (`ms`, 0: none) and the
 * server's shutdown (`signal`): whichever comes first aborts `abort.signal`
 * (which cancels a dial) and rejects `stopped` with the reason. `clear()`
 * stops watching both; nothing is left registered on `signal`.
 */
function bounded(
  ms: number,
  signal: AbortSignal | undefined,
): { abort: AbortController; stopped: Promise<never>; clear: () => void } {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onShutdown: (() => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    const stop = (error: SocksError) => {
      abort.abort(error);
      reject(error);
    };
    if (ms > 0) timer = setTimeout(() => stop(new SocksError(ReplyCode.TtlExpired, "connect timed out")), ms);
    onShutdown = () => stop(new SocksError(ReplyCode.GeneralFailure, "server shutting down"));
    if (signal?.aborted) onShutdown();
    else if (signal) watch(signal, onShutdown);
  });
  stopped.catch(() => {});
  return {
    abort,
    stopped,
    clear: () => {
      clearTimeout(timer);
      if (onShutdown && signal) unwatch(signal, onShutdown);
    },
  };
}

/**
 * Closes after a final reply without losing it: send our FIN, then read and
 * discard what the client still sends (bounded in bytes and time) so the
 * kernel does not answer unread data with a reset that could destroy the
 * reply before the client reads it.
 */
async function lingeringClose(client: ByteConnection): Promise<void> {
  const timer = setTimeout(() => client.close(), LINGER_MS);
  try {
    await client.closeWrite();
    let seen = 0;
    for (let c = await client.read(); c && seen < LINGER_BYTES; c = await client.read()) seen += c.length;
  } catch {
    // The client went away: nothing more to protect.
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

/**
 * Builds the handler that serves one client connection: SOCKS handshake,
 * policy, DNS, dialing, then the relay. Use it with any
 * {@linkcode ByteConnection} (see `fromWebStreams` for Web Streams).
 *
 * @example
 * ```ts
 * import { createHandler, fromWebStreams, type HandlerOptions } from "./mod.ts";
 * declare const options: HandlerOptions;
 * declare const stream: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
 * const handle = createHandler(options);
 * const log = await handle(fromWebStreams(stream));
 * ```
 */
export function createHandler(options: HandlerOptions): ConnectionHandler {
  const serveConnection = createConnectionServer(options);
  return (client, signal) => new Promise((resolve) => serveConnection(client, signal, resolve));
}

/**
 * What {@linkcode createHandler} wraps: serves one connection and calls
 * `done` with its log at its end, without a promise per connection for the
 * caller to hold (`serve()` uses it). Never throws.
 */
export function createConnectionServer(
  options: HandlerOptions,
  { clientAddress = true }: { clientAddress?: boolean } = {},
): (client: ByteConnection, signal: AbortSignal | undefined, done: (log: ConnectionLog) => void) => void {
  const policy: DestinationPolicy = { ...DEFAULT_POLICY, ...options.policy };
  const timeouts: Timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const authenticate = options.users && options.users.size > 0
    ? createAuthenticator(options.users)
    : undefined;
  const { dial, resolver } = options;
  const clientPolicy: ClientPolicy = options.clientPolicy ?? { rules: [] };

  /**
   * The addresses a request may use, in preference order: a literal as it is,
   * a name resolved, each checked by the destination policy (a name rule may
   * refuse before any DNS query is sent). Refuses with NotAllowed when the
   * policy leaves nothing.
   */
  function allowedAddresses(req: SocksRequest, log: ConnectionLog): string[] | Promise<string[]> {
    const command = ruleCommand(req.kind);
    const literal = canonicalIP(req.target.host);
    const name = literal ? undefined : req.target.host;
    const port = req.kind === "resolve" ? 0 : req.target.port;
    const verdict = name === undefined ? "undecided" : evaluateDestination({ command, name, port }, policy);
    if (verdict !== "undecided" && verdict !== null) {
      throw new SocksError(ReplyCode.NotAllowed, `${name} not allowed by policy`);
    }
    const check = (candidates: string[]) => {
      const allowed = candidates.filter((ip) =>
        evaluateDestination({ command, name, ip, port }, policy) === null
      );
      if (allowed.length === 0) {
        log.dialed = candidates[0];
        throw new SocksError(
          ReplyCode.NotAllowed,
          `destination ${candidates.join(", ")} not allowed by policy`,
        );
      }
      return allowed;
    };
    // An address literal is checked at once: no promise for the common case of a client that resolved.
    return literal ? check([literal]) : resolver.lookup(req.target.host).then(check);
  }

  /** Dials the allowed addresses in turn; the first that answers is the tunnel. Throws (or rejects) as `allowedAddresses`. */
  function openTunnel(req: SocksRequest, log: ConnectionLog, signal: AbortSignal): Promise<ByteConnection> {
    const port = req.target.port;
    const attempt = (ips: string[], i: number): Promise<ByteConnection> => {
      log.dialed = ips[i];
      const opening = dial({ host: ips[i], port, signal });
      if (i + 1 >= ips.length) return opening;
      return opening.catch((error) => {
        if (signal.aborted) throw error;
        return attempt(ips, i + 1);
      });
    };
    const ips = allowedAddresses(req, log);
    return Array.isArray(ips) ? attempt(ips, 0) : ips.then((list) => attempt(list, 0));
  }

  async function resolveOne(req: SocksRequest, log: ConnectionLog): Promise<string> {
    // An IP literal resolves to itself: no DNS, nothing revealed, so no policy check.
    const literal = canonicalIP(req.target.host);
    const addresses = literal ? [literal] : await allowedAddresses(req, log);
    // SOCKS4 replies carry only IPv4; SOCKS5 prefers IPv4 as Tor does (lookup lists IPv4 first).
    const pick = req.version === 4 ? addresses.find((a) => !a.includes(":")) : addresses[0];
    if (!pick) throw new SocksError(ReplyCode.HostUnreachable, `${req.target.host} has no usable address`);
    return pick;
  }

  async function reverseOne(req: SocksRequest): Promise<string> {
    const denied = evaluateDestination({ command: "resolve", ip: req.target.host, port: 0 }, policy);
    if (denied !== null) {
      throw new SocksError(ReplyCode.NotAllowed, `${req.target.host} not allowed by policy`);
    }
    const names = await resolver.reverse(req.target.host);
    return names[0] ?? "";
  }

  /**
   * The handshake and the request's work. Resolves with the open upstream and
   * the bytes the client sent early when a tunnel was granted, or undefined
   * once the connection is done (it is then closed). Kept apart from the relay
   * so that nothing it allocated (the machine, timers, the dial's abort)
   * outlives the handshake: an idle tunnel costs only what the relay holds.
   */
  async function negotiate(
    client: ByteConnection,
    log: ConnectionLog,
    signal: AbortSignal | undefined,
  ): Promise<{ upstream: ByteConnection; early: Uint8Array } | undefined> {
    const machine = new SocksServerMachine({ authenticate });
    // Nearly every step writes one buffer: that write's own promise, no async wrapper around it.
    const send = (step: Step): Promise<void> | undefined => {
      if (step.write.length === 0) return undefined;
      if (step.write.length === 1) return client.write(step.write[0]);
      return step.write.reduce((p: Promise<void>, w) => p.then(() => client.write(w)), Promise.resolve());
    };
    // 1. Handshake, bounded by the handshake timeout.
    let handshakeTimedOut = false;
    const timer = timeouts.handshake > 0
      ? setTimeout(() => {
        handshakeTimedOut = true;
        client.close();
      }, timeouts.handshake)
      : undefined;
    let step: Step;
    const stopHandshake = () => client.close();
    if (signal) watch(signal, stopHandshake);
    try {
      do {
        const chunk = await client.read();
        if (chunk === null) {
          log.reason = handshakeTimedOut ? "handshake timeout" : "client closed during handshake";
          client.close();
          return undefined;
        }
        step = machine.receive(chunk);
        await send(step);
      } while (step.action.type === "need_more");
    } catch (error) {
      log.reason = handshakeTimedOut ? "handshake timeout" : `client error: ${String(error)}`;
      client.close();
      return undefined;
    } finally {
      clearTimeout(timer);
      if (signal) unwatch(signal, stopHandshake);
    }
    if (step.action.type !== "request") {
      log.reason = step.action.type === "close" ? step.action.reason : "protocol error";
      await lingeringClose(client);
      return undefined;
    }
    const { request: req, early } = step.action;
    log.version = req.version;
    log.command = req.kind;
    log.target = formatHostPort(req.target);
    if (req.user !== undefined) log.user = req.user;

    // 2. The work the request asks for, bounded by the connect timeout and the server's shutdown.
    const { abort, stopped, clear } = bounded(timeouts.connect, signal);
    let upstream: ByteConnection | undefined;
    let answer: Step;
    try {
      const denied = checkCommand(req.kind, policy);
      if (denied !== null) throw new SocksError(denied, `${req.kind} not allowed by policy`);
      if (req.kind === "connect" || req.kind === "connect_dir") {
        const opening = openTunnel(req, log, abort.signal);
        // A connection that completes after the deadline is closed, not leaked.
        opening.then((c) => abort.signal.aborted && c.close(), () => {});
        upstream = await Promise.race([opening, stopped]);
        answer = machine.connected(upstream.localAddress ?? { host: "0.0.0.0", port: 0 });
      } else if (req.kind === "resolve") {
        answer = machine.resolved(await Promise.race([resolveOne(req, log), stopped]));
      } else {
        answer = machine.resolvedName(await Promise.race([reverseOne(req), stopped]));
      }
    } catch (error) {
      const code = replyCodeOf(error);
      answer = machine.rejected(code);
      log.reason = error instanceof Error ? error.message : String(error);
    } finally {
      clear();
    }
    log.reply = answer.action.type === "relay"
      ? "granted"
      : `0x${(answer.write[0]?.[1] ?? 0).toString(16).padStart(2, "0")}`;
    try {
      await send(answer);
    } catch (error) {
      upstream?.close();
      throw error;
    }
    if (answer.action.type !== "relay" || !upstream) {
      if (!log.reason) log.reason = answer.action.type === "close" ? answer.action.reason : "closed";
      await lingeringClose(client);
      return undefined;
    }
    return { upstream, early };
  }

  /** 3. The tunnel: forward what the client sent before our reply, then relay. */
  function tunnel(
    client: ByteConnection,
    upstream: ByteConnection,
    early: Uint8Array,
    log: ConnectionLog,
    signal: AbortSignal | undefined,
  ): Promise<RelayResult> {
    const relayOptions = { idleTimeout: timeouts.idle, signal };
    if (early.length === 0) {
      return options.relay?.(client, upstream, relayOptions) ?? relay(client, upstream, relayOptions);
    }
    return upstream.write(early).then(() => {
      log.up += early.length;
      return options.relay?.(client, upstream, relayOptions) ?? relay(client, upstream, relayOptions);
    }, (error) => {
      client.close();
      upstream.close();
      throw error;
    });
  }

  const finish = (log: ConnectionLog, started: number, done: (log: ConnectionLog) => void): void => {
    log.durationMs = Date.now() - started;
    try {
      options.onLog?.(log);
    } catch {
      // A faulty log hook must not break serving.
    }
    done(log);
  };

  // The two callbacks that wait for a tunnel's end are made here, not inside
  // `handle`: a closure keeps its whole scope alive, and the client
  // connection must not outlive the relay's hold on it.
  type Done = (log: ConnectionLog) => void;
  const settled = (log: ConnectionLog, started: number, done: Done) => (result: RelayResult): void => {
    log.up += result.up;
    log.down += result.down;
    log.reason = result.end === "error"
      ? `relay error: ${String(result.error)}`
      : result.end === "idle"
      ? "idle timeout"
      : result.end === "aborted"
      ? "server shutting down"
      : "done";
    finish(log, started, done);
  };
  const failed = (log: ConnectionLog, started: number, done: Done) => (error: unknown): void => {
    log.reason = `error: ${String(error)}`;
    finish(log, started, done);
  };

  // Plain promise chains rather than one async function: a suspended async
  // function keeps every local of its frame alive, for as long as the tunnel.
  // While a tunnel is open, all that waits for its end is the relay's promise
  // and one reaction on it.
  return function serveConnection(client: ByteConnection, signal: AbortSignal | undefined, done: Done): void {
    const started = Date.now();
    if (signal?.aborted) {
      client.close();
      return done({ reply: "none", up: 0, down: 0, durationMs: 0, reason: "server shutting down" });
    }
    const log: ConnectionLog = { reply: "none", up: 0, down: 0, durationMs: 0, reason: "" };
    const remote = clientAddress ? client.remoteAddress : undefined;
    if (remote) log.client = formatHostPort(remote);
    if (!clientAllowed(remote?.host, clientPolicy)) {
      client.close();
      log.reason = "client not allowed by policy";
      return finish(log, started, done);
    }
    negotiate(client, log, signal).then((granted) => {
      if (!granted) return finish(log, started, done);
      // Not returned: the promise of this callback settles now instead of following the tunnel.
      tunnel(client, granted.upstream, granted.early, log, signal).then(
        settled(log, started, done),
        failed(log, started, done),
      );
    }).catch((error) => {
      client.close();
      failed(log, started, done)(error);
    });
  };
}
