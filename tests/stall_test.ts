/**
 * A client that stops reading costs little: 500 tunnels whose clients stop
 * reading while their destinations write as fast as they can; the proxy must
 * hold ≤ 60 KiB (of the 64 asked) per stalled tunnel in JavaScript (live heap plus the memory
 * its objects own outside it, ArrayBuffers above all, after a full
 * collection, over the same tunnels fresh and idle), then deliver every byte.
 * The scenario is tests/_stall_run.ts.
 *
 * It runs inside a network namespace of its own (`unshare -n`, needs root),
 * whose TCP buffer limits are set lower than Linux's loopback defaults
 * (per-namespace sysctls): a stalled tunnel fills the kernel buffers of both
 * its hops before the proxy stops reading, and with the host's limits (send
 * buffers up to 4 MiB, receive up to 32 MiB) that was ~9-10 MiB of kernel
 * memory per tunnel, 5 GiB for 500, beyond the host's whole TCP budget. The
 * receive limit stays at 512 KiB, above a read the relay must never make in
 * one go, so that a relay that reads big (Bun's 512 KiB) still shows.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { ROOT, RUNTIME } from "./_fixtures.ts";

/** The namespace's setup: loopback up, TCP buffers (min default max) smaller than the host's. */
const SETUP = [
  "ip link set lo up",
  'echo "4096 16384 262144" > /proc/sys/net/ipv4/tcp_wmem',
  'echo "4096 65536 524288" > /proc/sys/net/ipv4/tcp_rmem',
  'exec "$@"',
].join(" && ");

function runtimeArgs(script: string): string[] {
  if (RUNTIME === "deno") return [process.execPath, "run", "-A", script];
  return [process.execPath, script];
}

describe(`stalled tunnels on ${RUNTIME}`, () => {
  it(
    "500 tunnels whose client stops reading: the proxy holds ≤ 60 KiB each, then every byte arrives",
    { timeout: 240_000 },
    async () => {
      const args = [
        "-n",
        "--",
        "sh",
        "-c",
        SETUP,
        "sh",
        ...runtimeArgs(join(ROOT, "tests", "_stall_run.ts")),
      ];
      const child = spawn("unshare", args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "", err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => child.kill("SIGKILL"), 230_000);
        child.on("close", (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      for (const line of out.split("\n")) if (line.startsWith("#")) console.log(line);
      assert.equal(code, 0, `the stall scenario failed (exit ${code}):\n${err}\n${out}`);
    },
  );
});
