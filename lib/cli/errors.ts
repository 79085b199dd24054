/**
 * Startup failures in words, the same on every runtime. Node, Bun and Deno
 * each word a failed listen or read differently (Node: `listen EADDRINUSE:
 * address already in use 127.0.0.1:1080`; Deno: `Address already in use (os
 * error 98)`, no address; Bun: `Failed to listen at 127.0.0.1`, neither port
 * nor reason), but all three set the errno name as `code` (Deno also names
 * its error class after it), so the reason is looked up by that; the
 * address or path comes from the CLI, which knows what it asked for.
 *
 * @module
 */
import type { HostPort } from "../runtime.ts";
import { formatHostPort, parseIPv4, parseIPv6 } from "../core/address.ts";

// errno name (Node, Bun, Deno's `code`) or Deno's error class → what it means here.
const REASONS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  AddrInUse: "address already in use",
  EADDRNOTAVAIL: "address not available on this machine",
  AddrNotAvailable: "address not available on this machine",
  EACCES: "permission denied",
  EPERM: "permission denied",
  PermissionDenied: "permission denied",
  ENOENT: "no such file",
  NotFound: "no such file",
  EISDIR: "it is a directory, not a file",
  IsADirectory: "it is a directory, not a file",
  ENOTDIR: "a part of the path is not a directory",
  NotADirectory: "a part of the path is not a directory",
  ENOTFOUND: "host name not found",
  EAI_NONAME: "host name not found",
  EAI_AGAIN: "host name not found (the resolver did not answer)",
  EMFILE: "too many open files",
  ENFILE: "too many open files",
};

/** The reason `error` gives, in our words when we know its code, else in the runtime's. */
export function reasonOf(error: unknown): string {
  const e = error as { code?: unknown; name?: unknown; message?: unknown } | null;
  for (const key of [e?.code, e?.name]) {
    if (typeof key === "string" && Object.hasOwn(REASONS, key)) return REASONS[key];
  }
  const message = typeof e?.message === "string" ? e.message : String(error);
  // Deno's resolver failure has no code.
  if (/^failed to lookup address information/i.test(message)) return "host name not found";
  return message;
}

/**
 * The line for a listen that failed on `address`.
 *
 * @example
 * ```ts
 * listenFailure({ host: "127.0.0.1", port: 1080 }, Object.assign(new Error("x"), { code: "EADDRINUSE" }));
 * // "cannot listen on 127.0.0.1:1080: address already in use"
 * ```
 */
export function listenFailure(address: HostPort, error: unknown): string {
  let reason = reasonOf(error);
  // Bun says only "Failed to listen at HOST" when HOST does not resolve.
  if (/^Failed to listen at /.test(reason) && !parseIPv4(address.host) && !parseIPv6(address.host)) {
    reason = "host name not found";
  }
  return `cannot listen on ${formatHostPort(address)}: ${reason}`;
}

/** The line for a users file that could not be read. */
export function readFailure(what: string, path: string, error: unknown): string {
  return `cannot read ${what} ${path}: ${reasonOf(error)}`;
}
