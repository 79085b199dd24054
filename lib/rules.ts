/**
 * The rules a server applies, as one immutable snapshot: who may connect,
 * with which credentials, where to, and the timeouts. A session takes the
 * snapshot current at accept and keeps it to its end, so a reload
 * (`SocksServer.update`) changes what new connections see and never a running
 * tunnel.
 *
 * @module
 */
import { createAuthenticator } from "./auth.ts";
import { type ClientPolicy, DEFAULT_POLICY, type DestinationPolicy } from "./policy.ts";

/**
 * Timeouts in milliseconds; 0 disables one.
 *
 * @example
 * ```ts
 * import { DEFAULT_TIMEOUTS, type Timeouts } from "@edgesocks/edgesocks";
 * const timeouts: Timeouts = { ...DEFAULT_TIMEOUTS, idle: 0 }; // open tunnels never time out
 * ```
 */
export interface Timeouts {
  /** From accept until a complete request. Default 10 s. */
  handshake: number;
  /** DNS lookup plus TCP connect for a tunnel, or the lookup of a RESOLVE. Default 10 s. */
  connect: number;
  /** No byte either way on an open tunnel. Default 300 s. */
  idle: number;
}

/**
 * The defaults: handshake 10 s, connect 10 s, idle 300 s.
 *
 * @example
 * ```ts
 * import { DEFAULT_TIMEOUTS } from "@edgesocks/edgesocks";
 * const strict = { ...DEFAULT_TIMEOUTS, handshake: 2_000 }; // a slow handshake is cut after 2 s
 * ```
 */
export const DEFAULT_TIMEOUTS: Timeouts = { handshake: 10_000, connect: 10_000, idle: 300_000 };

/**
 * The rules as given: every field optional, defaults filled in by {@linkcode makeRules}.
 *
 * @example
 * ```ts
 * import type { RulesOptions } from "@edgesocks/edgesocks";
 * const lab: RulesOptions = { policy: { allowPrivate: true }, timeouts: { idle: 0 } };
 * ```
 */
export interface RulesOptions {
  /** RFC 1929 users (`user → password`); when non-empty, authentication is required and SOCKS4 is refused. */
  users?: ReadonlyMap<string, string>;
  /** Destination policy; default {@linkcode DEFAULT_POLICY}. */
  policy?: Partial<DestinationPolicy>;
  /** Which clients may connect; default everyone. */
  clientPolicy?: ClientPolicy;
  /** Timeouts; default {@linkcode DEFAULT_TIMEOUTS}. */
  timeouts?: Partial<Timeouts>;
  /**
   * CONNECT replies carry 0.0.0.0:0 instead of the outbound socket's local
   * address and port (which tell a client the proxy's outbound address: on a
   * host behind NAT, a private one). Default false.
   */
  hideBoundAddress?: boolean;
  /**
   * A request by name refused by the destination policy is answered 0x04
   * (host unreachable), as a name that does not resolve is, instead of 0x02:
   * 0x02 tells a client that the name exists (and resolves to something
   * refused, e.g. a private address). Default false.
   */
  concealRefusals?: boolean;
}

/**
 * One snapshot of the rules, defaults filled in, the credential check built once.
 *
 * @example
 * ```ts
 * import { makeRules, type Rules } from "@edgesocks/edgesocks";
 * const rules: Rules = makeRules({ users: new Map([["alice", "secret"]]) });
 * rules.timeouts.handshake; // 10000
 * ```
 */
export interface Rules {
  /** Where clients may go. */
  readonly policy: DestinationPolicy;
  /** Who may connect. */
  readonly clientPolicy: ClientPolicy;
  /** Checks RFC 1929 credentials; absent when no users are configured. */
  readonly authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  /** The timeouts, in milliseconds. */
  readonly timeouts: Timeouts;
  /** See {@linkcode RulesOptions.hideBoundAddress}. */
  readonly hideBoundAddress: boolean;
  /** See {@linkcode RulesOptions.concealRefusals}. */
  readonly concealRefusals: boolean;
}

const NO_CLIENT_RULES: ClientPolicy = { rules: [] };

/**
 * Builds a {@linkcode Rules} snapshot from options.
 *
 * @example
 * ```ts
 * import { makeRules } from "@edgesocks/edgesocks";
 * const rules = makeRules({ policy: { allowConnectDir: false } });
 * rules.policy.allowPrivate; // false: the default
 * ```
 */
export function makeRules(options: RulesOptions = {}): Rules {
  return Object.freeze({
    policy: { ...DEFAULT_POLICY, ...options.policy },
    clientPolicy: options.clientPolicy ?? NO_CLIENT_RULES,
    ...(options.users && options.users.size > 0 ? { authenticate: createAuthenticator(options.users) } : {}),
    timeouts: { ...DEFAULT_TIMEOUTS, ...options.timeouts },
    hideBoundAddress: options.hideBoundAddress === true,
    concealRefusals: options.concealRefusals === true,
  });
}
