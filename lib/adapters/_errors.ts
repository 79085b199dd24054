/**
 * The one mapping from a failed connect to a SOCKS reply, for every adapter's
 * dial: by errno code first (Node, Bun, and Deno where its errors carry one),
 * then by Deno error class (told by its `name`, so this file never touches
 * `Deno` and its table runs under every runtime), then by the words of the
 * message, and GeneralFailure for anything else.
 *
 * @module
 */
import { canonicalIP } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import { ReplyCode } from "../core/wire.ts";

/**
 * The reply a failed connect maps to, by its errno code.
 *
 * @example
 * ```ts
 * import { CONNECT_ERRORS } from "./_errors.ts";
 * CONNECT_ERRORS["ECONNREFUSED"]; // 0x05, ReplyCode.ConnectionRefused
 * ```
 */
export const CONNECT_ERRORS: Readonly<Record<string, ReplyCode>> = {
  ECONNREFUSED: ReplyCode.ConnectionRefused,
  EHOSTUNREACH: ReplyCode.HostUnreachable,
  EHOSTDOWN: ReplyCode.HostUnreachable,
  ENETUNREACH: ReplyCode.NetworkUnreachable,
  ENETDOWN: ReplyCode.NetworkUnreachable,
  ETIMEDOUT: ReplyCode.TtlExpired,
  EACCES: ReplyCode.NotAllowed,
  EPERM: ReplyCode.NotAllowed,
  ENOTFOUND: ReplyCode.HostUnreachable,
  EAI_AGAIN: ReplyCode.HostUnreachable,
  EAI_NONAME: ReplyCode.HostUnreachable,
};

/**
 * The reply a failed connect maps to, by the name of its `Deno.errors` class
 * (Deno has classes for a few errno values only).
 *
 * @example
 * ```ts
 * import { DENO_CONNECT_ERRORS } from "./_errors.ts";
 * DENO_CONNECT_ERRORS["TimedOut"]; // 0x06, ReplyCode.TtlExpired
 * ```
 */
export const DENO_CONNECT_ERRORS: Readonly<Record<string, ReplyCode>> = {
  ConnectionRefused: ReplyCode.ConnectionRefused,
  NetworkUnreachable: ReplyCode.NetworkUnreachable,
  TimedOut: ReplyCode.TtlExpired,
  PermissionDenied: ReplyCode.NotAllowed,
  NotCapable: ReplyCode.NotAllowed,
  NotFound: ReplyCode.HostUnreachable,
};

/**
 * The reply a failed connect maps to, by the words of its message (and code),
 * tried in order once neither table knew the error: what errors without a
 * known code or class still say.
 *
 * @example
 * ```ts
 * import { CONNECT_ERROR_WORDS } from "./_errors.ts";
 * const [words, reply] = CONNECT_ERROR_WORDS[0];
 * words.test("No route to host (os error 113)"); // true: reply is ReplyCode.HostUnreachable
 * ```
 */
export const CONNECT_ERROR_WORDS: ReadonlyArray<readonly [RegExp, ReplyCode]> = [
  [/EHOSTUNREACH|host (is )?unreachable|no route to host/i, ReplyCode.HostUnreachable],
  [/ENETUNREACH|network (is )?unreachable/i, ReplyCode.NetworkUnreachable],
  [/ENOTFOUND|EAI_|name|resolv|lookup/i, ReplyCode.HostUnreachable],
];

/** An error's `code` when it is a string (Node's, Bun's and Deno's errno names). */
function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The message of `error`, with its code when the message does not already say it. */
function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = codeOf(error);
  return code === undefined || message.includes(code) ? message : `${message} (${code})`;
}

/**
 * The reply a failed connect maps to: its errno code in
 * {@linkcode CONNECT_ERRORS}, else its Deno class in
 * {@linkcode DENO_CONNECT_ERRORS}, else the first of
 * {@linkcode CONNECT_ERROR_WORDS} its message and code match, else
 * GeneralFailure.
 *
 * @example
 * ```ts
 * import { connectReply } from "./_errors.ts";
 * connectReply(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" })); // 0x05
 * connectReply(new Error("something else")); // 0x01, ReplyCode.GeneralFailure
 * ```
 */
