/**
 * The rules a server applies, as plain data: timeouts today; the snapshot a
 * session takes at accept (destination and client policy, users) joins them.
 *
 * @module
 */

/**
 * Timeouts in milliseconds; 0 disables one.
 *
 * @example
 * ```ts
 * import { DEFAULT_TIMEOUTS, type Timeouts } from "../mod.ts";
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
 * import { DEFAULT_TIMEOUTS } from "../mod.ts";
 * const strict = { ...DEFAULT_TIMEOUTS, handshake: 2_000 }; // a slow handshake is cut after 2 s
 * ```
 */
export const DEFAULT_TIMEOUTS: Timeouts = { handshake: 10_000, connect: 10_000, idle: 300_000 };
