/**
 * One client connection, step by step: the machine's handshake, the
 * request's command (policy, DNS, dialing through an upstream), the relay,
 * and the one record of it all. Runtime-neutral: the runtime comes in as the
 * upstream's `dial` and `resolver` and as an optional native relay.
 *
 * @module
 */
import { formatHostPort, type HostPort } from "./core/address.ts";
import { replyCodeOf, SocksError } from "./core/errors.ts";
import type { CloseCode, RequestKind, RequestMachine, Step } from "./core/request.ts";
import { DEFAULT_COMMANDS, SocksServerMachine } from "./core/socks_server.ts";
import { SniffingMachine, type SniffingOptions } from "./core/sniff.ts";
import { concatBytes } from "./core/bytes.ts";
import { ReplyCode, Socks4ReplyCode } from "./core/wire.ts";
import { type CommandResult, runCommand } from "./commands.ts";
import { clientAllowed } from "./policy.ts";
import { type ConnectionLog, newRecord, type Outcome, replyText } from "./record.ts";
import { relay, type RelayResult, unwatch, watch } from "./relay.ts";
import { type DeadlineEntry, DeadlineList } from "./_deadlines.ts";
import { DEFAULT_TIMEOUTS, makeRules, type Rules, type RulesOptions, type Timeouts } from "./rules.ts";
import type { ByteConnection, DialOptions, NativeRelay, Resolver } from "./runtime.ts";
import { directUpstream } from "./upstream/direct.ts";
import { type ChainOptions, chainUpstream } from "./upstream/route.ts";
import { directBind, type OpenListener } from "./upstream/bind.ts";
import type { Binding, Opened, Upstream } from "./upstream/upstream.ts";
import { type Association, UDP_DROPS, type UdpService } from "./upstream/udp.ts";

export { type ConnectionLog, DEFAULT_TIMEOUTS, type Timeouts };

/**
 * What the connection handler needs.
 *
 * @example
 * ```ts
 * import type { HandlerOptions, RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const options: HandlerOptions = {
 *   dial: adapter.dial,
 *   resolver: adapter.resolver({ host: "127.0.0.1", port: 53 }),
 *   users: new Map([["alice", "secret"]]),
 * };
 * ```
 */
export interface HandlerOptions extends RulesOptions {
  /** Opens outbound TCP connections to an IP literal (a runtime adapter's `dial`). */
  dial: (options: DialOptions) => Promise<ByteConnection>;
  /** DNS for CONNECT by name, RESOLVE and RESOLVE_PTR. */
  resolver: Resolver;
  /** A runtime's faster relay (a runtime adapter's `relay`), tried before the runtime-neutral one. */
  relay?: NativeRelay;
  /** Each session sets timers of its own (a runtime adapter's `timersPerConnection`: workerd). */
  timersPerConnection?: boolean;
  /** Called once per connection when it ends. */
  onLog?: (entry: ConnectionLog) => void;
  /**
   * The way out; default the direct one over `dial` and `resolver`
   * (`byNameUpstream` where the runtime resolves names itself, as workerd does).
   */
  upstream?: Upstream;
  /** Upstream proxies and the routes to them (`--upstream`, `--route`); default: everything direct. */
  chain?: ChainOptions;
  /**
   * Called when a tunnel is granted, with the record that `onLog` gets at its
   * end (e.g. to count open tunnels).
   */
  onGranted?: (entry: ConnectionLog) => void;
  /** Serve BIND (SOCKS4 and SOCKS5), listening through `openListener`. Default false. */
  bind?: boolean;
  /** Opens BIND's listening sockets (a runtime adapter's `listen`); BIND needs it. */
  openListener?: OpenListener;
  /** Where BIND listens (an address of this host); default the control connection's local address. */
  bindAddress?: string;
  /** Serve HTTP `CONNECT host:port` on the SOCKS port, under the same policy and users. Default false. */
  httpConnect?: boolean;
}

