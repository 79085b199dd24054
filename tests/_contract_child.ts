/**
 * A child process of the adapter contract test, for what the test process
 * itself must not do: dial non-loopback addresses (only ever inside a network
 * namespace the test created, which this file checks before dialing), and ask
 * for something a runtime may answer by exiting the process (reusePort where
 * it is not supported).
 *
 * Usage: `<runtime> tests/_contract_child.ts <module> <export> dial HOST:PORT...`
 * or `... reuse-port`. Prints one JSON line per outcome on stdout.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import type { RuntimeAdapter } from "../lib/runtime.ts";
import { SocksError } from "../lib/core/errors.ts";

const [module, name, mode, ...rest] = process.argv.slice(2);
const adapter = (await import(module))[name] as RuntimeAdapter;
const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
const describe = (error: unknown) => ({
  error: error instanceof SocksError ? "SocksError" : String((error as Error)?.name ?? error),
  reply: error instanceof SocksError ? error.reply : null,
  message: String((error as Error)?.message ?? error),
});

/** True when this process sees no network interface but loopback (a fresh `unshare -n` namespace). */
function loopbackOnly(): boolean {
  const lines = readFileSync("/proc/net/dev", "utf8").split("\n").slice(2).filter((l) => l.trim());
  return lines.length > 0 && lines.every((l) => l.trim().startsWith("lo:"));
}

if (mode === "dial") {
  if (!loopbackOnly()) {
    print({ refused: "not inside a network namespace with loopback only: nothing dialled" });
    process.exit(2);
  }
  for (const target of rest) {
    const i = target.lastIndexOf(":");
    const host = target.slice(0, i), port = Number(target.slice(i + 1));
    const t0 = Date.now();
    try {
      const conn = await adapter.dial({ host, port, signal: AbortSignal.timeout(5_000) });
      conn.close();
      print({ target, connected: true, ms: Date.now() - t0 });
    } catch (error) {
      print({ target, ...describe(error), ms: Date.now() - t0 });
    }
  }
} else if (mode === "reuse-port") {
  const onConnection = (conn: { close(): void }) => conn.close();
  try {
    const first = await adapter.listen({ host: "127.0.0.1", port: 0 }, onConnection, undefined, {
      reusePort: true,
    });
    const second = await adapter.listen(first.address, onConnection, undefined, { reusePort: true })
      .catch((error) => error);
    await first.close();
    if (second instanceof Error) print({ listening: 1, ...describe(second) });
    else {
      await second.close();
      print({ listening: 2 });
    }
  } catch (error) {
    print({ listening: 0, ...describe(error) });
  }
} else {
  print({ refused: `unknown mode ${mode}` });
  process.exit(2);
}
// Deno and Bun keep going while a timer of AbortSignal.timeout is pending.
process.exit(0);
