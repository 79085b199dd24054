/**
 * `--workers N`: a supervisor process that runs N copies of the proxy
 * (workers) listening on the same addresses with SO_REUSEPORT, so the kernel
 * spreads connections over them and they use every core. Runtime-neutral: the
 * runtime comes in through the CLI host's `spawnWorker`.
 *
 * Protocol between the two: a worker is this program with the environment
 * variable {@linkcode WORKER_ENV} set to its number; its first line on standard output is
 * `READY_PREFIX` and the addresses it bound, everything after that is its
 * log, copied through verbatim. A worker ends when its standard input ends,
 * so workers never outlive a supervisor that was killed.
 *
 * @module
 */
import type { HostPort } from "../runtime.ts";
import { formatHostPort } from "../core/address.ts";
import { concatBytes } from "../core/bytes.ts";
import { findFlag, type Flag, FLAGS } from "./flags.ts";

/** Set in the environment of a worker process, to its number (1 to N), which its log lines carry. */
export const WORKER_ENV = "EDGESOCKS_WORKER";

/** The worker number in `value` (the {@linkcode WORKER_ENV} variable's), or undefined if it is none. */
export function workerNumber(value: string | undefined): number | undefined {
  return value !== undefined && /^[1-9]\d{0,2}$/.test(value) ? Number(value) : undefined;
}

/** The first line a worker writes once it listens, followed by its addresses. */
export const READY_PREFIX = "edgesocks-worker-ready ";

/** The last line a worker writes when a signal stopped it, followed by how many connections it closed. */
export const STOPPED_PREFIX = "edgesocks-worker-stopped ";

/** A worker's stopped line. */
export function stoppedLine(closed: number): string {
  return STOPPED_PREFIX + closed;
}

/**
 * The line printed when stopping, e.g. `stopping (SIGTERM), closed 3 open connections`
 * (`in 2 workers` after it for a supervisor).
 */
export function stoppingLine(why: string, closed: number, workers?: number): string {
  return `stopping (${why}), closed ${closed} open connection${closed === 1 ? "" : "s"}` +
    (workers === undefined ? "" : ` in ${workers} worker${workers === 1 ? "" : "s"}`);
}

const STOPPED_BYTES = new TextEncoder().encode(STOPPED_PREFIX);

/**
 * Splits a worker's stopped line off the end of `bytes` (whole lines): the bytes before it and its
 * count, or all of `bytes` and undefined.
 */
export function takeStopped(bytes: Uint8Array): [Uint8Array, number | undefined] {
  const start = bytes.lastIndexOf(10, bytes.length - 2) + 1;
  if (bytes.length - start < STOPPED_BYTES.length + 2) return [bytes, undefined];
  for (let i = 0; i < STOPPED_BYTES.length; i++) {
    if (bytes[start + i] !== STOPPED_BYTES[i]) return [bytes, undefined];
  }
  const m = /^(\d{1,9})\r?\n?$/.exec(new TextDecoder().decode(bytes.subarray(start + STOPPED_BYTES.length)));
  return m ? [bytes.subarray(0, start), Number(m[1])] : [bytes, undefined];
}

/** A worker process as the CLI host starts it. */
export interface WorkerProcess {
  /** Its process id, for messages. */
  readonly pid: number;
  /** The worker's standard output (its standard error is the supervisor's). */
  readonly stdout: AsyncIterable<Uint8Array>;
  /** Resolves with the exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  /** Sends `signal`; nothing if it has already gone. */
  kill(signal: "SIGTERM" | "SIGKILL"): void;
}

/** What the supervisor needs from the runtime. */
export interface SupervisorHost {
  /** Starts worker number `number` (1 to N; a replacement gets the number of the one it replaces). */
  spawnWorker(args: string[], number: number): WorkerProcess;
  /** Calls `fn` on the signal. */
  onSignal(signal: "SIGINT" | "SIGTERM", fn: () => void): void;
  /** Writes bytes to standard output as they are (the workers' log lines). */
  writeStdout(bytes: Uint8Array): void;
  /** Writes a line to standard output. */
  stdout(line: string): void;
  /** Writes a line to standard error. */
  stderr(line: string): void;
  /** Ends the process. */
  exit(code: number): void;
}

