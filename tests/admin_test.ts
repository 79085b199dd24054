/**
 * The admin endpoint, drain and reload as a person runs them: the CLI
 * started as a subprocess of the runtime running this file, scraped with
 * curl, its metrics checked by promtool, stopped with signals.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { writeFileSync } from "node:fs";
import {
  holdTunnels,
  type ProxyProcess,
  RawClient,
  RUNTIME,
  socks5ConnectBytes,
  spawnProxy,
  startDns,
  startEcho,
  toHex,
  usersFile,
} from "./_fixtures.ts";
import {
  adminGet,
  adminPort,
  exited,
  loginConnect,
  openTunnel,
  pattern,
  promtoolCheck,
  refused,
  sample,
  scrapeUntil,
  signal,
  startSlowServer,
  stderrLine,
} from "./_admin.ts";

/** Sends `n` bytes through an open tunnel to the echo server and reads them back. */
async function echoThrough(c: RawClient, n: number): Promise<void> {
  const bytes = pattern(n);
  c.send(bytes);
  assert.ok((await c.readExactly(n)).equals(bytes));
}

/** Ends a tunnel from the client's side, waits for the proxy's end of it and destroys it: what came before. */
async function endTunnel(c: RawClient): Promise<Buffer> {
  c.end();
  const rest = await c.readToEnd();
  c.destroy();
  return rest;
}

/** Asks /readyz until it answers 503 (at most 51 times, as a drain has begun): its last answer. */
async function readyzUntilDraining(admin: number): Promise<{ status: number; body: string }> {
  let ready = await adminGet(admin, "/readyz");
  for (let i = 0; i < 50 && ready.status !== 503; i++) ready = await adminGet(admin, "/readyz");
  return ready;
}

/** The proxy exits 0 (within `ms`) after a SIGTERM drain, its one line on stderr saying `summary`. */
async function assertDrained(proxy: ProxyProcess, summary: string, ms?: number): Promise<void> {
  assert.equal(await exited(proxy, ms), 0);
  assert.equal(proxy.errors(), `edgesocks: drained (SIGTERM): ${summary}\n`);
}

/**
 * SIGTERM starts a drain that, `ms` later, still holds the proxy up and the tunnel `open` (it still
 * echoes); then `second` ends it at once: exit 0 within 10 s, its line saying `summary`.
 */
async function interruptDrain(
  proxy: ProxyProcess,
  open: RawClient,
  ms: number,
  second: "SIGTERM" | "SIGINT",
  summary: string,
): Promise<void> {
  signal(proxy, "SIGTERM");
  await new Promise((r) => setTimeout(r, ms));
  assert.equal(proxy.child.exitCode, null, "still draining");
  await echoThrough(open, 100);
  signal(proxy, second);
  await assertDrained(proxy, summary, 10_000);
}

