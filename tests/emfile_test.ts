/**
 * A proxy out of file descriptors with no failed dial to tell it: idle
 * clients fill the CLI proxy (`mod.ts` as a subprocess under `ulimit -n 64`),
 * so that only the listener (Deno's accept() throws) or the adapter's probe
 * (Node closes new connections silently, Bun leaves them queued) can see it.
 * Standard error must say so once when it starts and once when accepting
 * works again; a tunnel opened before keeps working; recovery stays fast.
 * Every loop is bounded; every socket and process opened here is closed here.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import {
  processAlive,
  RawClient,
  RUNTIME,
  runtimeCommand,
  sleep,
  socks5ConnectBytes,
  spawnProxy,
  startEcho,
  stderrKinds,
  toHex,
  until,
  within,
} from "./_fixtures.ts";

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** A SOCKS5 CONNECT to 127.0.0.1:`echoPort` through the proxy, and one echoed line; throws on anything else. */
async function echoThrough(proxyPort: number, echoPort: number, ms: number): Promise<void> {
  let c: RawClient | undefined;
  try {
    await within(
      ms,
      "SOCKS5 CONNECT + echo",
      (async () => {
        c = await RawClient.open(proxyPort);
        c.send(socks5ConnectBytes(echoPort));
        const reply = await c.readExactly(12, ms);
        assert.equal(toHex(reply.subarray(0, 4)), "05 00 05 00", `reply ${toHex(reply)}`);
        c.send("ping");
        assert.equal((await c.readExactly(4, ms)).toString(), "ping");
      })(),
    );
  } finally {
    c?.destroy();
  }
}

describe(`out of file descriptors, on ${RUNTIME}`, () => {
  it(
    "idle clients take every descriptor: one line as accepting stops, one as it works again; served throughout",
    {
      timeout: 60_000,
    },
    async () => {
      const echo = await startEcho();
      const { cmd, args } = runtimeCommand();
      const proxy = await spawnProxy([
        "--listen",
        "127.0.0.1:0",
        "--allow-private",
        "--handshake-timeout",
        "60",
      ], {
        cmd: "sh",
        args: ["-c", 'ulimit -n 64 && exec "$@"', "sh", cmd, ...args],
      });
      const pid = proxy.child.pid!;
      const idle = new Set<Socket>();
      let tunnel: RawClient | undefined;
      try {
        assert.match(readFileSync(`/proc/${pid}/limits`, "utf8"), /^Max open files\s+64\s+64\s/m);
        // A tunnel opened first, which must keep working while the proxy cannot accept.
        tunnel = await RawClient.open(proxy.port);
        tunnel.send(socks5ConnectBytes(echo.port));
        assert.equal(toHex((await tunnel.readExactly(12)).subarray(0, 4)), "05 00 05 00");
        const fdsAtStart = fds(pid);

        // More idle clients (connected, never a byte) than the descriptors left: none dials.
        for (let i = 0; i < 100; i++) {
          const s = connect({ host: "127.0.0.1", port: proxy.port });
          s.on("error", () => {}); // Node resets the ones it cannot keep
          idle.add(s);
        }
        const t0 = Date.now();
        await until(
          5_000,
          () => `no out-of-descriptors line within 5 s (proxy fds ${fds(pid)}); stderr: ${proxy.errors()}`,
          () => /out of file descriptors/.test(proxy.errors()),
        );
        const toldMs = Date.now() - t0;
        const fdsAtPeak = fds(pid);
        assert.equal(stderrKinds(proxy.errors()).join("\n"), "out of file descriptors");

        // Served throughout: the tunnel opened before still echoes.
        tunnel.send("still here");
        assert.equal((await tunnel.readExactly(10)).toString(), "still here");
        await sleep(1_500); // a few more probes (Node, Bun) or failed accepts (Deno): still the one line
        assert.equal(stderrKinds(proxy.errors()).join("\n"), "out of file descriptors");

        // The idle clients go: a fresh CONNECT works again at once.
        for (const s of idle) s.destroy();
        const t1 = Date.now();
        let lastError: unknown, tries = 0;
        for (; tries < 50 && Date.now() - t1 < 15_000; tries++) {
          try {
            await echoThrough(proxy.port, echo.port, 3_000);
            lastError = undefined;
            break;
          } catch (e) {
            lastError = e;
            await sleep(100);
          }
        }
        assert.equal(
          lastError,
          undefined,
          `no recovery after ${tries} tries: ${lastError}; ${proxy.errors()}`,
        );
        const recoveryMs = Date.now() - t1;
        // ≤ 50 ms measured; bounded generously for a loaded 2-core machine.
        assert.ok(recoveryMs < 5_000, `recovery took ${recoveryMs} ms`);
        const lineMs = await until(
          6_000,
          () => `no "accepting connections again" line; stderr: ${proxy.errors()}`,
          () => /accepting connections again/.test(proxy.errors()),
        );
        await sleep(200);
        assert.deepEqual(stderrKinds(proxy.errors()), [
          "out of file descriptors",
          "accepting connections again",
        ]);
        assert.ok(processAlive(pid), `the proxy died: ${proxy.errors()}`);
        console.log(
          `# out of descriptors on ${RUNTIME}: ${fdsAtStart} fds with one tunnel, ${fdsAtPeak} at peak; ` +
            `told in ${toldMs} ms; recovered in ${recoveryMs} ms (${tries + 1} tries); ` +
            `the accepting-again line ${lineMs} ms later; stderr ${JSON.stringify(proxy.errors())}`,
        );
      } finally {
        tunnel?.destroy();
        for (const s of idle) s.destroy();
        await proxy.stop().catch(() => null);
        await echo.close();
      }
    },
  );
});
