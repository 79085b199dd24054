/**
 * The one relay: copies bytes both ways between two connections with
 * backpressure, half-close and an idle timeout. Runtime-neutral.
 *
 * @module
 */
import type { ByteConnection } from "./connection.ts";
import { unwatch, watch } from "./tunnels.ts";

/**
 * How a relay ended.
 *
 * @example
 * ```ts
 * import { type ByteConnection, relay, type RelayResult } from "./mod.ts";
 * declare const client: ByteConnection, upstream: ByteConnection;
 * const result: RelayResult = await relay(client, upstream);
 * if (result.end === "error") console.error("tunnel failed:", result.error);
 * ```
 */
export interface RelayResult {
  /** Bytes copied from `client` to `upstream`. */
  up: number;
  /** Bytes copied from `upstream` to `client`. */
  down: number;
  /**
   * `"done"`: both sides sent their FIN; `"idle"`: the idle timeout fired;
   * `"error"`: a side failed (both were closed); `"aborted"`: the signal fired.
   */
  end: "done" | "idle" | "error" | "aborted";
  /** The failure, when `end` is `"error"`. */
  error?: unknown;
}

/**
 * Relay options.
 *
 * @example
 * ```ts
 * import { type ByteConnection, relay, type RelayOptions } from "./mod.ts";
 * declare const client: ByteConnection, upstream: ByteConnection;
 * const shutdown = new AbortController(); // abort() closes the tunnel
 * const options: RelayOptions = { idleTimeout: 300_000, signal: shutdown.signal };
 * await relay(client, upstream, options);
 * ```
 */
export interface RelayOptions {
  /** Close both sides after this many milliseconds without a byte either way; 0 or absent: never. */
  idleTimeout?: number;
  /** Closes both sides when it aborts (server shutdown). */
  signal?: AbortSignal;
}

/**
 * Copies `client` → `upstream` and `upstream` → `client` until both have sent
 * their FIN (each FIN is forwarded as a FIN; the other direction keeps
 * flowing), a side fails (both are then closed at once), or the tunnel is
 * idle too long. At most one chunk per direction is in flight, so a slow
 * reader slows the writer instead of growing a buffer. Both connections are
 * closed when it resolves; it never rejects.
 *
 * @example
 * ```ts
 * import { relay, type ByteConnection } from "./mod.ts";
 * declare const a: ByteConnection, b: ByteConnection;
 * const { up, down } = await relay(a, b, { idleTimeout: 300_000 });
 * ```
 */
export async function relay(
  client: ByteConnection,
  upstream: ByteConnection,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const result: RelayResult = { up: 0, down: 0, end: "done" };
  let lastActivity = Date.now();
  let stopped = false;
  const stop = (end: "idle" | "error" | "aborted", error?: unknown) => {
    if (stopped) return;
    stopped = true;
    result.end = end;
    if (error !== undefined) result.error = error;
    // A failure on one side is passed on as a reset where the runtime can.
    const close = end === "error"
      ? (c: ByteConnection) => (c.abort ?? c.close).call(c)
      : (c: ByteConnection) => c.close();
    close(client);
    close(upstream);
  };

  const pump = async (src: ByteConnection, dst: ByteConnection, up: boolean) => {
    try {
      for (;;) {
        const chunk = await src.read();
        if (chunk === null) {
          if (!stopped) await dst.closeWrite();
          return;
        }
        if (chunk.length === 0) continue;
        lastActivity = Date.now();
        if (up) result.up += chunk.length;
        else result.down += chunk.length;
        await dst.write(chunk);
        lastActivity = Date.now();
      }
    } catch (error) {
      stop("error", error);
    }
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  const idle = options.idleTimeout ?? 0;
  if (idle > 0) {
    const check = () => {
      const quiet = Date.now() - lastActivity;
      if (quiet >= idle) stop("idle");
      else timer = setTimeout(check, idle - quiet);
    };
    timer = setTimeout(check, idle);
  }
  const onAbort = () => stop("aborted");
  const signal = options.signal;
  if (signal?.aborted) onAbort();
  else if (signal) watch(signal, onAbort);
  await Promise.all([pump(client, upstream, true), pump(upstream, client, false)]);
  clearTimeout(timer);
  if (signal) unwatch(signal, onAbort);
  client.close();
  upstream.close();
  return result;
}