/**
 * Serves one client connection to its end; `signal` ends it early (server shutdown). Never rejects.
 *
 * @example
 * ```ts
 * import { type ByteConnection, type ConnectionHandler, createHandler, type HandlerOptions } from "@edgesocks/edgesocks";
 * declare const options: HandlerOptions, client: ByteConnection;
 * const handle: ConnectionHandler = createHandler(options);
 * const log = await handle(client, AbortSignal.timeout(3_600_000)); // closed after an hour at most
 * ```
 */
export type ConnectionHandler = (client: ByteConnection, signal?: AbortSignal) => Promise<ConnectionLog>;

/**
 * What every session of a server shares, for the server's whole life (the
 * rules are not here: each session is handed the snapshot current at accept).
 */
export interface SessionContext {
  /** The way out. */
  readonly upstream: Upstream;
  /** A runtime's faster relay, tried before the runtime-neutral one. */
  readonly relay?: NativeRelay;
  /** Each session sets timers of its own instead of joining the shared deadline lists (workerd). */
  readonly timersPerConnection?: boolean;
  /** Reads each record when its connection ends. */
  readonly onLog?: (entry: ConnectionLog) => void;
  /** Reads a record when its tunnel is granted. */
  readonly onGranted?: (entry: ConnectionLog) => void;
  /** Told at once when a client's login fails (before its connection has ended), e.g. for a backoff. */
  readonly onAuthFailure?: (client: HostPort) => void;
  /** Credentials go on to upstreams: the machine keeps the login, and asks for one it will not check. */
  readonly passthrough?: boolean;
  /** The request kinds the machine hands out; default the SOCKS machine's (`DEFAULT_COMMANDS`). */
  readonly commands?: readonly RequestKind[];
  /** Serve HTTP CONNECT on the SOCKS port. */
  readonly httpConnect?: boolean;
  /** UDP ASSOCIATE's service; without it UDP ASSOCIATE is answered "command not supported". */
  readonly udp?: UdpService;
}

/** Called once with the record when the connection has ended. */
export type Done = (record: ConnectionLog) => void;

/** Machine options under `--upstream-auth passthrough`: ask for a login, accept any, keep it for the upstream. */
const PASSTHROUGH = { acceptAnyLogin: true, keepLogin: true } as const;

const LINGER_MS = 1_000;
const LINGER_BYTES = 64 * 1024;

/**
 * What bounds a session's handshake, then its command's work: the phase's
 * timeout (an entry of the deadline list shared by every session with that
 * timeout) and the server's shutdown (a watcher of the signal's shared
 * watch). One small object for both phases, in place of a timer, an abort
 * listener and their closures per phase. The handshake's end closes the
 * client; the command's aborts its work's signal (which cancels a dial) and
 * rejects the work with the reason. `cut` says which ended the phase.
 */
class Guard implements DeadlineEntry {
  list: DeadlineList | null = null;
  at = 0;
  prev: DeadlineEntry | null = null;
  next: DeadlineEntry | null = null;
  /** What ended the last phase early, if anything did. */
  cut: "timeout" | "shutdown" | undefined = undefined;
  readonly #signal: AbortSignal | undefined;
  /** Its own timer instead of a deadline list's (`timersPerConnection`), while a phase is timed. */
  readonly #own: boolean;
  #timer: ReturnType<typeof setTimeout> | undefined = undefined;
  #watching = false;
  #client: ByteConnection | undefined = undefined;
  #abort: AbortController | undefined = undefined;
  #reject: ((error: SocksError) => void) | undefined = undefined;

  constructor(signal: AbortSignal | undefined, own = false) {
    this.#signal = signal;
    this.#own = own;
  }

  /** The handshake: `ms` (0: none) from now, or the shutdown, closes `client`. */
  handshake(ms: number, client: ByteConnection): void {
    this.#client = client;
    this.#arm(ms);
  }

  /**
   * The command's work: `ms` (0: none) from now, or the shutdown, aborts `abort` and calls `reject` with
   * the reason (at once when the server is already shutting down). Follows a handshake without a gap.
   */
  command(ms: number, abort: AbortController, reject: (error: SocksError) => void): void {
    this.#client = undefined;
    this.#abort = abort;
    this.#reject = reject;
    this.#arm(ms);
  }

