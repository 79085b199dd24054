/**
 * The examples a user copies from: each must run as it is. The per-runtime
 * embeddings are run by distribution_test.ts; here: SOCKS over in-memory Web
 * Streams (examples/web_streams.ts) and the systemd unit (examples/systemd/).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../examples/web_streams.ts";
import { ROOT, run, RUNTIME } from "./_fixtures.ts";

describe(`examples on ${RUNTIME}`, () => {
  it("web_streams.ts: a SOCKS5 CONNECT by name over an in-memory pair, byte for byte", async () => {
    assert.deepEqual(await main(), {
      replies: "05 00 05 00 00 01 c0 00 02 0a 9c 40",
      echoed: "hello",
      outcome: "tunnel_done",
    });
  });

  it("systemd/edgesocks.service passes systemd-analyze verify with no warning", async () => {
    const unit = join(ROOT, "examples", "systemd", "edgesocks.service");
    const r = await run("systemd-analyze", ["verify", unit], { timeoutMs: 20_000 });
    assert.deepEqual([r.code, r.stderr.trim()], [0, ""], r.stdout);
  });
});
