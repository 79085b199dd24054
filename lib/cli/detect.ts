/**
 * Picks the adapter of the runtime we are running on. The only place that
 * asks which runtime this is; each branch loads exactly one adapter.
 *
 * @module
 */
import type { CliHost } from "./main.ts";
import type { RuntimeAdapter } from "../runtime.ts";

/** The running runtime's adapter and CLI host. */
export async function currentRuntime(): Promise<{ adapter: RuntimeAdapter; host: CliHost }> {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  if (g.Deno !== undefined) {
    const [{ denoAdapter }, { denoHost }] = await Promise.all([
      import("../adapters/deno.ts"),
      import("./host_deno.ts"),
    ]);
    return { adapter: denoAdapter, host: denoHost };
  }
  if (g.Bun !== undefined) {
    const [{ bunAdapter }, { nodeHost }] = await Promise.all([
      import("../adapters/bun.ts"),
      import("./host_node.ts"),
    ]);
    return { adapter: bunAdapter, host: nodeHost };
  }
  const [{ nodeAdapter }, { nodeHost }] = await Promise.all([
    import("../adapters/node.ts"),
    import("./host_node.ts"),
  ]);
  return { adapter: nodeAdapter, host: nodeHost };
}