  #arm(ms: number) {
    if (this.#own) {
      clearTimeout(this.#timer);
      this.#timer = ms > 0 ? setTimeout(() => this.expire(), ms) : undefined;
    } else if (ms > 0) DeadlineList.move(this, ms);
    else DeadlineList.remove(this);
    if (this.#watching || !this.#signal) return;
    if (this.#signal.aborted) return this.stop();
    this.#watching = true;
    watch(this.#signal, this);
  }

  /** Stops watching both (idempotent). */
  clear(): void {
    if (this.#own) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    } else DeadlineList.remove(this);
    if (this.#watching) {
      this.#watching = false;
      unwatch(this.#signal!, this);
    }
    this.#client = this.#abort = this.#reject = undefined;
  }

  /** The phase's deadline passed. */
  expire(): void {
    this.#end("timeout");
  }

  /** The server is shutting down (a watcher of the shutdown signal). */
  stop(): void {
    this.#end("shutdown");
  }

  #end(why: "timeout" | "shutdown") {
    const client = this.#client, abort = this.#abort, reject = this.#reject;
    this.clear();
    this.cut = why;
    if (client) return client.close();
    const error = why === "timeout"
      ? new SocksError(ReplyCode.TtlExpired, "connect timed out", { code: "connect_timeout" })
      : new SocksError(ReplyCode.GeneralFailure, "server shutting down", { code: "shutdown" });
    abort?.abort(error);
    reject?.(error);
  }
}

/**
 * Bounds a request's work by the connect timeout (`ms`, 0: none) and the
 * server's shutdown (`signal`): whichever comes first aborts `abort.signal`
 * (which cancels a dial) and rejects `stopped` with the reason. `clear()`
 * stops watching both; nothing is left registered on `signal`. `ownTimer`:
 * a timer of its own, not a deadline list's (`timersPerConnection`).
 */
function bounded(
  ms: number,
  signal: AbortSignal | undefined,
  ownTimer = false,
): { abort: AbortController; stopped: Promise<never>; clear: () => void } {
  const abort = new AbortController();
  const guard = new Guard(signal, ownTimer);
  const stopped = new Promise<never>((_, reject) => guard.command(ms, abort, reject));
  stopped.catch(() => {});
  return { abort, stopped, clear: () => guard.clear() };
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

/** A client as records show it: `host:port`, or `unix` for a Unix socket's peer (it has no address). */
function formatClient(client: HostPort): string {
  return client.host === "unix" && client.port === 0 ? "unix" : formatHostPort(client);
}

/** Nearly every step writes one buffer: that write's own promise, no async wrapper around it. */
function send(client: ByteConnection, step: Step<RequestKind>): Promise<void> | undefined {
  if (step.write.length === 0) return undefined;
  if (step.write.length === 1) return client.write(step.write[0]);
  return step.write.reduce((p: Promise<void>, w) => p.then(() => client.write(w)), Promise.resolve());
}

/** The record's outcome for a machine's close. */
const CLOSE_OUTCOMES: Readonly<Record<CloseCode, Outcome>> = {
  answered: "resolved",
  protocol_error: "protocol_error",
  http_request: "http_request",
  auth_failed: "auth_failed",
  auth_unavailable: "auth_unavailable",
  unsupported: "unsupported",
};

const FAILURE_OUTCOMES = new Set<string>([
  "refused_policy",
  "dns_failed",
  "upstream_failed",
  "connect_timeout",
  "shutdown",
  "unsupported",
  "client_closed",
  "refused_limit",
]);

/** The outcome a failed command stands for: the error's own code, else what its reply says. */
function failureOutcome(error: unknown): Outcome {
  const code = error instanceof SocksError ? error.code : undefined;
  if (code !== undefined && FAILURE_OUTCOMES.has(code)) return code as Outcome;
  const reply = replyCodeOf(error);
  if (reply === ReplyCode.NotAllowed) return "refused_policy";
  if (reply === ReplyCode.TtlExpired) return "connect_timeout";
  return error instanceof SocksError ? "upstream_failed" : "error";
}

/**
 * What the handshake leaves for the relay: the open upstream and the bytes the client sent early; or,
 * for UDP ASSOCIATE, the association the client connection holds open.
 */
type Granted = Tunnelled | { association: Association };

/** A granted tunnel: the open upstream and the bytes the client sent early. */
interface Tunnelled {
  upstream: ByteConnection;
  early: Uint8Array;
  /** The client connection to relay, when it is not the one accepted (BIND: a read was pending on it). */
  client?: ByteConnection;
}

/** `conn`, whose first read() is `pending` (already asked of `conn`). */
function withPendingRead(conn: ByteConnection, pending: Promise<Uint8Array | null>): ByteConnection {
  let first: Promise<Uint8Array | null> | undefined = pending;
  return {
    read: () => {
      const p = first ?? conn.read();
      first = undefined;
      return p;
    },
    write: (chunk) => conn.write(chunk),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
    ...(conn.abort ? { abort: () => conn.abort!() } : {}),
    ...(conn.recycle ? { recycle: (chunk: Uint8Array) => conn.recycle!(chunk) } : {}),
    ...(conn.onFailure ? { onFailure: (listener: (error: Error) => void) => conn.onFailure!(listener) } : {}),
    ...(conn.localAddress ? { localAddress: conn.localAddress } : {}),
    ...(conn.remoteAddress ? { remoteAddress: conn.remoteAddress } : {}),
  };
}

/**
 * One connection. It holds its record and how to end it; everything of the
 * handshake (the machine, the rules, timers, the dial's abort) lives in
 * `#negotiate`'s frame, gone before the relay starts, so an idle tunnel
 * costs only what the relay holds plus this small object.
 */
class Session {
  readonly record: ConnectionLog;
  readonly #started = Date.now();
  readonly #context: SessionContext;
  readonly #done: Done;

  constructor(context: SessionContext, client: HostPort | undefined, done: Done) {
    this.#context = context;
    this.#done = done;
    this.record = newRecord(client ? formatClient(client) : undefined);
  }

  /** The one place a record is completed and handed to its readers. */
  end(outcome: Outcome, reason: string): void {
    const record = this.record;
    record.outcome = outcome;
    record.reason = reason;
    record.durationMs = Date.now() - this.#started;
    try {
      this.#context.onLog?.(record);
    } catch {
      // A faulty log hook must not break serving.
    }
    this.#done(record);
  }

  // Made once per session, outside any frame that holds the client: a closure keeps its whole scope
  // alive, and the relay's end is all these wait for.
  readonly #settled = (result: RelayResult): void => {
    this.record.up += result.up;
    this.record.down += result.down;
    if (result.end === "error") this.end("tunnel_error", `relay error: ${String(result.error)}`);
    else if (result.end === "idle") this.end("tunnel_idle", "idle timeout");
    else if (result.end === "aborted") this.end("shutdown", "server shutting down");
    else this.end("tunnel_done", "done");
  };
  readonly #failed = (error: unknown): void => this.end("error", `error: ${String(error)}`);

  /**
   * Serves `client` under `rules`. Plain promise chains rather than one async
   * function: a suspended async function keeps every local of its frame
   * alive, for as long as the tunnel.
   */
  start(
    client: ByteConnection,
    rules: Rules,
    signal: AbortSignal | undefined,
    peer: HostPort | undefined,
    head?: Uint8Array,
  ): void {
    if (!clientAllowed(peer?.host, rules.clientPolicy)) {
      client.close();
      return this.end("refused_client", "client not allowed by policy");
    }
    this.#negotiate(client, rules, signal, peer, head).then((granted) => {
      if (!granted) return;
      if ("association" in granted) {
        return this.#hold(client, granted.association, signal);
      }
      // Not returned: the promise of this callback settles now instead of following the tunnel.
      this.#tunnel(granted.client ?? client, granted, rules.timeouts.idle, signal).then(
        this.#settled,
        this.#failed,
      );
    }).catch((error) => {
      client.close();
      this.#failed(error);
    });
  }

  /**
   * The handshake and the request's work. Resolves with what the relay needs
   * when a tunnel was granted, or undefined once the connection is done (it
   * is then closed and its record ended).
   */
  async #negotiate(
    client: ByteConnection,
    rules: Rules,
    signal: AbortSignal | undefined,
    peer: HostPort | undefined,
    head: Uint8Array | undefined,
  ): Promise<Granted | undefined> {
    const record = this.record;
    const context = this.#context;
    // (Options set field by field: spreading empty objects per connection cost more than the machine.)
    const options: SniffingOptions<RequestKind> = { authenticate: rules.authenticate };
    if (context.passthrough) Object.assign(options, PASSTHROUGH);
    if (context.commands) options.commands = context.commands;
    let machine: RequestMachine;
    if (context.httpConnect) {
      options.httpConnect = true;
      machine = new SniffingMachine<RequestKind>(options);
    } else machine = new SocksServerMachine<RequestKind>(options);
    // 1. Handshake, bounded by the handshake timeout and the shutdown.
    const guard = new Guard(signal, context.timersPerConnection);
    guard.handshake(rules.timeouts.handshake, client);
    let step: Step<RequestKind>;
    try {
      do {
        // Bytes an ingress stage read past its own header (a PROXY header's segment) come first.
        const chunk = head !== undefined && head.length > 0 ? head : await client.read();
        head = undefined;
        if (chunk === null) {
          guard.clear();
          client.close();
          if (guard.cut === "timeout") this.end("handshake_timeout", "handshake timeout");
          else if (signal?.aborted) this.end("shutdown", "server shutting down");
          else this.end("client_closed", "client closed during handshake");
          return undefined;
        }
        step = machine.receive(chunk);
        await send(client, step);
      } while (step.action.type === "need_more");
    } catch (error) {
      guard.clear();
      client.close();
      if (guard.cut === "timeout") this.end("handshake_timeout", "handshake timeout");
      else this.end("client_error", `client error: ${String(error)}`);
      return undefined;
    }
    const action = step.action;
    // A request goes on to its command with the same guard; anything else is done with it here.
    if (action.type !== "request") guard.clear();
    if (machine.protocol !== undefined) record.protocol = machine.protocol;
    if (step.status !== undefined) record.status = step.status;
    // The HTTP-resistance page is a 501, whichever machine sent it.
    else if (action.type === "close" && action.code === "http_request") record.status = 501;
    if (action.type !== "request") {
      // The machine refused by itself (a bad request, an unsupported command) or the peer misbehaved.
      if (step.reply !== undefined) record.reply = replyText(step.reply);
      if (action.type === "close" && action.code === "auth_failed") {
        // Who is being guessed at, for the record; the password never leaves the machine.
        if (action.user !== undefined) record.user = action.user;
        if (peer) this.#context.onAuthFailure?.(peer);
      }
      await lingeringClose(client);
      if (action.type === "close") this.end(CLOSE_OUTCOMES[action.code], action.reason);
      else this.end("protocol_error", "protocol error");
      return undefined;
    }
    const { request } = action;
    record.handshakeMs = Date.now() - this.#started;
    if (request.protocol === "http") record.protocol = "http";
    else {
      record.version = request.version;
      record.protocol = request.version === 4 ? "socks4" : "socks5";
    }
    record.command = request.kind;
    record.target = formatHostPort(request.target);
    if (request.user !== undefined) record.user = request.user;

    // 2. The command's work, bounded by the connect timeout and the server's shutdown.
    const asked = Date.now();
    let answer: Step<RequestKind>;
    let upstream: ByteConnection | undefined;
    let binding: Binding | undefined;
    let association: Association | undefined;
    let failure: { outcome: Outcome; reason: string } | undefined;
    const refuse = (error: unknown): Step => {
      const dialed = (error as { dialed?: unknown } | null)?.dialed;
      if (typeof dialed === "string") record.dialed = dialed;
      const outcome = failureOutcome(error);
      // Under concealRefusals a name refused by policy looks like one that does not resolve.
      const conceal = rules.concealRefusals && outcome === "refused_policy" &&
        request.target.type === "domain";
      failure = { outcome, reason: error instanceof Error ? error.message : String(error) };
      return machine.answer({
        type: "rejected",
        reply: conceal ? ReplyCode.HostUnreachable : replyCodeOf(error),
      });
    };
    try {
      // The work's own promise or the guard's reason, whichever comes first (what Promise.race would give,
      // with one promise less).
      const result = await new Promise<CommandResult>((resolve, reject) => {
        const abort = new AbortController();
        guard.command(rules.timeouts.connect, abort, reject);
        if (guard.cut !== undefined) return;
        runCommand({
          request,
          rules,
          upstream: context.upstream,
          signal: abort.signal,
          // Only the commands that read it ask (a system call or two; CONNECT never needs it).
          ...(request.kind === "bind" || request.kind === "udp_associate" ? localOf(client) : {}),
          ...(request.kind === "udp_associate" ? udpContext(client, peer, context.udp) : {}),
        }).then(resolve, reject);
      });
      if (result.tunnel) {
        upstream = result.tunnel.conn;
        record.dialed = result.tunnel.dialed;
      }
      binding = result.binding;
      association = result.association;
      answer = machine.answer(result.answer);
    } catch (error) {
      answer = refuse(error);
    } finally {
      guard.clear();
    }
    if (request.kind === "connect" || request.kind === "connect_dir") record.connectMs = Date.now() - asked;
    let early = action.early;
    let relayed: ByteConnection | undefined;
    try {
      if (answer.action.type === "wait" && binding) {
        // BIND: the first reply goes out, then the wait for the peer (bounded by the connect timeout).
        record.reply = replyText(answer.reply ?? 0);
        await send(client, answer);
        const waited = await this.#waitForPeer(client, binding, rules, signal);
        if (waited.held) early = early.length === 0 ? waited.held : concatBytes(early, waited.held);
        if (waited.pending) relayed = withPendingRead(client, waited.pending);
        if (waited.peer) {
          upstream = waited.peer.conn;
          record.dialed = waited.peer.dialed;
          answer = machine.answer({ type: "peer", peer: waited.peer.bound });
        } else if (waited.outcome === "client_closed") {
          client.close();
          this.end("client_closed", "client closed while BIND waited for its peer");
          return undefined;
        } else answer = refuse(waited.error);
      }
    } finally {
      binding?.close();
    }
    const held = answer.action.type === "hold";
    record.reply = answer.action.type === "relay" || held ? "granted" : replyText(answer.reply ?? 0);
    if (answer.status !== undefined) record.status = answer.status;
    if (answer.action.type === "relay" && upstream) {
      try {
        this.#context.onGranted?.(record);
      } catch {
        // As for onLog: a faulty hook must not break serving.
      }
    }
    try {
      await send(client, answer);
    } catch (error) {
      upstream?.close();
      association?.close();
      throw error;
    }
    if (held && association) return { association };
    association?.close();
    if (answer.action.type !== "relay" || !upstream) {
      await lingeringClose(client);
      if (failure) this.end(failure.outcome, failure.reason);
      else if (answer.action.type === "close") {
        // An answer the machine could not carry (an IPv6 address over SOCKS4, a name that is not ASCII)
        // went out as a failure: the lookup gave nothing usable.
        const granted = answer.reply === ReplyCode.Succeeded || answer.reply === Socks4ReplyCode.Granted;
        const code = answer.action.code;
        this.end(code === "answered" && !granted ? "dns_failed" : CLOSE_OUTCOMES[code], answer.action.reason);
      } else this.end("error", "closed");
      return undefined;
    }
    return relayed ? { upstream, early, client: relayed } : { upstream, early };
  }