describe(`admin endpoint, drain and reload on ${RUNTIME}`, () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let dns: Awaited<ReturnType<typeof startDns>>;
  before(async () => {
    echo = await startEcho();
    dns = await startDns();
  });
  after(async () => {
    await Promise.all([echo?.close(), dns?.stop()]);
  });

  it("/metrics passes promtool and counts exactly what was done; /healthz, /readyz, 404, 405", async () => {
    const users = usersFile("alice:secret\n");
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--users",
      users.path,
      "--allow-private",
      "--deny",
      "127.0.0.2",
      "--dns",
      `${dns.host}:${dns.port}`,
    ]);
    try {
      const admin = adminPort(proxy.startup);
      assert.equal(proxy.errors(), "", "no warning for a loopback admin address");
      // Before anything: every series there, at 0, and promtool content.
      const empty = (await adminGet(admin, "/metrics")).body;
      await promtoolCheck(empty);
      assert.equal(sample(empty, 'edgesocks_connections_total{outcome="tunnel_done"}'), 0);
      assert.equal(sample(empty, 'edgesocks_bytes_total{direction="up"}'), 0);

      // 3 tunnels, 1000 bytes each way each; 1 refused by policy; 1 name that does not resolve; 1 bad login.
      for (let i = 0; i < 3; i++) {
        const c = await openTunnel(proxy.port, "alice", "secret", echo.port);
        await echoThrough(c, 1000);
        assert.equal((await endTunnel(c)).length, 0);
      }
      const policy = await RawClient.exchange(
        proxy.port,
        loginConnect("alice", "secret", echo.port, "127.0.0.2"),
      );
      assert.equal(toHex(policy), "05 02 01 00 05 02 00 01 00 00 00 00 00 00");
      const name = Buffer.from("nx.test");
      const nx = await RawClient.exchange(
        proxy.port,
        Uint8Array.from([
          5,
          1,
          2,
          1,
          5,
          ...Buffer.from("alice"),
          6,
          ...Buffer.from("secret"),
          5,
          1,
          0,
          3,
          name.length,
          ...name,
          0,
          80,
        ]),
      );
      assert.equal(toHex(nx), "05 02 01 00 05 04 00 01 00 00 00 00 00 00");
      const bad = await RawClient.exchange(proxy.port, loginConnect("alice", "wrong", echo.port));
      assert.equal(toHex(bad), "05 02 01 01");
      // And one tunnel left open while scraping.
      const open = await openTunnel(proxy.port, "alice", "secret", echo.port);
      await echoThrough(open, 10);

      const text = await scrapeUntil(
        admin,
        "6 connections ended",
        (t) =>
          sample(t, 'edgesocks_connections_total{outcome="auth_failed"}') === 1 &&
          sample(t, 'edgesocks_connections_total{outcome="dns_failed"}') === 1 &&
          sample(t, 'edgesocks_connections_total{outcome="refused_policy"}') === 1 &&
          sample(t, 'edgesocks_connections_total{outcome="tunnel_done"}') === 3,
      );
      await promtoolCheck(text);
      const expected: Record<string, number> = {
        'edgesocks_connections_total{outcome="tunnel_done"}': 3,
        'edgesocks_connections_total{outcome="refused_policy"}': 1,
        'edgesocks_connections_total{outcome="dns_failed"}': 1,
        'edgesocks_connections_total{outcome="auth_failed"}': 1,
        'edgesocks_connections_total{outcome="tunnel_error"}': 0,
        edgesocks_connections_accepted_total: 7,
        edgesocks_connections_open: 1,
        // The open tunnel's request counts when its record ends.
        'edgesocks_requests_total{protocol="socks5",command="connect",reply="granted"}': 3,
        'edgesocks_requests_total{protocol="socks5",command="connect",reply="0x02"}': 1,
        'edgesocks_requests_total{protocol="socks5",command="connect",reply="0x04"}': 1,
        // The open tunnel's 10 bytes count when it ends.
        'edgesocks_bytes_total{direction="up"}': 3000,
        'edgesocks_bytes_total{direction="down"}': 3000,
        edgesocks_tunnels_total: 4,
        edgesocks_tunnels_open: 1,
        edgesocks_dns_failures_total: 1,
        edgesocks_auth_failures_total: 1,
        edgesocks_handshake_duration_seconds_count: 6,
        'edgesocks_handshake_duration_seconds_bucket{le="+Inf"}': 6,
        edgesocks_connect_duration_seconds_count: 6,
        edgesocks_draining: 0,
      };
      for (const [series, value] of Object.entries(expected)) {
        assert.equal(sample(text, series), value, `${series} in\n${text}`);
      }
      assert.match(
        text,
        new RegExp(`^edgesocks_build_info\\{version="[^"]+",runtime="${RUNTIME}"\\} 1$`, "m"),
      );
      await endTunnel(open);
      const later = await scrapeUntil(
        admin,
        "the open tunnel's end",
        (t) => sample(t, 'edgesocks_connections_total{outcome="tunnel_done"}') === 4,
      );
      assert.equal(sample(later, "edgesocks_tunnels_open"), 0);
      assert.equal(
        sample(later, 'edgesocks_requests_total{protocol="socks5",command="connect",reply="granted"}'),
        4,
      );
      assert.equal(sample(later, "edgesocks_connections_open"), 0);
      assert.equal(sample(later, 'edgesocks_bytes_total{direction="up"}'), 3010);
      assert.equal(sample(later, 'edgesocks_bytes_total{direction="down"}'), 3010);

      assert.deepEqual(await adminGet(admin, "/healthz"), { status: 200, body: "ok\n" });
      assert.deepEqual(await adminGet(admin, "/readyz"), { status: 200, body: "ready\n" });
      assert.equal((await adminGet(admin, "/nothing")).status, 404);
      assert.equal((await adminGet(admin, "/metrics", "POST")).status, 405);
      // The admin port speaks no SOCKS, and the SOCKS port no admin.
      assert.equal(
        (await RawClient.exchange(admin, Buffer.from("HELLO\r\n\r\n"))).subarray(0, 12).toString(),
        "HTTP/1.1 400",
      );
    } finally {
      users.remove();
      assert.equal(await proxy.stop("SIGINT"), 0);
    }
  });

  it("warns loudly when the admin endpoint is not on loopback; a taken admin port fails the start", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]);
    try {
      assert.match(
        proxy.errors(),
        /^WARNING: the admin endpoint listens on 0\.0\.0\.0:0, not a loopback address/m,
      );
    } finally {
      assert.equal(await proxy.stop("SIGINT"), 0);
    }
    const taken = await spawnProxy(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    try {
      const port = adminPort(taken.startup);
      const second = await spawnProxy(["--listen", "127.0.0.1:0", "--admin", `127.0.0.1:${port}`]).then(
        () => assert.fail("started on a taken admin port"),
        (error: Error) => error.message,
      );
      assert.match(second, /exited with 1: edgesocks: --admin: .*address already in use/);
    } finally {
      assert.equal(await taken.stop("SIGINT"), 0);
    }
  });

  it("SIGTERM drains: /readyz 503, new connections refused, a slow download completes byte-exact, exit 0", async () => {
    const slow = await startSlowServer(40, 32 * 1024, 100);
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--allow-private"]);
    try {
      const admin = adminPort(proxy.startup);
      const c = await RawClient.open(proxy.port);
      c.send(socks5ConnectBytes(slow.port));
      assert.equal(toHex((await c.readExactly(12)).subarray(0, 4)), "05 00 05 00");
      const first = await c.readExactly(1024);
      signal(proxy, "SIGTERM");
      assert.deepEqual(await readyzUntilDraining(admin), { status: 503, body: "draining\n" });
      assert.equal((await adminGet(admin, "/healthz")).status, 200);
      assert.equal(sample((await adminGet(admin, "/metrics")).body, "edgesocks_draining"), 1);
      assert.ok(await refused(proxy.port), "a new connection during the drain is refused");
      const rest = await c.readToEnd(20_000);
      assert.ok(Buffer.concat([first, rest]).equals(pattern(40 * 32 * 1024)), "the download, byte for byte");
      c.destroy();
      await assertDrained(proxy, "1 connection finished, 0 closed at timeout");
    } finally {
      await proxy.stop();
      await slow.close();
    }
  });

  it("the drain timeout closes what is still open; exit 0", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private", "--drain-timeout", "1"]);
    try {
      const [c] = await holdTunnels(proxy.port, echo.port, 1);
      const t0 = Date.now();
      signal(proxy, "SIGTERM");
      await assertDrained(proxy, "0 connections finished, 1 closed at timeout");
      const took = Date.now() - t0;
      assert.ok(took >= 900, `exited after ${took} ms, before the 1 s drain timeout`);
      await c.readToEnd();
      c.destroy();
    } finally {
      await proxy.stop();
    }
  });

  for (const second of ["SIGTERM", "SIGINT"] as const) {
    it(`a ${second} during a drain closes at once`, async () => {
      const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private", "--drain-timeout", "60"]);
      try {
        const held = await holdTunnels(proxy.port, echo.port, 2);
        await interruptDrain(proxy, held[0], 500, second, `0 connections finished, 2 closed on ${second}`);
        for (const c of held) c.destroy();
      } finally {
        await proxy.stop();
      }
    });
  }

  it("--drain-delay keeps serving while /readyz says 503, then stops listening", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--allow-private",
      "--drain-delay",
      "3",
    ]);
    try {
      const admin = adminPort(proxy.startup);
      signal(proxy, "SIGTERM");
      assert.equal((await readyzUntilDraining(admin)).status, 503);
      // Still served during the delay.
      const c = await RawClient.open(proxy.port);
      c.send(socks5ConnectBytes(echo.port));
      assert.equal(toHex((await c.readExactly(12)).subarray(0, 4)), "05 00 05 00");
      await echoThrough(c, 100);
      await endTunnel(c);
      await assertDrained(proxy, "0 connections finished, 0 closed at timeout");
    } finally {
      await proxy.stop();
    }
  });

  it("SIGHUP reloads the users file: open tunnels kept, new logins see it; a broken file keeps the old one", async () => {
    const users = usersFile("alice:secret\n");
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--users",
      users.path,
      "--allow-private",
    ]);
    try {
      const admin = adminPort(proxy.startup);
      const tunnel = await openTunnel(proxy.port, "alice", "secret", echo.port);
      writeFileSync(users.path, "bob:hunter2\ncarol:pw\n");
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reloaded/);
      assert.equal(proxy.errors(), "edgesocks: reloaded: 2 users, 0 destination rules, 0 client rules\n");
      await echoThrough(tunnel, 1000);
      assert.equal(
        toHex(await RawClient.exchange(proxy.port, loginConnect("alice", "secret", echo.port))),
        "05 02 01 01",
      );
      const bob = await openTunnel(proxy.port, "bob", "hunter2", echo.port);
      bob.destroy();

      writeFileSync(users.path, "dave:pw\nthis line has no colon\n");
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reload failed/);
      assert.equal(
        proxy.errors().split("\n")[1],
        `edgesocks: reload failed, keeping the old configuration: users file ${users.path}, line 2: expected user:password`,
      );
      await echoThrough(tunnel, 1000);
      const still = await openTunnel(proxy.port, "bob", "hunter2", echo.port);
      still.destroy();
      assert.equal(
        toHex(await RawClient.exchange(proxy.port, loginConnect("dave", "pw", echo.port))),
        "05 02 01 01",
      );
      const text = (await adminGet(admin, "/metrics")).body;
      assert.equal(sample(text, 'edgesocks_reloads_total{result="ok"}'), 1);
      assert.equal(sample(text, 'edgesocks_reloads_total{result="failed"}'), 1);
      tunnel.destroy();
    } finally {
      users.remove();
      assert.equal(await proxy.stop("SIGINT"), 0);
    }
  });

  it("SIGHUP reads the --config file again: destination and client rules, all or nothing", async () => {
    const config = usersFile(JSON.stringify({ "allow-private": true }));
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--config", config.path]);
    try {
      const tunnel = await RawClient.open(proxy.port);
      tunnel.send(socks5ConnectBytes(echo.port));
      assert.equal(toHex((await tunnel.readExactly(12)).subarray(0, 4)), "05 00 05 00");
      const connect = async () => toHex(await RawClient.exchange(proxy.port, socks5ConnectBytes(echo.port)));
      writeFileSync(config.path, JSON.stringify({ "allow-private": true, deny: ["127.0.0.1"] }));
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reloaded/);
      assert.equal(proxy.errors(), "edgesocks: reloaded: no users, 1 destination rule, 0 client rules\n");
      assert.equal(await connect(), "05 00 05 02 00 01 00 00 00 00 00 00");
      await echoThrough(tunnel, 100);
      writeFileSync(config.path, JSON.stringify({ "allow-private": true, "allow-client": ["10.0.0.0/8"] }));
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reloaded: no users, 0 destination rules, 1 client rule\n/);
      assert.equal(await connect(), "", "a client the new rules do not allow is closed unanswered");
      writeFileSync(config.path, "{ not json");
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reload failed/);
      assert.match(
        proxy.errors().split("\n")[2],
        new RegExp(
          `^edgesocks: reload failed, keeping the old configuration: config file ${config.path}: not valid JSON`,
        ),
      );
      assert.equal(await connect(), "", "the client rules in force before the broken file still are");
      await echoThrough(tunnel, 100);
      tunnel.destroy();
    } finally {
      config.remove();
      assert.equal(await proxy.stop("SIGINT"), 0);
    }
  });

  it("with --workers 2: a SIGINT during a drain closes every worker's tunnels at once", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--workers",
      "2",
      "--allow-private",
      "--drain-timeout",
      "60",
    ]);
    try {
      const held = await holdTunnels(proxy.port, echo.port, 6);
      await interruptDrain(
        proxy,
        held[5],
        700,
        "SIGINT",
        "0 connections finished, 6 closed on SIGINT in 2 workers",
      );
      for (const c of held) {
        await c.readToEnd();
        c.destroy();
      }
    } finally {
      await proxy.stop();
    }
  });

  it("with --workers 2: one endpoint counts the whole group, SIGHUP reloads every worker, SIGTERM drains them all", async () => {
    const users = usersFile("alice:secret\n");
    const slow = await startSlowServer(40, 32 * 1024, 100);
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--workers",
      "2",
      "--admin",
      "127.0.0.1:0",
      "--users",
      users.path,
      "--allow-private",
      // Ten refused logins as alice follow the reload: the login backoff (per worker) must not refuse bob.
      "--auth-backoff",
      "off",
    ]);
    try {
      const admin = adminPort(proxy.startup);
      assert.match(proxy.startup, /2 workers, admin on http:\/\/127\.0\.0\.1:\d+\/\)$/);
      // 20 tunnels at once, so that the kernel gives both workers some.
      const held: RawClient[] = [];
      for (let i = 0; i < 20; i++) {
        const c = await openTunnel(proxy.port, "alice", "secret", echo.port);
        await echoThrough(c, 100);
        held.push(c);
      }
      const during = await scrapeUntil(
        admin,
        "20 open tunnels",
        (t) => sample(t, "edgesocks_tunnels_open") === 20,
      );
      assert.equal(sample(during, "edgesocks_workers"), 2);
      for (const c of held) await endTunnel(c);
      const text = await scrapeUntil(
        admin,
        "20 tunnels done",
        (t) => sample(t, 'edgesocks_connections_total{outcome="tunnel_done"}') === 20,
      );
      await promtoolCheck(text);
      assert.equal(sample(text, 'edgesocks_bytes_total{direction="up"}'), 2000);
      assert.equal(sample(text, 'edgesocks_bytes_total{direction="down"}'), 2000);
      assert.equal(sample(text, "edgesocks_tunnels_open"), 0);
      assert.equal(
        sample(text, 'edgesocks_requests_total{protocol="socks5",command="connect",reply="granted"}'),
        20,
      );

      // A broken file: one line, from the supervisor; the workers keep serving alice.
      writeFileSync(users.path, "broken\n");
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reload failed/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(
        proxy.errors(),
        `edgesocks: reload failed, keeping the old configuration: users file ${users.path}, line 1: expected user:password\n`,
      );
      for (let i = 0; i < 6; i++) (await openTunnel(proxy.port, "alice", "secret", echo.port)).destroy();
      // A good one: every worker takes it (several connections, so both workers are asked).
      writeFileSync(users.path, "bob:hunter2\n");
      signal(proxy, "SIGHUP");
      await stderrLine(proxy, /reloaded/);
      await new Promise((r) => setTimeout(r, 500));
      for (let i = 0; i < 10; i++) {
        assert.equal(
          toHex(await RawClient.exchange(proxy.port, loginConnect("alice", "secret", echo.port))),
          "05 02 01 01",
        );
        (await openTunnel(proxy.port, "bob", "hunter2", echo.port)).destroy();
      }
      assert.equal(
        proxy.errors().split("\n")[1],
        "edgesocks: reloaded: 1 user, 0 destination rules, 0 client rules",
      );

      // A slow download drains to its end after SIGTERM.
      const c = await openTunnel(proxy.port, "bob", "hunter2", slow.port);
      const first = await c.readExactly(1024);
      signal(proxy, "SIGTERM");
      assert.equal((await readyzUntilDraining(admin)).status, 503);
      const rest = await c.readToEnd(20_000);
      assert.ok(Buffer.concat([first, rest]).equals(pattern(40 * 32 * 1024)), "the download, byte for byte");
      c.destroy();
      assert.equal(await exited(proxy), 0);
      assert.equal(
        proxy.errors().split("\n").slice(2).join("\n"),
        "edgesocks: drained (SIGTERM): 1 connection finished, 0 closed at timeout in 2 workers\n",
      );
      assert.ok(!proxy.output().includes("edgesocks-worker-"), proxy.output());
    } finally {
      users.remove();
      await proxy.stop();
      await slow.close();
    }
  });
});
