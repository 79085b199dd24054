/**
 * A child process of tests/stall_test.ts: `serve()` on the adapter the CLI
 * picks for this runtime (loopback, private destinations allowed), plus a
 * control port that answers every connection with one JSON line of this
 * process's memory after a full garbage collection, then closes.
 *
 * Usage: `node --expose-gc tests/_stall_proxy.ts`,
 * `deno run -A --v8-flags=--expose-gc tests/_stall_proxy.ts`,
 * `bun tests/_stall_proxy.ts`. Prints
 * `stall proxy on 127.0.0.1:PORT control PORT` once listening; stops on
 * SIGTERM (the test's `stop()`).
 */
import { createServer } from "node:net";
import process from "node:process";
import { serve } from "../mod.ts";
import { currentRuntime } from "../lib/cli/detect.ts";

/** What this process holds in JavaScript: the heap's live objects and the memory outside it they own. */
export interface Memory {
  /** Live heap objects, after a full collection. */
  heapUsed: number;
  /** Memory owned by heap objects outside the heap: ArrayBuffers' bytes above all (V8, JSC). */
  external: number;
  /** ArrayBuffers' bytes, where the runtime reports them apart (part of `external` on V8). */
  arrayBuffers: number;
  rss: number;
}

function collect(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(sync: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else if (g.gc) g.gc();
  else throw new Error("no garbage collector to call: run with --expose-gc");
}

function memory(): Memory {
  // Twice: a first collection frees what finalizers of the second release (sockets' wrappers).
  collect();
  collect();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers ?? 0, rss: m.rss };
}

const { adapter } = await currentRuntime();
const server = await serve(adapter, {
  listen: [{ host: "127.0.0.1", port: 0 }],
  policy: { allowPrivate: true },
  maxConnections: 10_000,
});
const control = createServer((socket) => {
  socket.on("error", () => {});
  socket.end(`${JSON.stringify(memory())}\n`);
});
await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", resolve));
const controlPort = (control.address() as { port: number }).port;
process.on("SIGTERM", () => {
  control.close();
  server.close().then(() => process.exit(0));
});
process.stdout.write(`stall proxy on 127.0.0.1:${server.addresses[0].port} control ${controlPort}\n`);