  /**
   * BIND's wait: for the peer, the connect timeout, the shutdown, or the
   * client closing the control connection, whichever comes first. The
   * control connection is read meanwhile: a chunk it sends is held for the
   * peer (and reading stops there); a read still pending when the peer comes
   * is handed on (`pending`), to be the relay's first.
   */
  async #waitForPeer(
    client: ByteConnection,
    binding: Binding,
    rules: Rules,
    signal: AbortSignal | undefined,
  ): Promise<{
    peer?: Opened;
    error?: unknown;
    outcome?: "client_closed";
    held?: Uint8Array;
    pending?: Promise<Uint8Array | null>;
  }> {
    const { abort, stopped, clear } = bounded(
      rules.timeouts.connect,
      signal,
      this.#context.timersPerConnection,
    );
    const reading = client.read();
    let held: Uint8Array | undefined;
    const clientGone = new Promise<never>((_, reject) => {
      reading.then((chunk) => {
        if (chunk === null) {
          reject(new SocksError(ReplyCode.GeneralFailure, "client closed", { code: "client_closed" }));
        } else held = chunk;
      }, (error) => {
        reject(
          new SocksError(ReplyCode.GeneralFailure, `client error: ${String(error)}`, {
            code: "client_closed",
          }),
        );
      });
    });
    clientGone.catch(() => {});
    const accepting = binding.accept(abort.signal);
    try {
      const peer = await Promise.race([accepting, stopped, clientGone]);
      // Unless the read brought bytes (held for the peer), its result (still to come, or an EOF or error
      // that came with the peer) is the relay's first read.
      return held ? { peer, held } : { peer, pending: reading };
    } catch (error) {
      // A peer that came in as the wait ended anyway is nobody's.
      accepting.then((o) => o.conn.close(), () => {});
      const gone = error instanceof SocksError && error.code === "client_closed";
      return gone ? { outcome: "client_closed" } : { error };
    } finally {
      clear();
      abort.abort();
    }
  }

  /**
   * 3'. UDP ASSOCIATE: the association lives as long as the client connection (whatever the client
   * sends on it is read and dropped), until the association has been idle for the idle timeout, or the
   * server shuts down. The connection itself has no idle timeout meanwhile: the datagrams are its life.
   */
  #hold(client: ByteConnection, association: Association, signal?: AbortSignal): void {
    let over = false;
    const finish = (outcome: Outcome, why: string) => {
      if (over) return;
      over = true;
      if (signal) unwatch(signal, aborted);
      association.close();
      client.close();
      this.record.up += association.up;
      this.record.down += association.down;
      const dropped = UDP_DROPS.filter((why) => association.dropped[why])
        .map((why) => `${association.dropped[why]} ${why}`).join(", ");
      this.end(
        outcome,
        `${why}; udp: ${association.datagramsUp} datagrams up, ${association.datagramsDown} down` +
          (dropped ? `, dropped: ${dropped}` : ""),
      );
    };
    const aborted = () => finish("shutdown", "server shutting down");
    if (signal?.aborted) return aborted();
    if (signal) watch(signal, aborted);
    association.idle.then(() => finish("tunnel_idle", "idle timeout"));
    const closed = () => finish("tunnel_done", "control connection closed");
    const drain = (): void => void client.read().then((chunk) => chunk === null ? closed() : drain(), closed);
    drain();
  }

  /** 3. The tunnel: forward what the client sent before our reply, then relay. */
  #tunnel(
    client: ByteConnection,
    granted: Tunnelled,
    idle: number,
    signal?: AbortSignal,
  ): Promise<RelayResult> {
    const { upstream, early } = granted;
    const native = this.#context.relay;
    const relayOptions = { idleTimeout: idle, signal };
    if (early.length === 0) {
      return native?.(client, upstream, relayOptions) ?? relay(client, upstream, relayOptions);
    }
    return upstream.write(early).then(() => {
      this.record.up += early.length;
      return native?.(client, upstream, relayOptions) ?? relay(client, upstream, relayOptions);
    }, (error) => {
      client.close();
      upstream.close();
      throw error;
    });
  }
}

