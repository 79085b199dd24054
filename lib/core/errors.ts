/**
 * An error that knows which SOCKS reply it maps to.
 *
 * @module
 */
import { ReplyCode } from "./wire.ts";

/**
 * A failure that carries the SOCKS5 reply code it should turn into, so any
 * layer (policy, DNS, dialing) can fail and the client still gets the right
 * reply byte without string matching. SOCKS4 clients get 0x5B for any code.
 *
 * @example
 * ```ts
 * import { ReplyCode, SocksError } from "@edgesocks/edgesocks";
 * throw new SocksError(ReplyCode.NotAllowed, "destination 10.0.0.1 is private");
 * ```
 */
export class SocksError extends Error {
  /** The SOCKS5 REP byte this failure maps to. */
  readonly reply: ReplyCode;
  /**
   * A stable word for what failed, where the thrower knows it better than the
   * reply code says (`"dns_failed"` and `"upstream_failed"` both answer 0x04):
   * the connection record's outcome.
   */
  readonly code?: string;
  /** Builds an error carrying `reply` (and `code`, when given). */
  constructor(reply: ReplyCode, message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SocksError";
    this.reply = reply;
    if (options?.code !== undefined) this.code = options.code;
  }
}

/**
 * Returns the reply code an arbitrary thrown value maps to (GeneralFailure unless it is a {@linkcode SocksError}).
 *
 * @example
 * ```ts
 * import { ReplyCode, replyCodeOf, SocksError } from "@edgesocks/edgesocks";
 * replyCodeOf(new SocksError(ReplyCode.ConnectionRefused, "refused")); // 0x05
 * replyCodeOf(new Error("anything else")); // 0x01 (GeneralFailure)
 * ```
 */
export function replyCodeOf(error: unknown): ReplyCode {
  return error instanceof SocksError ? error.reply : ReplyCode.GeneralFailure;
}
