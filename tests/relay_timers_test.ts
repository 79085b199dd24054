/**
 * Idle timeouts and shutdown across several tunnels and servers, through real
 * TCP on 127.0.0.1, on each runtime's own relay and on the generic relay.
 * Every relay keeps its books in a Tunnel (lib/relay.ts), whose tunnels share
 * timers and listeners (those with the same idle timeout share one list and
 * one timer, those of a server one listener on its shutdown signal; Node's
 * pipe relay times its client socket instead, in Node's own list per
 * duration), so that the sharing shows: a quiet tunnel goes while its
 * neighbours carry bytes, lists and listeners that emptied come back, two
 * servers keep to their own, and a native and a generic tunnel with the same
 * timeout share a list without trouble.
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { RuntimeAdapter } from "../lib/runtime.ts";
import type { ConnectionLog } from "../lib/session.ts";
import { RawClient, RUNTIME, sleep, socks5ConnectBytes, startProxy, startTcp, within } from "./_fixtures.ts";

async function waitFor(what: string, ok: () => boolean, ms = 3_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await sleep(10)) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

/** Which relay a proxy runs its tunnels on, and a count of the tunnels each relay took. */
type RelayKind = "native" | "generic";
const relayed = { native: 0, generic: 0 };
function onRelay(kind: RelayKind): (adapter: RuntimeAdapter) => RuntimeAdapter {
  return (adapter) => ({
    ...adapter,
    relay: (client, upstream, options) => {
      const native = kind === "native" ? adapter.relay?.(client, upstream, options) : undefined;
      relayed[native ? "native" : "generic"]++;
      return native;
    },
  });
}

/** A proxy whose log lines are kept, and a target that swallows what it gets and answers a FIN with one. */
async function setupProxy(idle: number, relay: RelayKind) {
  const logs: ConnectionLog[] = [];
  const proxy = await startProxy({
    policy: { allowPrivate: true },
    timeouts: { idle },
    onLog: (l) => logs.push(l),
  }, onRelay(relay));
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

for (const kind of ["native", "generic"] as const) {
  describe(`idle timeouts and shutdown across tunnels and servers on ${RUNTIME}, ${kind} relay`, () => {
    const setup = (idle: number) => setupProxy(idle, kind);
    before(() => {
      relayed.native = relayed.generic = 0;
    });

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

    it(`every tunnel above ran on the ${kind} relay`, () => {
      assert.ok(relayed[kind] >= 10, `${relayed[kind]} tunnels on the ${kind} relay`);
      assert.equal(relayed[kind === "native" ? "generic" : "native"], 0);
    });
  });
}

describe(`a native and a generic relay with the same idle timeout on ${RUNTIME}`, () => {
  it("share one idle list: quiet tunnels of both go, a busy one of either stays", async () => {
    const native = await setupProxy(300, "native");
    const generic = await setupProxy(300, "generic");
    try {
      const quiet = [await native.open(), await generic.open()];
      const busy = [await generic.open(), await native.open()];
      for (let i = 0; i < 9; i++) {
        for (const c of busy) c.send("b");
        await sleep(100);
      }
      await waitFor("the quiet tunnels to close", () => quiet.every((c) => c.ended));
      assert.deepEqual(busy.map((c) => c.ended), [false, false], "a tunnel carrying bytes was cut as idle");
      for (const c of busy) await c.readToEnd(3_000);
      await waitFor("all logs", () => native.logs.length === 2 && generic.logs.length === 2);
      for (const { logs } of [native, generic]) {
        assert.deepEqual(logs.map((l) => [l.reason, l.up]), [["idle timeout", 0], ["idle timeout", 9]]);
      }
    } finally {
      await native.close();
      await generic.close();
    }
  });
});