/** The control connection's local address for a command that reads it (BIND, UDP ASSOCIATE). */
function localOf(conn: ByteConnection): { local?: HostPort } {
  const local = conn.localAddress;
  return local ? { local } : {};
}

/**
 * What UDP ASSOCIATE's handler gets besides the request and the local address: the control
 * connection's peer (looked up here when admission did not need it) and the service.
 */
function udpContext(conn: ByteConnection, peer: HostPort | undefined, udp: UdpService | undefined) {
  const client = peer ?? conn.remoteAddress;
  return { ...(client ? { client } : {}), ...(udp ? { udp } : {}) };
}

/**
 * Serves one connection under `rules` and calls `done` with its record at its
 * end, without a promise per connection for the caller to hold. `client` is
 * the peer's address as decided by whoever accepted the connection (the one
 * place it is decided). Never throws.
 */
export function serveSession(
  context: SessionContext,
  rules: Rules,
  conn: ByteConnection,
  client: HostPort | undefined,
  signal: AbortSignal | undefined,
  done: Done,
  head?: Uint8Array,
): void {
  const session = new Session(context, client, done);
  if (signal?.aborted) {
    conn.close();
    return session.end("shutdown", "server shutting down");
  }
  session.start(conn, rules, signal, client, head);
}

/**
 * Records a connection refused before any byte was read (a cap was reached),
 * through the same record and readers as a served one. Closes `conn`.
 */
