/**
 * The sans-IO SOCKS server state machine: bytes in, replies and actions out.
 * No awaits, timers or runtime globals. Its transitions are one table, in
 * `_socks_states.ts`; the messages are read by `_socks_decode.ts` and written
 * by `replies.ts`.
 *
 * @module
 */
import type { HostPort } from "./address.ts";
import { type Context, dispatch, NOTHING, type SocksState } from "./_socks_states.ts";
import {
  type Action as AnyAction,
  type Answer,
  type ProxyRequest,
  REQUEST_KINDS,
  type RequestKind as AnyRequestKind,
  type RequestMachine,
  type Step as AnyStep,
} from "./request.ts";
import type { ReplyCode } from "./wire.ts";

export type { SocksState };

/**
 * The request kinds a machine hands to the driver unless told otherwise
 * (`commands`): the four the driver serves today. BIND and UDP ASSOCIATE are
 * answered "command not supported" by the machine itself.
 *
 * @example
 * ```ts
 * import { DEFAULT_COMMANDS, type DefaultRequestKind } from "@edgesocks/edgesocks";
 * const served: readonly DefaultRequestKind[] = DEFAULT_COMMANDS; // connect, connect_dir, resolve, resolve_ptr
 * ```
 */
export type DefaultRequestKind = "connect" | "connect_dir" | "resolve" | "resolve_ptr";

/**
 * The default `commands` of a {@linkcode SocksServerMachine}.
 *
 * @example
 * ```ts
 * import { DEFAULT_COMMANDS, SocksServerMachine } from "@edgesocks/edgesocks";
 * const withBind = new SocksServerMachine({ commands: [...DEFAULT_COMMANDS, "bind"] });
 * ```
 */
export const DEFAULT_COMMANDS: readonly DefaultRequestKind[] = Object.freeze(
  [
    "connect",
    "connect_dir",
    "resolve",
    "resolve_ptr",
  ] as const,
);

const DEFAULT_SET: ReadonlySet<AnyRequestKind> = new Set(DEFAULT_COMMANDS);

const ALL_KINDS: ReadonlySet<string> = new Set<AnyRequestKind>(REQUEST_KINDS);

/**
 * What a request asks a machine with the default commands to do. Kept under
 * this name for the driver and the policy, which serve these four; every kind
 * a machine can be told to serve is `RequestKind` in `request.ts`.
 *
 * @example
 * ```ts
 * import type { RequestKind } from "@edgesocks/edgesocks";
 * const opensTunnel = (kind: RequestKind) => kind === "connect" || kind === "connect_dir";
 * ```
 */
export type RequestKind = DefaultRequestKind;

/**
 * A parsed, well-formed request that the driver must act on (a
 * {@linkcode ProxyRequest} of one of the machine's commands).
 *
 * @example
 * ```ts
 * import type { SocksRequest } from "@edgesocks/edgesocks";
 * const request: SocksRequest = {
 *   version: 5,
 *   kind: "connect",
 *   target: { host: "example.org", type: "domain", port: 443 },
 * };
 * ```
 */
export type SocksRequest<K extends AnyRequestKind = DefaultRequestKind> = ProxyRequest<K>;

/**
 * What the driver must do after feeding the machine (see `Action` in `request.ts`).
 *
 * @example
 * ```ts
 * import type { Action } from "@edgesocks/edgesocks";
 * function describe(action: Action): string {
 *   return action.type === "request" ? `${action.request.kind} ${action.request.target.host}` : action.type;
 * }
 * ```
 */
export type Action<K extends AnyRequestKind = DefaultRequestKind> = AnyAction<K>;

/**
 * The result of one call into the machine: bytes to write, in order, then an
 * action, and `reply` when a request's reply was written.
 *
 * @example
 * ```ts
 * import type { ByteConnection, Step } from "@edgesocks/edgesocks";
 * async function apply(client: ByteConnection, step: Step) {
 *   for (const bytes of step.write) await client.write(bytes);
 *   return step.action;
 * }
 * ```
 */
export type Step<K extends AnyRequestKind = DefaultRequestKind> = AnyStep<K>;

/**
 * How the machine authenticates, which protocol versions and which commands it serves.
 *
 * @example
 * ```ts
 * import { createAuthenticator, type MachineOptions, SocksServerMachine } from "@edgesocks/edgesocks";
 * const options: MachineOptions = { authenticate: createAuthenticator(new Map([["alice", "secret"]])) };
 * const machine = new SocksServerMachine(options); // SOCKS5 with username/password only
 * ```
 */
export interface MachineOptions<K extends AnyRequestKind = DefaultRequestKind> {
  /**
   * Checks RFC 1929 credentials (raw bytes as sent). When set, SOCKS5 clients
   * must use username/password and "no auth" is refused with 0xFF.
   */
  authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  /** Serve SOCKS4/4A (which has no password). Default: true when no `authenticate` is set, else false. */
  allowSocks4?: boolean;
  /**
   * The request kinds handed to the driver; any other command is answered
   * "command not supported" (SOCKS5 0x07, SOCKS4 0x5B) by the machine. Default
   * {@linkcode DEFAULT_COMMANDS}. SOCKS4 has no `udp_associate` and no `resolve_ptr`.
   */
  commands?: readonly K[];
  /**
   * Without `authenticate`: a SOCKS5 client that offers username/password
   * (0x02) is asked for it, as Tor asks, and any credentials are accepted
   * (so they can be passed on to an upstream); one that offers only "no
   * auth" gets that. Default false.
   */
  acceptAnyLogin?: boolean;
  /**
   * The request carries the RFC 1929 login as the client sent it
   * (`ProxyRequest.login`), for passing it on to an upstream. Default false.
   */
  keepLogin?: boolean;
}

