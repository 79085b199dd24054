/**
 * The UDP member of the adapter contract (`RuntimeAdapter.udp`), checked the
 * same way for every adapter the running runtime can run, in a child process
 * (`tests/_udp_contract_child.ts`) so that Deno runs it with --unstable-net.
 * Without --unstable-net the Deno adapter has no `udp` and says why.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";
import { ROOT, run, RUNTIME } from "./_fixtures.ts";
import { currentRuntime } from "../lib/cli/detect.ts";

const ADAPTERS = [
  { name: "deno", runtimes: ["deno"], module: "../lib/adapters/deno.ts", export: "denoAdapter" },
  { name: "bun", runtimes: ["bun"], module: "../lib/adapters/bun.ts", export: "bunAdapter" },
  // node:dgram runs under Bun and Deno too.
  {
    name: "node",
    runtimes: ["node", "bun", "deno"],
    module: "../lib/adapters/node.ts",
    export: "nodeAdapter",
  },
] as const;

const CHECKS = [
  "ok both ways over 127.0.0.1, source given as IPv4",
  "ok both ways over ::1",
  "ok a mapped bind address binds the IPv4 address",
  "ok send never throws: a name, the other family, too large, after close",
  "ok nothing is delivered after close(); the port is free again",
  "ok binding a port in use rejects",
];

function child(line: (typeof ADAPTERS)[number], unstableNet = true) {
  const script = join(ROOT, "tests", "_udp_contract_child.ts");
  const args = RUNTIME === "deno"
    ? ["run", "-A", ...(unstableNet ? ["--unstable-net"] : []), script, line.module, line.export]
    : [script, line.module, line.export];
  return run(process.execPath, args, { timeoutMs: 60_000 });
}

describe(`the adapters' udp on ${RUNTIME}`, () => {
  for (const line of ADAPTERS.filter((a) => (a.runtimes as readonly string[]).includes(RUNTIME))) {
    it(`${line.name} adapter: bind, send, receive, close`, async () => {
      const r = await child(line);
      assert.equal(r.stdout, CHECKS.map((c) => `${c}\n`).join(""), r.stderr);
      assert.equal(r.code, 0);
    });
  }

  if (RUNTIME === "deno") {
    it("deno adapter without --unstable-net: no udp, and the reason", async () => {
      const r = await child(ADAPTERS[0], false);
      assert.equal(
        r.stdout,
        "absent: Deno.listenDatagram needs --unstable-net (deno run --unstable-net ...)\n",
      );
      const { adapter } = await currentRuntime();
      assert.equal(adapter.udp, undefined, "the test runner runs without --unstable-net");
    });
  }
});
