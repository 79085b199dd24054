/**
 * Per-client bookkeeping at admission: which client a connection counts
 * for (IPv6 clients grouped by prefix, since one host holds a whole /64),
 * how many connections each holds, and a backoff for clients whose logins
 * keep failing. Plain data and arithmetic; the caller passes the time.
 *
 * @module
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "./core/address.ts";

/**
 * When failed logins make a client wait: after `failures` failed logins
 * within `windowMs`, the client's new connections are refused for `blockMs`.
 *
 * @example
 * ```ts
 * import type { AuthBackoff } from "@edgesocks/edgesocks";
 * const strict: AuthBackoff = { failures: 3, windowMs: 60_000, blockMs: 300_000 };
 * ```
 */
export interface AuthBackoff {
  /** Failed logins that start a block. */
  failures: number;
  /** Within how many milliseconds they must fall. */
  windowMs: number;
  /** How long the block lasts, in milliseconds. */
  blockMs: number;
}

/**
 * The default: 10 failed logins within a minute block the client for a minute.
 *
 * @example
 * ```ts
 * import { DEFAULT_AUTH_BACKOFF, type ServeOptions } from "@edgesocks/edgesocks";
 * const options: ServeOptions = { authBackoff: { ...DEFAULT_AUTH_BACKOFF, blockMs: 600_000 } };
 * ```
 */
export const DEFAULT_AUTH_BACKOFF: AuthBackoff = { failures: 10, windowMs: 60_000, blockMs: 60_000 };

/** Most clients remembered for the backoff: beyond it, the oldest entry is forgotten. */
const MAX_TRACKED = 65_536;

/**
 * The key a client counts under: an IPv4 address as it is (IPv4-mapped
 * IPv6 reduced to it), an IPv6 address cut to its first `prefix` bits, as
 * `net/prefix`.
 *
 * @example
 * ```ts
 * import { clientKey } from "./admission.ts";
 * clientKey("2001:db8:1:2:3:4:5:6", 64); // "2001:db8:1:2::/64"
 * clientKey("::ffff:192.0.2.1", 64); // "192.0.2.1"
 * ```
 */
export function clientKey(host: string, prefix: number): string {
  const v4 = parseIPv4(host);
  if (v4) return host;
  const v6 = parseIPv6(host);
  if (!v6) return host;
  if (v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return formatIPv4(v6.subarray(12));
  }
  if (prefix >= 128) return formatIPv6(v6);
  for (let bit = prefix; bit < 128; bit++) v6[bit >> 3] &= ~(0x80 >> (bit & 7));
  return `${formatIPv6(v6)}/${prefix}`;
}

interface Failures {
  /** Failures counted in the current window, and when it began. */
  count: number;
  since: number;
  /** Refused until then (0: not blocked). */
  blockedUntil: number;
}

/**
 * Failed logins per client key, with the block they lead to. Bounded: at
 * most {@linkcode MAX_TRACKED} clients are remembered.
 */
export class LoginBackoff {
  readonly #rule: AuthBackoff;
  readonly #clients = new Map<string, Failures>();

  constructor(rule: AuthBackoff) {
    this.#rule = rule;
  }

  /** True while `key` is blocked. */
  blocked(key: string, now: number): boolean {
    const f = this.#clients.get(key);
    if (!f || f.blockedUntil === 0) return false;
    if (now < f.blockedUntil) return true;
    this.#clients.delete(key);
    return false;
  }

  /** Counts a failed login of `key`; returns true when it starts a block. */
  failed(key: string, now: number): boolean {
    let f = this.#clients.get(key);
    if (!f || now - f.since > this.#rule.windowMs) {
      if (!f && this.#clients.size >= MAX_TRACKED) this.#forgetOne();
      f = { count: 0, since: now, blockedUntil: f?.blockedUntil ?? 0 };
      this.#clients.set(key, f);
    }
    f.count++;
    if (f.count < this.#rule.failures || f.blockedUntil > now) return false;
    f.blockedUntil = now + this.#rule.blockMs;
    return true;
  }

  /** Clients remembered now. */
  get size(): number {
    return this.#clients.size;
  }

  /** Forgets the client remembered longest (a Map keeps insertion order). */
  #forgetOne(): void {
    for (const key of this.#clients.keys()) {
      this.#clients.delete(key);
      return;
    }
  }
}
