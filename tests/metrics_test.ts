/**
 * Metrics as a reader of records (counters, histograms, the text format
 * checked by promtool), the group sum of `--workers`, the supervisor's
 * control lines, the reloader, and `SocksServer.drain()` in this process.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  DURATION_BUCKETS,
  emptySnapshot,
  exposition,
  GroupMetrics,
  mergeSnapshots,
  Metrics,
  parseSnapshot,
} from "../lib/ops/metrics.ts";
import { createReloader } from "../lib/ops/reload.ts";
import { answer, response, serveAdmin } from "../lib/ops/admin.ts";
import { currentRuntime } from "../lib/cli/detect.ts";
import type { ConnectionLog } from "../lib/record.ts";
import { drainedLine, drainLine, METRICS_PREFIX, takeControl } from "../lib/cli/workers.ts";
import { RawClient, RUNTIME, socks5ConnectBytes, startEcho, startProxy } from "./_fixtures.ts";
import { pattern, promtoolCheck, sample, startSlowServer } from "./_admin.ts";

const rec = (over: Partial<ConnectionLog>): ConnectionLog => ({
  reply: "none",
  outcome: "error",
  up: 0,
  down: 0,
  durationMs: 0,
  reason: "",
  ...over,
});

describe("metrics", () => {
  it("counts records: outcomes, requests by version, command and reply, bytes, DNS and auth failures", () => {
    const m = new Metrics();
    const tunnel = rec({
      version: 5,
      command: "connect",
      reply: "granted",
      handshakeMs: 3,
      connectMs: 40,
      up: 100,
      down: 2000,
    });
    m.granted(tunnel);
    let s = m.snapshot({ connections: 1 });
    assert.equal(s.tunnels, 1);
    assert.deepEqual(s.open, { connections: 1, tunnels: 1 });
    // Its durations count at the grant, its bytes and request at its end.
    assert.equal(s.handshake.count, 1);
    assert.equal(s.bytesUp, 0);
    tunnel.outcome = "tunnel_done";
    m.record(tunnel);
    m.record(
      rec({
        version: 4,
        command: "connect",
        reply: "0x5b",
        outcome: "refused_policy",
        handshakeMs: 1,
        connectMs: 0,
      }),
    );
    m.record(rec({ version: 5, command: "resolve", reply: "0x04", outcome: "dns_failed", handshakeMs: 2 }));
    m.record(rec({ outcome: "auth_failed", user: "bob" }));
    m.record(
      rec({ protocol: "http", command: "connect", reply: "0x05", status: 502, outcome: "upstream_failed" }),
    );
    m.record(rec({ outcome: "refused_limit" }));
    s = m.snapshot({ connections: 0 });
    assert.deepEqual(s.connections, {
      tunnel_done: 1,
      refused_policy: 1,
      dns_failed: 1,
      auth_failed: 1,
      refused_limit: 1,
      upstream_failed: 1,
    });
    assert.deepEqual(s.requests, {
      "socks5 connect granted": 1,
      "socks4 connect 0x5b": 1,
      "http connect 0x05": 1,
      "socks5 resolve 0x04": 1,
    });
    assert.equal(s.bytesUp, 100);
    assert.equal(s.bytesDown, 2000);
    assert.equal(s.dnsFailures, 1);
    assert.equal(s.authFailures, 1);
    assert.deepEqual(s.open, { connections: 0, tunnels: 0 });
    assert.equal(s.handshake.count, 3);
    assert.equal(s.connect.count, 2);
    // 0.04 s falls in the le=0.05 bucket, 0 s in the first.
    assert.equal(s.connect.buckets[DURATION_BUCKETS.indexOf(0.05)], 1);
    assert.equal(s.connect.buckets[0], 1);
    // A record ended twice (a bug elsewhere) does not take an open tunnel below zero.
    m.record(tunnel);
    assert.equal(m.snapshot({ connections: 0 }).open.tunnels, 0);
  });

  it("writes the text format: cumulative buckets, escaped labels, promtool finds nothing wrong", async () => {
    const m = new Metrics();
    for (const ms of [1, 7, 30, 30, 12_000]) {
      m.record(
        rec({ version: 5, command: "connect", reply: "0x05", outcome: "upstream_failed", connectMs: ms }),
      );
    }
    m.record(rec({ outcome: 'odd"\\\noutcome' as ConnectionLog["outcome"] }));
    const text = exposition(m.snapshot({ connections: 2 }), {
      draining: true,
      reloads: { ok: 2, failed: 1 },
      build: { version: "0.1.0", runtime: RUNTIME },
      workers: 3,
    });
    await promtoolCheck(text);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="0.005"}'), 1);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="0.01"}'), 2);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="0.025"}'), 2);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="0.05"}'), 4);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="10"}'), 4);
    assert.equal(sample(text, 'edgesocks_connect_duration_seconds_bucket{le="+Inf"}'), 5);
    assert.equal(sample(text, "edgesocks_connect_duration_seconds_sum"), 12.068);
    assert.equal(sample(text, "edgesocks_connect_duration_seconds_count"), 5);
    assert.equal(
      sample(text, 'edgesocks_requests_total{protocol="socks5",command="connect",reply="0x05"}'),
      5,
    );
    assert.equal(sample(text, 'edgesocks_connections_total{outcome="odd\\"\\\\\\noutcome"}'), 1);
    assert.equal(sample(text, "edgesocks_connections_accepted_total"), 8);
    assert.equal(sample(text, "edgesocks_connections_open"), 2);
    assert.equal(sample(text, "edgesocks_draining"), 1);
    assert.equal(sample(text, 'edgesocks_reloads_total{result="failed"}'), 1);
    assert.equal(sample(text, "edgesocks_workers"), 3);
    assert.ok(text.endsWith("\n"));
    // Every family has its HELP and TYPE, once.
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((t) => t[1]);
    assert.equal(new Set(types).size, types.length);
    await promtoolCheck(exposition(emptySnapshot()));
  });

  it("a group adds up its workers; a worker that has gone keeps its counts but not its gauges", () => {
    const group = new GroupMetrics();
    const a = new Metrics(), b = new Metrics();
    const open = rec({ version: 5, command: "connect", reply: "granted" });
    a.granted(open);
    a.record(rec({ outcome: "tunnel_done", up: 5, down: 6 }));
    b.record(rec({ outcome: "tunnel_done", up: 50, down: 60 }));
    group.update(1, a.snapshot({ connections: 1 }));
    group.update(2, b.snapshot({ connections: 0 }));
    // A newer snapshot replaces the older: nothing counted twice.
    group.update(2, b.snapshot({ connections: 0 }));
    let s = group.snapshot();
    assert.equal(group.workers, 2);
    assert.equal(s.connections.tunnel_done, 2);
    assert.equal(s.bytesUp, 55);
    assert.deepEqual(s.open, { connections: 1, tunnels: 1 });
    group.retire(1);
    assert.equal(group.workers, 1);
    s = group.snapshot();
    assert.equal(s.bytesUp, 55);
    assert.deepEqual(s.open, { connections: 0, tunnels: 0 });
    group.update(1, new Metrics().snapshot({ connections: 0 })); // its replacement starts at 0
    assert.equal(group.snapshot().bytesDown, 66);
    assert.deepEqual(mergeSnapshots([]), emptySnapshot());
  });

  it("a snapshot survives JSON; anything else is refused", () => {
    const m = new Metrics();
    m.record(rec({ outcome: "tunnel_done", up: 1, handshakeMs: 2 }));
    const s = m.snapshot({ connections: 0 });
    assert.deepEqual(parseSnapshot(JSON.parse(JSON.stringify(s))), s);
    for (
      const bad of [null, 1, {}, { ...s, bytesUp: -1 }, { ...s, handshake: { ...s.handshake, buckets: [1] } }]
    ) {
      assert.throws(() => parseSnapshot(bad), TypeError);
    }
  });
});

describe("supervisor control lines", () => {
  const bytes = (t: string) => new TextEncoder().encode(t);
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  it("metrics and drained lines are taken out of a worker's output, wherever they are; the log stays", () => {
    const metrics = METRICS_PREFIX + JSON.stringify(emptySnapshot());
    const [log, control] = takeControl(bytes(`one\n${metrics}\ntwo\n${drainedLine(3, 1)}\n`));
    assert.equal(text(log), "one\ntwo\n");
    assert.deepEqual(control, [metrics, "edgesocks-worker-drained 3 1"]);
    const [only, c2] = takeControl(bytes(`${drainedLine(0, 0)}\n`));
    assert.equal(only.length, 0);
    assert.deepEqual(c2, ["edgesocks-worker-drained 0 0"]);
    const plain = bytes("a log line mentioning edgesocks-worker-metrics in the middle\n");
    assert.equal(takeControl(plain)[0], plain, "no copy when there is nothing to take");
    assert.deepEqual(takeControl(plain)[1], []);
  });

  it("the drain line says what happened", () => {
    assert.equal(
      drainLine("SIGTERM", 3, 1),
      "drained (SIGTERM): 3 connections finished, 1 closed at timeout",
    );
    assert.equal(
      drainLine("SIGTERM", 1, 2, "SIGINT", 2),
      "drained (SIGTERM): 1 connection finished, 2 closed on SIGINT in 2 workers",
    );
  });
});

describe("reload", () => {
  it("applies a whole configuration, keeps the old one on a failure, one line each, one at a time", async () => {
    const lines: string[] = [];
    let applied: string[] = [];
    let next: () => Promise<string> = () => Promise.resolve("v1");
    const reload = createReloader({
      load: () => next(),
      apply: (v) => void (applied = [...applied, v]),
      describe: (v) => `version ${v}`,
      report: (line, ok) => lines.push(`${ok ? "ok" : "fail"}: ${line}`),
    });
    assert.equal(await reload(), true);
    next = () => Promise.reject(new TypeError("users file u, line 2: expected user:password"));
    assert.equal(await reload(), false);
    assert.deepEqual(applied, ["v1"]);
    assert.deepEqual(lines, [
      "ok: reloaded: version v1",
      "fail: reload failed, keeping the old configuration: users file u, line 2: expected user:password",
    ]);
    // Three asked for while one runs: that one, then one more, with what is there by then.
    let release = () => {};
    next = () => new Promise((r) => (release = () => r("slow")));
    const first = reload();
    const rest = [reload(), reload(), reload()];
    let n = 0;
    next = () => Promise.resolve(`v${++n + 1}`);
    release();
    assert.deepEqual(await Promise.all([first, ...rest]), [true, true, true, true]);
    assert.deepEqual(applied, ["v1", "slow", "v2"]);
    assert.deepEqual(reload.counts, { ok: 3, failed: 1 });
  });
});

describe("admin responses", () => {
  const source = { metrics: () => "m 1\n", ready: () => false };
  it("maps paths and methods to statuses", async () => {
    assert.equal((await answer("GET", "/metrics?x=1", source)).body, "m 1\n");
    assert.equal((await answer("GET", "/metrics", source)).type, "text/plain; version=0.0.4; charset=utf-8");
    assert.deepEqual(await answer("HEAD", "/healthz", source), {
      status: 200,
      type: "text/plain; charset=utf-8",
      body: "ok\n",
    });
    assert.equal((await answer("GET", "/readyz", source)).status, 503);
    assert.equal((await answer("GET", "/readyz", { ...source, ready: () => true })).status, 200);
    assert.equal((await answer("GET", "/", source)).status, 404);
    assert.equal((await answer("DELETE", "/metrics", source)).status, 405);
  });
  it("writes a complete HTTP/1.1 response that closes; HEAD without the body", () => {
    const full = Buffer.from(response(200, "text/plain", "héllo\n")).toString();
    assert.equal(
      full,
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n" +
        "Cache-Control: no-store\r\n\r\nhéllo\n",
    );
    assert.ok(
      Buffer.from(response(200, "text/plain", "héllo\n", true)).toString().endsWith("no-store\r\n\r\n"),
    );
  });
});

describe(`admin listener on ${RUNTIME}`, () => {
  it("answers a request per connection; a silent client is closed after 5 s; at most 64 at once", async () => {
    const { adapter } = await currentRuntime();
    const admin = await serveAdmin(adapter, { host: "127.0.0.1", port: 0 }, {
      metrics: () => "m 1\n",
      ready: () => true,
    });
    const held: RawClient[] = [];
    try {
      const get = async () => {
        const c = await RawClient.open(admin.address.port);
        c.send("GET /healthz HTTP/1.0\r\n\r\n");
        const got = String(await c.readToEnd());
        c.destroy();
        return got;
      };
      assert.match(await get(), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok\n$/);
      for (let i = 0; i < 64; i++) held.push(await RawClient.open(admin.address.port));
      await new Promise((r) => setTimeout(r, 200));
      // The 65th is closed unanswered.
      const t0 = Date.now();
      const over = await RawClient.open(admin.address.port);
      over.send("GET /healthz HTTP/1.0\r\n\r\n");
      assert.equal((await over.readToEnd()).length, 0);
      over.destroy();
      assert.ok(Date.now() - t0 < 4_000, "closed at once, not at the 5 s head timeout");
      // The silent ones go at the head timeout, and room is made again.
      for (const c of held) await c.readToEnd(15_000);
      assert.match(await get(), /ok\n$/);
    } finally {
      for (const c of held) c.destroy();
      await admin.close();
    }
  });
});

describe(`SocksServer.drain() on ${RUNTIME}`, () => {
  it("stops listening, lets an open tunnel finish byte-exact, and says so", async () => {
    const slow = await startSlowServer(8, 16 * 1024, 100);
    const server = await startProxy({ policy: { allowPrivate: true } });
    try {
      const c = await RawClient.open(server.port);
      c.send(socks5ConnectBytes(slow.port));
      await c.readExactly(12);
      const draining = server.drain({ timeout: 20_000 });
      await new Promise((r) => setTimeout(r, 100));
      await assert.rejects(RawClient.open(server.port), (e: { code?: string }) => e.code === "ECONNREFUSED");
      const body = await c.readToEnd(20_000);
      c.destroy();
      assert.ok(body.equals(pattern(8 * 16 * 1024)));
      assert.deepEqual(await draining, { finished: 1, closed: 0 });
    } finally {
      await server.close();
      await slow.close();
    }
  });

  it("closes at the timeout what is still open; a close() during the wait closes at once", async () => {
    const echo = await startEcho();
    try {
      for (const how of ["timeout", "close"] as const) {
        const server = await startProxy({ policy: { allowPrivate: true } });
        const held: RawClient[] = [];
        for (let i = 0; i < 2; i++) {
          const c = await RawClient.open(server.port);
          c.send(socks5ConnectBytes(echo.port));
          await c.readExactly(12);
          held.push(c);
        }
        const t0 = Date.now();
        const draining = server.drain({ timeout: how === "timeout" ? 500 : 60_000 });
        if (how === "close") setTimeout(() => void server.close(), 200);
        assert.deepEqual(await draining, { finished: 0, closed: 2 });
        const took = Date.now() - t0;
        assert.ok(how === "close" ? took < 30_000 : took >= 450, `${how}: ${took} ms`);
        for (const c of held) {
          await c.readToEnd();
          c.destroy();
        }
        assert.equal(server.activeConnections, 0);
      }
      // Nothing open: resolves at once.
      const idle = await startProxy();
      assert.deepEqual(await idle.drain(), { finished: 0, closed: 0 });
    } finally {
      await echo.close();
    }
  });
});