export function connectReply(error: unknown): ReplyCode {
  const code = codeOf(error);
  const byCode = code === undefined ? undefined : CONNECT_ERRORS[code];
  if (byCode !== undefined) return byCode;
  const name = error instanceof Error ? error.name : undefined;
  const byClass = name === undefined ? undefined : DENO_CONNECT_ERRORS[name];
  if (byClass !== undefined) return byClass;
  const text = describe(error);
  for (const [words, reply] of CONNECT_ERROR_WORDS) if (words.test(text)) return reply;
  return ReplyCode.GeneralFailure;
}

/**
 * A failed connect to `host`:`port` as the `SocksError` a dial rejects with.
 *
 * @example
 * ```ts
 * import { connectError } from "./_errors.ts";
 * const e = connectError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), "192.0.2.1", 80);
 * e.message; // "connect to 192.0.2.1:80 failed: connect ECONNREFUSED"
 * ```
 */
export function connectError(error: unknown, host: string, port: number): SocksError {
  return new SocksError(connectReply(error), `connect to ${host}:${port} failed: ${describe(error)}`, {
    cause: error,
  });
}

/**
 * A connect that the dial's signal cut short (the connect timeout).
 *
 * @example
 * ```ts
 * import { connectTimedOut } from "./_errors.ts";
 * const signal = AbortSignal.timeout(10_000);
 * signal.addEventListener("abort", () => console.log(connectTimedOut().reply)); // 0x06, TtlExpired
 * ```
 */
export function connectTimedOut(cause?: unknown): SocksError {
  return new SocksError(
    ReplyCode.TtlExpired,
    "connect timed out",
    cause === undefined ? undefined : { cause },
  );
}

/**
 * The words of the one error workerd rejects every failed connect with,
 * whether its network service's `allow` list refused the address, the name
 * did not resolve, or the target refused (measured on workerd 1.20261117:
 * the reason goes to workerd's log only).
 *
 * @example
 * ```ts
 * import { WORKERD_CONNECT_FAILED } from "./_errors.ts";
 * WORKERD_CONNECT_FAILED.test("proxy request failed, cannot connect to the specified address"); // true
 * ```
 */
export const WORKERD_CONNECT_FAILED = /proxy request failed, cannot connect to the specified address/;

/**
 * The reply a failed workerd connect to `host` maps to. Its one error does
 * not say why, so the reply is the likeliest cause that stays true to what
 * the client asked: by name, 0x04 (host unreachable: the name did not
 * resolve, or resolved to an address the network service refuses, as
 * `concealRefusals` answers elsewhere); by address, 0x05 (connection
 * refused: by the target, or by the network service). Other errors go
 * through {@linkcode connectReply}.
 *
 * @example
 * ```ts
 * import { workerdConnectReply } from "./_errors.ts";
 * const e = new Error("proxy request failed, cannot connect to the specified address");
 * workerdConnectReply(e, "localhost"); // 0x04, ReplyCode.HostUnreachable
 * workerdConnectReply(e, "127.0.0.1"); // 0x05, ReplyCode.ConnectionRefused
 * ```
 */
export function workerdConnectReply(error: unknown, host: string): ReplyCode {
  if (!WORKERD_CONNECT_FAILED.test(describe(error))) return connectReply(error);
  return canonicalIP(host) === null ? ReplyCode.HostUnreachable : ReplyCode.ConnectionRefused;
}

/**
 * A failed workerd connect to `host`:`port` as the `SocksError` a dial rejects with.
 *
 * @example
 * ```ts
 * import { workerdConnectError } from "./_errors.ts";
 * const e = workerdConnectError(new Error("proxy request failed, cannot connect to the specified address"), "127.0.0.1", 1);
 * e.reply; // 0x05
 * ```
 */
export function workerdConnectError(error: unknown, host: string, port: number): SocksError {
  return new SocksError(
    workerdConnectReply(error, host),
    `connect to ${host}:${port} failed: ${describe(error)}`,
    { cause: error },
  );
}
