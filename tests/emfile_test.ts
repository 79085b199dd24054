/**
 * A proxy out of file descriptors with no failed dial to tell it: idle
 * clients fill the CLI proxy (`mod.ts` as a subprocess under `ulimit -n 64`),
 * so that only the listener (Deno's accept() throws) or the adapter's probe
 * (Node closes new connections silently, Bun leaves them queued) can see it.
 * Standard error must say so once when it starts and once when accepting
 * works again; a tunnel opened before keeps working; recovery stays fast.
 * Also serve()'s side of it with an in-memory adapter: however many accepts
 * fail, on however many listeners, one call when they start and one once
 * accepting works again. Every loop is bounded; every socket and process
 * opened here is closed here.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { type ByteConnection, type RuntimeAdapter, serve } from "../mod.ts";
import { acceptFailure } from "../lib/cli/main.ts";
import {
  assertOneEpisode,
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
  untilEchoes,
} from "./_fixtures.ts";

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

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
        const recoveryMs = await untilEchoes(proxy.port, echo.port, { what: () => proxy.errors() });
        // ≤ 50 ms measured; bounded generously for a loaded 2-core machine.
        assert.ok(recoveryMs < 5_000, `recovery took ${recoveryMs} ms`);
        const lineMs = await assertOneEpisode(proxy);
        assert.ok(processAlive(pid), `the proxy died: ${proxy.errors()}`);
        console.log(
          `# out of descriptors on ${RUNTIME}: ${fdsAtStart} fds with one tunnel, ${fdsAtPeak} at peak; ` +
            `told in ${toldMs} ms; recovered in ${recoveryMs} ms; ` +
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

describe("serve(): failing accepts are one episode per server", () => {
  /** An adapter whose listeners the test drives: `fail()` as a failed accept, `accept()` as a connection. */
  function drivenAdapter() {
    const listeners: { accept: (conn: ByteConnection) => void; fail?: (error: unknown) => void }[] = [];
    const adapter: RuntimeAdapter = {
      name: "driven",
      dial: () => Promise.reject(new Error("no dial here")),
      listen: (address, accept, fail) => {
        listeners.push({ accept, fail });
        return Promise.resolve({ address, close: () => Promise.resolve() });
      },
      resolver: () => ({ lookup: () => Promise.resolve([]), reverse: () => Promise.resolve([]) }),
    };
    // A client that sends its FIN at once: the session ends by itself.
    const conn = (): ByteConnection => ({
      read: () => Promise.resolve(null),
      write: () => Promise.resolve(),
      closeWrite: () => Promise.resolve(),
      close: () => {},
    });
    return {
      adapter,
      fail: (i: number, error: unknown) => listeners[i].fail!(error),
      accept: (i: number) => listeners[i].accept(conn()),
    };
  }

  it("told once as accepts start failing, once 2 s after one worked again; a failure meanwhile goes on", {
    timeout: 30_000,
  }, async () => {
    const d = drivenAdapter();
    const told: string[] = [];
    const server = await serve(d.adapter, {
      listen: [{ host: "127.0.0.1", port: 1 }, { host: "127.0.0.1", port: 2 }],
      onAcceptError: (error) => told.push(`error ${(error as Error).message}`),
      onAcceptRecovered: (ms) => told.push(`recovered ${ms}`),
    });
    try {
      d.accept(0); // all well: nothing told
      const first = new Error("EMFILE first");
      d.fail(0, first);
      for (let i = 0; i < 20; i++) d.fail(i % 2, new Error(`EMFILE ${i}`)); // both listeners, one episode
      assert.deepEqual(told, ["error EMFILE first"]);
      await sleep(300);
      d.accept(1);
      await sleep(1_000);
      d.fail(0, new Error("EMFILE again")); // within 2 s of the accept: the same episode
      d.accept(0);
      await sleep(1_500);
      assert.deepEqual(told, ["error EMFILE first"], "over before 2 s without a failure");
      await sleep(1_000);
      assert.equal(told.length, 2, told.join("; "));
      assert.match(told[1], /^recovered \d+$/); // from the first failure to the accept after the last one
      const ms = Number(told[1].split(" ")[1]);
      assert.ok(ms >= 1_250 && ms < 3_000, `${ms} ms`);
      // The next failure is a new episode.
      d.fail(1, new Error("EMFILE later"));
      assert.deepEqual(told.slice(2), ["error EMFILE later"]);
      d.accept(1);
    } finally {
      await server.close();
    }
    // close() drops the pending "recovered": nothing is told once the server has gone.
    await sleep(2_300);
    assert.equal(told.length, 3, told.join("; "));
  });
});

describe("the CLI's words for a failing accept", () => {
  it("out of descriptors names the limit to raise, by errno code or by Deno's words; anything else as it is", () => {
    const advice =
      "; still listening. Raise the limit (ulimit -n, systemd's LimitNOFILE=) or lower --max-connections";
    const emfile = Object.assign(new Error("EMFILE: too many open files; Node closes new connections"), {
      code: "EMFILE",
    });
    assert.equal(
      acceptFailure(emfile),
      `out of file descriptors: cannot accept new connections (${emfile.message})${advice}`,
    );
    assert.equal(
      acceptFailure(new Error("Too many open files (os error 24)")),
      `out of file descriptors: cannot accept new connections (Too many open files (os error 24))${advice}`,
    );
    assert.equal(
      acceptFailure(Object.assign(new Error("ENFILE: file table overflow"), { code: "ENFILE" })),
      `out of file descriptors: cannot accept new connections (ENFILE: file table overflow)${advice}`,
    );
    assert.equal(
      acceptFailure(new Error("Software caused connection abort (os error 103)")),
      "cannot accept connections (Software caused connection abort (os error 103)); still listening",
    );
    assert.equal(acceptFailure("odd"), "cannot accept connections (odd); still listening");
  });
});