/**
 * A worker's command line: the user's, with the flags the table marks
 * `supervisor` (`--workers`, `--listen`, `--max-connections`) taken out, then
 * `--listen` set to `listen` and `--max-connections` to the worker's share.
 * Every other flag of `flags` goes through as written, with its value.
 */
export function workerArgs(
  args: string[],
  listen: HostPort[],
  maxConnections: number,
  flags: readonly Flag[] = FLAGS,
): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const eq = args[i].startsWith("--") ? args[i].indexOf("=") : -1;
    const flag = findFlag(eq > 0 ? args[i].slice(0, eq) : args[i], flags);
    // The value is the next argument even when it looks like a flag (a file named --listen).
    const end = eq < 0 && flag?.value !== undefined ? Math.min(i + 1, args.length - 1) : i;
    if (flag?.workers !== "supervisor") out.push(...args.slice(i, end + 1));
    i = end;
  }
  for (const a of listen) {
    out.push("--listen", formatHostPort(a));
  }
  out.push("--max-connections", String(maxConnections));
  return out;
}

/** Parses a ready line's addresses (`host:port` or `[v6]:port`, comma separated). */
export function parseReady(line: string): HostPort[] | null {
  if (!line.startsWith(READY_PREFIX)) return null;
  // No TCP address at all: a worker that serves only --listen-ws.
  if (line.slice(READY_PREFIX.length).trim() === "") return [];
  const list = line.slice(READY_PREFIX.length).trim().split(",");
  const out: HostPort[] = [];
  for (const item of list) {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(item);
    if (!m) return null;
    out.push({ host: m[1], port: Number(m[2]) });
  }
  return out.length > 0 ? out : null;
}

/** The ready line for `addresses`. */
export function readyLine(addresses: HostPort[]): string {
  return READY_PREFIX +
    addresses.map(formatHostPort)
      .join(",");
}

/** Passes bytes on in whole lines, holding back a partial last line (at most 64 KiB of it). */
export class LineCopier {
  #write: (bytes: Uint8Array) => void;
  #tail: Uint8Array = new Uint8Array(0);
  /** Passes whole lines to `write`. */
  constructor(write: (bytes: Uint8Array) => void) {
    this.#write = write;
  }

  /** Takes the next chunk of the stream; writes the whole lines it completes. */
  push(chunk: Uint8Array): void {
    const nl = chunk.lastIndexOf(10);
    if (nl < 0) {
      this.#tail = concatBytes(this.#tail, chunk);
      // A "line" that long is not a log line: pass it on rather than grow without bound.
      if (this.#tail.length > 64 * 1024) this.flush();
      return;
    }
    this.#write(
      this.#tail.length > 0 ? concatBytes(this.#tail, chunk.subarray(0, nl + 1)) : chunk.subarray(0, nl + 1),
    );
    this.#tail = chunk.slice(nl + 1);
  }