export function refuseSession(
  context: SessionContext,
  conn: ByteConnection,
  client: HostPort | undefined,
  outcome: Outcome,
  reason: string,
): void {
  // Refused at once, never queued: the client sees the connection close.
  conn.close();
  new Session(context, client, () => {}).end(outcome, reason);
}

/** The context of sessions built from handler options: a direct upstream over the runtime's dial. */
export function sessionContext(options: HandlerOptions): SessionContext {
  const direct = options.upstream ?? directUpstream(options.dial, options.resolver);
  const bind = options.bind === true && options.openListener !== undefined;
  if (bind) {
    direct.bind = directBind(
      options.openListener!,
      options.resolver,
      options.bindAddress !== undefined ? { address: options.bindAddress } : {},
    );
  }
  const chain = options.chain;
  return {
    upstream: chain && (chain.upstreams.length > 0 || chain.routes.length > 0)
      ? chainUpstream(direct, options.dial, options.resolver, {
        connectTimeout: options.timeouts?.connect ?? DEFAULT_TIMEOUTS.connect,
        ...chain,
      })
      : direct,
    ...(chain?.passthrough ? { passthrough: true } : {}),
    ...(bind ? { commands: [...DEFAULT_COMMANDS, "bind"] } : {}),
    ...(options.httpConnect === true ? { httpConnect: true } : {}),
    ...(options.relay ? { relay: options.relay } : {}),
    ...(options.timersPerConnection ? { timersPerConnection: true } : {}),
    ...(options.onLog ? { onLog: options.onLog } : {}),
    ...(options.onGranted ? { onGranted: options.onGranted } : {}),
  };
}

/**
 * Builds the handler that serves one client connection: SOCKS handshake,
 * policy, DNS, dialing, then the relay. Use it with any
 * {@linkcode ByteConnection} (see `fromWebStreams` for Web Streams).
 *
 * @example
 * ```ts
 * import { createHandler, fromWebStreams, type HandlerOptions } from "@edgesocks/edgesocks";
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
 * `done` with its record at its end. The client's address is looked up once
 * here, when `clientAddress` (default true); the rules are fixed.
 */
export function createConnectionServer(
  options: HandlerOptions,
  { clientAddress = true }: { clientAddress?: boolean } = {},
): (client: ByteConnection, signal: AbortSignal | undefined, done: Done) => void {
  const context = sessionContext(options);
  const rules = makeRules(options);
  return (conn, signal, done) =>
    serveSession(context, rules, conn, clientAddress ? conn.remoteAddress : undefined, signal, done);
}
