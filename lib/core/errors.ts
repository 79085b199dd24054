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
 * import { ReplyCode, SocksError } from "./mod.ts";
 * throw new SocksError(ReplyCode.NotAllowed, "destination 10.0.0.1 is private");
 * ```
 */
export class SocksError extends Error {
  /** The SOCKS5 REP byte this failure maps to. */
  readonly reply: ReplyCode;
  /** Builds an error carrying `reply`. */
  constructor(reply: ReplyCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SocksError";
    this.reply = reply;
  }
}

/**
 * Returns the reply code an arbitrary thrown value maps to (GeneralFailure unless it is a {@linkcode SocksError}).
 *
 * @example
 * ```ts
 * import { ReplyCode, replyCodeOf, SocksError } from "./mod.ts";
 * replyCodeOf(new SocksError(ReplyCode.ConnectionRefused, "refused")); // 0x05
 * replyCodeOf(new Error("anything else")); // 0x01 (GeneralFailure)
 * ```
 */
export function replyCodeOf(error: unknown): ReplyCode {
  return error instanceof SocksError ? error.reply : ReplyCode.GeneralFailure;
}
