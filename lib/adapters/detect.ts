/**
 * Picks the adapter of the runtime we are running on. The only place that
 * asks which runtime this is; each branch loads exactly one adapter.
 *
 * @module
 */
import type { CliHost } from "../cli.ts";
import type { RuntimeAdapter } from "../connection.ts";

/** The running runtime's adapter and CLI host. */
export async function currentRuntime(): Promise<{ adapter: RuntimeAdapter; host: CliHost }> {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  if (g.Deno !== undefined) {
    const [{ denoAdapter }, { denoHost }] = await Promise.all([
      import("./deno.ts"),
      import("./deno_host.ts"),
    ]);
    return { adapter: denoAdapter, host: denoHost };
  }
  if (g.Bun !== undefined) {
    const [{ bunAdapter }, { nodeHost }] = await Promise.all([import("./bun.ts"), import("./node_host.ts")]);
    return { adapter: bunAdapter, host: nodeHost };
  }
  const [{ nodeAdapter }, { nodeHost }] = await Promise.all([import("./node.ts"), import("./node_host.ts")]);
  return { adapter: nodeAdapter, host: nodeHost };
}
