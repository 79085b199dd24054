/**
 * The one relay: copies bytes both ways between two connections with
 * backpressure, half-close and an idle timeout. Runtime-neutral.
 *
 * @module
 */
import type { ByteConnection, RelayOptions, RelayResult } from "./runtime.ts";
import { unwatch, watch } from "./tunnels.ts";

export type { RelayOptions, RelayResult } from "./runtime.ts";

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
 * import { relay, type ByteConnection } from "@edgesocks/edgesocks";
 * declare const a: ByteConnection, b: ByteConnection;
 * const { up, down } = await relay(a, b, { idleTimeout: 300_000 });
 * ```
 */
export function relay(
  client: ByteConnection,
  upstream: ByteConnection,
  options: RelayOptions = {},
): Promise<RelayResult> {
  // A failure on one side is passed on as a reset where the runtime can.
  const close = (failed: boolean) => {
    for (const c of [client, upstream]) {
      if (failed && c.abort) c.abort();
      else c.close();
    }
  };
  return runRelay(options, close, async (run, up) => {
    const src = up ? client : upstream, dst = up ? upstream : client;
    for (;;) {
      const chunk = await src.read();
      if (chunk === null) {
        if (!run.stopped) await dst.closeWrite();
        return;
      }
      if (chunk.length === 0) continue;
      run.moved(up, chunk.length);
      await dst.write(chunk);
      run.active();
    }
  });
}

/**
 * What a direction's pump sees of the relay it runs in.
 *
 * @example
 * ```ts
 * import type { RelayRun } from "./relay.ts";
 * declare const run: RelayRun;
 * run.moved(true, 512); // 512 bytes went client → upstream; the tunnel is not idle
 * ```
 */
export interface RelayRun {
  /** True once the relay was stopped (idle, failure, signal): both sides are closed. */
  readonly stopped: boolean;
  /** Counts `n` bytes moved one way (`up`: client → upstream) and marks the tunnel active. */
  moved(up: boolean, n: number): void;
  /** Marks the tunnel active (a write went out). */
  active(): void;
}

/**
 * The part every relay shares (the generic one above, and the adapters'
 * own): the result, the idle timeout, the shutdown signal, stopping once.
 * `pump(run, up)` copies one direction until its FIN, and rejects on a
 * failure, which stops the relay; `close(failed)` closes both sides, with a
 * reset when `failed` where it can. Both sides are closed when it resolves.
 *
 * @example
 * ```ts
 * import { runRelay } from "./relay.ts";
 * declare const copy: (up: boolean) => Promise<void>, closeBoth: () => void;
 * const result = await runRelay({ idleTimeout: 300_000 }, closeBoth, (_run, up) => copy(up));
 * ```
 */
export async function runRelay(
  options: RelayOptions,
  close: (failed: boolean) => void,
  pump: (run: RelayRun, up: boolean) => Promise<void>,
): Promise<RelayResult> {
  const result: RelayResult = { up: 0, down: 0, end: "done" };
  let lastActivity = Date.now();
  const run = {
    stopped: false,
    moved(up: boolean, n: number) {
      lastActivity = Date.now();
      if (up) result.up += n;
      else result.down += n;
    },
    active() {
      lastActivity = Date.now();
    },
  };
  const stop = (end: "idle" | "error" | "aborted", error?: unknown) => {
    if (run.stopped) return;
    run.stopped = true;
    result.end = end;
    if (error !== undefined) result.error = error;
    close(end === "error");
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
  const fail = (error: unknown) => stop("error", error);
  await Promise.all([pump(run, true).catch(fail), pump(run, false).catch(fail)]);
  clearTimeout(timer);
  if (signal) unwatch(signal, onAbort);
  if (!run.stopped) close(false);
  return result;
}
