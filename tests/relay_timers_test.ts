/**
 * Idle timeouts and shutdown across several tunnels and servers, through real
 * TCP on 127.0.0.1, on each runtime's own relay. Written for Bun's relay,
 * whose tunnels share timers and listeners (those with the same idle timeout
 * share one list and one timer, those of a server one listener on its
 * shutdown signal), so that the sharing shows: a quiet tunnel goes while its
 * neighbours carry bytes, lists and listeners that emptied come back, two
 * servers keep to their own. The other relays must behave the same.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { ConnectionLog } from "../lib/session.ts";
import { RawClient, RUNTIME, sleep, socks5ConnectBytes, startProxy, startTcp, within } from "./_fixtures.ts";

async function waitFor(what: string, ok: () => boolean, ms = 3_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await sleep(10)) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

describe(`idle timeouts and shutdown across tunnels and servers on ${RUNTIME}`, () => {
  /** A proxy whose log lines are kept, and a target that swallows what it gets and answers a FIN with one. */
  async function setup(idle: number) {
    const logs: ConnectionLog[] = [];
    const proxy = await startProxy({
      policy: { allowPrivate: true },
      timeouts: { idle },
      onLog: (l) => logs.push(l),
    });
    const sink = await startTcp((s) => {
      s.resume();
      s.on("end", () => s.end());
    });
    const open = async () => {
      const c = await RawClient.open(proxy.port);
      c.send(socks5ConnectBytes(sink.port));
      await c.readExactly(12);
      return c;
    };
    const close = async () => {
      await proxy.close();
      await sink.close();
    };
    return { logs, proxy, open, close };
  }

  it("quiet tunnels are cut at the idle timeout, one carrying bytes between them is not", async () => {
    const { logs, open, close } = await setup(300);
    try {
      const first = await open();
      const busy = await open();
      const last = await open();
      for (let i = 0; i < 9; i++) {
        busy.send("b");
        await sleep(100);
      }
      // 900 ms, three idle timeouts: the quiet two are gone, the busy one between them is open.
      await waitFor("the quiet tunnels to close", () => first.ended && last.ended);
      assert.equal(busy.ended, false, "a tunnel carrying bytes was cut as idle");
      assert.deepEqual(logs.map((l) => l.reason), ["idle timeout", "idle timeout"]);
      // Quiet now, it goes one idle timeout after its last byte.
      const t0 = Date.now();
      await busy.readToEnd(3_000);
      assert.ok(Date.now() - t0 >= 50, "closed before the idle timeout");
      await waitFor("the busy tunnel's log", () => logs.length === 3);
      assert.deepEqual([logs[2].reason, logs[2].up], ["idle timeout", 9]);
      // Every list emptied: a new tunnel starts a new one, and is timed too.
      const again = await open();
      const t1 = Date.now();
      await again.readToEnd(3_000);
      assert.ok(Date.now() - t1 >= 250, "closed before the idle timeout");
      await waitFor("the last log", () => logs.length === 4);
      assert.equal(logs[3].reason, "idle timeout");
    } finally {
      await close();
    }
  });

  it("two servers with different idle timeouts keep to their own", async () => {
    const short = await setup(300);
    const long = await setup(1_500);
    try {
      const a = await short.open();
      const b = await long.open();
      await a.readToEnd(3_000);
      await sleep(300);
      assert.equal(b.ended, false, "the long timeout's tunnel was cut at the short timeout");
      // The long server's shutdown closes its tunnel; the short one's log is untouched.
      await long.proxy.close();
      await b.readToEnd(3_000);
      await waitFor("both logs", () => short.logs.length === 1 && long.logs.length === 1);
      assert.equal(short.logs[0].reason, "idle timeout");
      assert.equal(long.logs[0].reason, "server shutting down");
    } finally {
      await short.close();
      await long.close();
    }
  });

  it("shutdown closes every tunnel, also after the server's tunnels had all ended once", async () => {
    const { logs, proxy, open, close } = await setup(0);
    try {
      // One tunnel that ends by itself: the server then has none left to watch.
      const done = await open();
      done.destroy();
      await waitFor("the first tunnel's log", () => logs.length === 1);
      const tunnels = [await open(), await open(), await open()];
      tunnels[1].send("x");
      // Two close() calls at once (a signal handler and an embedder, say): both resolve once all ended.
      await within(2_000, "both close() calls", Promise.all([proxy.close(), proxy.close()]));
      for (const c of tunnels) await c.readToEnd(3_000);
      assert.equal(proxy.activeConnections, 0);
      assert.deepEqual(logs.slice(1).map((l) => l.reason), Array(3).fill("server shutting down"));
    } finally {
      await close();
    }
  });
});