  /** Writes what is held back (at the end of the stream). */
  flush(): void {
    if (this.#tail.length > 0) this.#write(this.#tail);
    this.#tail = new Uint8Array(0);
  }
}

const RESTART_DELAY_MS = 1_000;
const READY_TIMEOUT_MS = 30_000;

/**
 * Starts `count` workers, waits until all listen, and keeps them running:
 * a worker that dies is started again after a second; SIGINT/SIGTERM stop
 * them all (each closes its tunnels) and then the supervisor exits.
 * Resolves with the bound addresses once all listen; on a startup failure
 * stops the others and exits 1.
 */
export async function supervise(
  host: SupervisorHost,
  options: {
    count: number;
    args: string[];
    listen: HostPort[];
    maxConnections: number;
  },
): Promise<HostPort[] | undefined> {
  const { count } = options;
  // A cap of 0 means none; otherwise every worker gets its share, rounded up.
  const share = options.maxConnections === 0 ? 0 : Math.ceil(options.maxConnections / count);
  // Each live worker, with the promise of its exit and of its output copied through to the end.
  const live = new Map<WorkerProcess, Promise<unknown>>();
  let stopping = false;
  let started = false; // all workers listened once: from then on a dead one is replaced

  // Connections the workers stopped by a signal closed, from their stopped lines.
  let closed = 0;
  const stopAll = async (code: number, signal?: "SIGINT" | "SIGTERM") => {
    if (stopping) return;
    stopping = true;
    const workers = live.size;
    for (const w of live.keys()) w.kill("SIGTERM");
    const timer = setTimeout(() => {
      for (const w of live.keys()) w.kill("SIGKILL");
    }, 30_000);
    await Promise.all(live.values());
    clearTimeout(timer);
    if (signal) host.stderr(`edgesocks: ${stoppingLine(signal, closed, workers)}`);
    host.exit(code);
  };
  host.onSignal("SIGINT", () => void stopAll(0, "SIGINT"));
  host.onSignal("SIGTERM", () => void stopAll(0, "SIGTERM"));

  /** Starts one worker; resolves with its addresses once it listens, or null if it exits first. */
  const start = (listen: HostPort[], number: number): Promise<HostPort[] | null> => {
    let w: WorkerProcess;
    try {
      w = host.spawnWorker(workerArgs(options.args, listen, share), number);
    } catch (error) {
      // Deno without --allow-run, above all.
      host.stderr(
        `edgesocks: cannot start a worker: ${error instanceof Error ? error.message : String(error)}`,
      );
      return Promise.resolve(null);
    }
    let ready: (a: HostPort[] | null) => void = () => {};
    const readyP = new Promise<HostPort[] | null>((r) => (ready = r));
    const timer = setTimeout(() => {
      host.stderr(`edgesocks: worker ${w.pid} did not start listening within ${READY_TIMEOUT_MS / 1000} s`);
      w.kill("SIGKILL");
    }, READY_TIMEOUT_MS);
    const copied = (async () => {
      // Whole lines only: the workers' logs share our standard output, and a line cut where a read
      // ended must not have another worker's line spliced into it.
      const lines = new LineCopier((bytes) => {
        const [log, count] = takeStopped(bytes);
        if (count !== undefined) closed += count;
        if (log.length > 0) host.writeStdout(log);
      });
      let head: Uint8Array | null = new Uint8Array(0);
      try {
        for await (const chunk of w.stdout) {
          if (head === null) {
            lines.push(chunk);
            continue;
          }
          head = concatBytes(head, chunk);
          const nl = head.indexOf(10);
          if (nl < 0) continue;
          clearTimeout(timer);
          ready(parseReady(new TextDecoder().decode(head.subarray(0, nl))));
          lines.push(head.subarray(nl + 1));
          head = null;
        }
      } catch { /* the pipe broke: the exit below tells the rest */ }
      lines.flush();
    })();
    live.set(w, Promise.all([w.exited, copied]));
    void w.exited.then(async (code) => {
      await copied;
      clearTimeout(timer);
      live.delete(w);
      ready(null);
      if (stopping || !started) return;
      host.stderr(
        `edgesocks: worker ${w.pid} exited (${
          code === null ? "killed by a signal" : `code ${code}`
        }); starting another`,
      );
      setTimeout(() => {
        if (stopping) return;
        void start(listen, number).then((a) => {
          if (!a && !stopping) {
            host.stderr("edgesocks: a worker could not be restarted; stopping");
            void stopAll(1);
          }
        });
      }, RESTART_DELAY_MS);
    });
    return readyP;
  };

  // The first worker binds (port 0 becomes a real port); the others join it on the same addresses.
  const first = await start(options.listen, 1);
  if (!first) {
    await stopAll(1);
    return undefined;
  }
  const rest = await Promise.all(Array.from({ length: count - 1 }, (_, i) => start(first, i + 2)));
  if (rest.some((a) => !a)) {
    host.stderr("edgesocks: not every worker could start; stopping");
    await stopAll(1);
    return undefined;
  }
  started = true;
  return first;
}