/**
 * One client connection's SOCKS handshake. Feed it bytes with
 * {@linkcode SocksServerMachine.receive}; when it returns a `request` action,
 * do the work and call {@linkcode SocksServerMachine.answer} (or one of its
 * wrappers: `connected`, `resolved`, `resolvedName`, `rejected`).
 *
 * It never buffers more than {@linkcode Limits.MaxHandshakeBuffer} bytes. A
 * client's bytes never make it throw (a bad handshake is a `close` step);
 * the driver's misuse does (a `TypeError`, and the machine is left as it was).
 *
 * @example
 * ```ts
 * import { SocksServerMachine } from "@edgesocks/edgesocks";
 * const m = new SocksServerMachine();
 * const step = m.receive(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80));
 * // step.write: [05 00]; step.action: { type: "request", request: { kind: "connect", ... } }
 * const granted = m.answer({ type: "connected", bound: { host: "127.0.0.1", port: 40000 } });
 * // granted.write: [05 00 00 01 7f000001 9c40]; granted.reply: 0; granted.action: { type: "relay" }
 * ```
 */
export class SocksServerMachine<K extends AnyRequestKind = DefaultRequestKind> implements RequestMachine<K> {
  #ctx: Context;

  /** Creates a machine for one connection; an unknown kind in `commands` throws a `TypeError`. */
  constructor(options: MachineOptions<K> = {}) {
    const commands = options.commands;
    for (const kind of commands ?? []) {
      if (!ALL_KINDS.has(kind)) throw new TypeError(`unknown request kind ${JSON.stringify(kind)}`);
    }
    const ctx: Context = {
      state: "start",
      buffer: NOTHING,
      authenticate: options.authenticate,
      allowSocks4: options.allowSocks4 ?? !options.authenticate,
      // Shared unless told otherwise: one machine per connection should cost no more than it must.
      commands: commands ? new Set<AnyRequestKind>(commands) : DEFAULT_SET,
    };
    // (Set one by one: spreading empty objects cost more per connection than the rest of this.)
    if (options.acceptAnyLogin) ctx.acceptAnyLogin = true;
    if (options.keepLogin) ctx.keepLogin = true;
    this.#ctx = ctx;
  }

  /** The request being served, once parsed. */
  get request(): ProxyRequest<K> | undefined {
    return this.#ctx.request as ProxyRequest<K> | undefined;
  }

  /** Bytes held while waiting for the rest of a handshake message. */
  get buffered(): number {
    return this.#ctx.buffer.length;
  }

  /** Where the machine is: a row of its transition table (for logs: where a handshake stalled). */
  get state(): SocksState {
    return this.#ctx.state;
  }

  /**
   * Feeds bytes from the client. Call only while the last action was
   * `need_more` (else it throws a `TypeError`); bytes that follow a complete
   * request come back as `early`.
   */
  receive(chunk: Uint8Array): AnyStep<K> {
    return dispatch(this.#ctx, { type: "bytes", chunk }) as AnyStep<K>;
  }

  /**
   * Answers the pending request: `connected` a CONNECT / CONNECT_DIR,
   * `resolved` a RESOLVE, `resolved_name` a RESOLVE_PTR, `bound` then `peer` a
   * BIND, `associated` a UDP ASSOCIATE, `rejected` any of them. An answer with
   * no request pending, or of a type that does not fit it, throws a `TypeError`.
   */
  answer(answer: Answer): AnyStep<K> {
    return dispatch(this.#ctx, answer) as AnyStep<K>;
  }

  /** Grants a CONNECT / CONNECT_DIR; `bound` is the outbound socket's local address. Same as `answer({ type: "connected", bound })`. */
  connected(bound: HostPort): AnyStep<K> {
    return this.answer({ type: "connected", bound });
  }

  /**
   * Answers a RESOLVE with an IP address (text). SOCKS4 can carry only IPv4;
   * an IPv6 answer becomes 0x5B there. Text that is not an IP address is
   * treated as no answer (HostUnreachable), never as a success. Same as
   * `answer({ type: "resolved", address })`.
   */
  resolved(address: string): AnyStep<K> {
    return this.answer({ type: "resolved", address });
  }

  /**
   * Answers a RESOLVE_PTR with a host name (ASCII, 1-255 bytes; anything else
   * becomes HostUnreachable). Same as `answer({ type: "resolved_name", name })`.
   */
  resolvedName(name: string): AnyStep<K> {
    return this.answer({ type: "resolved_name", name });
  }

  /**
   * Refuses the pending request with `code` (any non-success code becomes 0x5B
   * on SOCKS4; a code outside 0x01-0x08 and Tor's 0xF0-0xF7 is sent as 0x01). Same as
   * `answer({ type: "rejected", reply: code })`.
   */
  rejected(code: ReplyCode): AnyStep<K> {
    return this.answer({ type: "rejected", reply: code });
  }
}
