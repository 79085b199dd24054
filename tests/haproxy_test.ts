/**
 * Behind the real engine: Debian's HAProxy (foreground, `-db`) in TCP mode
 * balancing edgesocks instances started with --proxy-protocol, one server line
 * with send-proxy-v2 and one with send-proxy, as examples/haproxy/haproxy.cfg
 * (the README's config) says. Clients bound to 127.0.0.2 must be logged, ruled
 * and capped as 127.0.0.2, not as HAProxy.
 *
 * The fixtures (haproxyConfig, startHaproxy, startInstances) are for every
 * test of a fleet behind HAProxy: give the config your ports, start N
 * instances with the flags you need.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  closedPort,
  curl,
  HTTP_BODY,
  type ProxyProcess,
  ROOT,
  run,
  socks5ConnectBytes,
  spawnProxy,
  startEcho,
  startHttp,
  toHex,
  until,
  within,
} from "./_fixtures.ts";

/** The README's HAProxy config. */
export const HAPROXY_EXAMPLE = join(ROOT, "examples/haproxy/haproxy.cfg");

/**
 * The example config with `frontend` as the bind port and `servers` as the
 * backend's server ports, in order (the example has two: 10801 with
 * send-proxy-v2, 10802 with send-proxy). `edit` may change the text further.
 */
export function haproxyConfig(frontend: number, servers: number[], edit: (cfg: string) => string = (c) => c) {
  let cfg = readFileSync(HAPROXY_EXAMPLE, "utf8");
  const bind = /^(\s*bind )127\.0\.0\.1:1080$/m;
  assert.match(cfg, bind, "the example binds 127.0.0.1:1080");
  cfg = cfg.replace(bind, `$1127.0.0.1:${frontend}`);
  servers.forEach((port, i) => {
    const line = new RegExp(`^(\\s*server \\S+ )127\\.0\\.0\\.1:${10801 + i} `, "m");
    assert.match(cfg, line, `the example has a server on 127.0.0.1:${10801 + i}`);
    cfg = cfg.replace(line, `$1127.0.0.1:${port} `);
  });
  return edit(cfg);
}

/** A running HAProxy. */
export interface Haproxy {
  /** The frontend's port. */
  port: number;
  child: ChildProcess;
  /** What it wrote (its own warnings and alerts). */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `haproxy -db -f` on `config` (whose frontend listens on `port`); resolves once it accepts. */
export async function startHaproxy(config: string, port: number): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-haproxy-"));
  const file = join(dir, "haproxy.cfg");
  writeFileSync(file, config);
  const child = spawn("haproxy", ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid!, "SIGTERM");
      await within(5_000, "haproxy exit", exited).catch(() => child.kill("SIGKILL"));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (e) => reject(new Error(`cannot run haproxy: ${e.message} (.ci/run installs it)`)));
    child.once("exit", (code) => reject(new Error(`haproxy exited with ${code}: ${out}`)));
  });
  failed.catch(() => {});
  try {
    await Promise.race([
      failed,
      (async () => {
        for (const t0 = Date.now(); Date.now() - t0 < 10_000;) {
          if (await accepts(port)) return;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`haproxy did not listen on ${port} within 10 s: ${out}`);
      })(),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, child, output: () => out, stop };
}

/**
 * True when a socket listens on 127.0.0.1:`port`, by `ss` (iproute2): a probe connection would reach
 * an edgesocks instance through HAProxy and leave a record there.
 */
async function accepts(port: number): Promise<boolean> {
  const r = await run("ss", ["-Hltn", `src 127.0.0.1:${port}`]);
  if (r.code !== 0) throw new Error(`ss failed: ${r.stderr}`);
  return r.stdout.includes(`127.0.0.1:${port}`);
}

/** Starts `n` edgesocks CLI processes on 127.0.0.1:0 with `args` (and JSON logs). */
export function startInstances(n: number, args: string[]): Promise<ProxyProcess[]> {
  return Promise.all(
    Array.from({ length: n }, () => spawnProxy(["--listen", "127.0.0.1:0", "--log", "json", ...args])),
  );
}

/** The JSON records an instance logged so far. */
export function records(p: ProxyProcess): Record<string, unknown>[] {
  return p.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** A fleet: HAProxy from the example config in front of `n` instances started with `args`. */
export async function startFleet(n: number, args: string[]) {
  const instances = await startInstances(n, args);
  const port = await closedPort();
  let haproxy: Haproxy;
  try {
    haproxy = await startHaproxy(haproxyConfig(port, instances.map((i) => i.port)), port);
  } catch (error) {
    await Promise.all(instances.map((i) => i.stop()));
    throw error;
  }
  return {
    haproxy,
    instances,
    /** Every record of every instance. */
    records: () => instances.flatMap(records),
    stop: async () => {
      await haproxy.stop();
      await Promise.all(instances.map((i) => i.stop()));
    },
  };
}

/** A SOCKS5 CONNECT to 127.0.0.1:`target` through 127.0.0.1:`port`, from `from`; resolves with the socket and its reply. */
function socksFrom(port: number, from: string, target: number): Promise<{ socket: Socket; reply: string }> {
  return within(
    10_000,
    `SOCKS5 CONNECT from ${from}`,
    new Promise((resolve, reject) => {
      const socket = connect({ port, host: "127.0.0.1", localAddress: from });
      let got = Buffer.alloc(0);
      socket.on("error", reject);
      socket.on("data", (c) => {
        got = Buffer.concat([got, c]);
        if (got.length >= 12) resolve({ socket, reply: toHex(got.subarray(0, 12)) });
      });
      socket.on("close", () => resolve({ socket, reply: toHex(got) }));
      socket.once("connect", () => socket.write(socks5ConnectBytes(target)));
    }),
  );
}

const GRANTED = /^05 00 05 00 00 01 7f 00 00 01 [0-9a-f]{2} [0-9a-f]{2}$/;

let web: Awaited<ReturnType<typeof startHttp>>;
before(async () => (web = await startHttp()));
after(() => web.close());

describe("behind HAProxy (send-proxy-v2 and send-proxy)", () => {
  it("the README shows the example config as it is", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    assert.ok(readme.includes("```\n" + readFileSync(HAPROXY_EXAMPLE, "utf8") + "```\n"));
  });

  it("both instances see the real client, 127.0.0.2, over either header version", async () => {
    const fleet = await startFleet(2, ["--proxy-protocol", "--allow-private"]);
    try {
      // Round robin: the fetches alternate between the send-proxy-v2 and the send-proxy server.
      for (let i = 0; i < 4; i++) {
        const r = await curl([
          "--interface",
          "127.0.0.2",
          "--socks5-hostname",
          `127.0.0.1:${fleet.haproxy.port}`,
          `http://127.0.0.1:${web.port}/`,
        ]);
        assert.deepEqual(
          [r.code, r.stdout, r.stderr],
          [0, HTTP_BODY, ""],
          `fetch ${i}: ${fleet.instances.map((p) => p.output() + p.errors()).join("\n")}`,
        );
      }
      await until(5_000, () => JSON.stringify(fleet.records()), () => fleet.records().length === 4);
      for (const [n, instance] of fleet.instances.entries()) {
        const rs = records(instance);
        assert.equal(rs.length, 2, `instance ${n + 1} served two`);
        for (const r of rs) {
          assert.match(String(r.client), /^127\.0\.0\.2:\d+$/, `instance ${n + 1}: ${JSON.stringify(r)}`);
          assert.equal(r.outcome, "tunnel_done");
        }
      }
    } finally {
      await fleet.stop();
    }
  });

  it("client rules judge the real client: 127.0.0.2 refused (no reply), 127.0.0.1 served", async () => {
    const fleet = await startFleet(2, ["--proxy-protocol", "--allow-private", "--deny-client", "127.0.0.2"]);
    try {
      const via = ["--socks5-hostname", `127.0.0.1:${fleet.haproxy.port}`, `http://127.0.0.1:${web.port}/`];
      // Round robin: two of each in a row, so that each instance (send-proxy-v2 and send-proxy) gets one.
      for (let i = 0; i < 2; i++) {
        const refused = await curl(["--interface", "127.0.0.2", ...via]);
        // curl's CURLE_PROXY (97): the proxy closed the connection before answering the greeting (the
        // same as a client refused by a rule without HAProxy in between).
        assert.deepEqual([refused.code, refused.stdout, refused.stderr], [
          97,
          "",
          "curl: (97) connection to proxy closed\n",
        ]);
      }
      for (let i = 0; i < 2; i++) {
        const served = await curl(["--interface", "127.0.0.1", ...via]);
        assert.deepEqual([served.code, served.stdout], [0, HTTP_BODY], served.stderr);
      }
      await until(5_000, () => JSON.stringify(fleet.records()), () => fleet.records().length === 4);
      for (const instance of fleet.instances) {
        const rs = records(instance).map((r) => [String(r.client).replace(/:\d+$/, ""), r.outcome, r.reply]);
        assert.deepEqual(rs.sort(), [["127.0.0.1", "tunnel_done", "granted"], [
          "127.0.0.2",
          "refused_client",
          "none",
        ]]);
      }
    } finally {
      await fleet.stop();
    }
  });

  it("per-client caps count the real client, each instance on its own", async () => {
    const echo = await startEcho();
    const fleet = await startFleet(2, [
      "--proxy-protocol",
      "--allow-private",
      "--max-connections-per-client",
      "1",
    ]);
    const held: Socket[] = [];
    try {
      // Two tunnels from 127.0.0.2: one on each instance (round robin), each at its cap.
      for (let i = 0; i < 2; i++) {
        const { socket, reply } = await socksFrom(fleet.haproxy.port, "127.0.0.2", echo.port);
        held.push(socket);
        assert.match(reply, GRANTED, `tunnel ${i + 1}`);
      }
      // A third from 127.0.0.2 is over the cap of whichever instance gets it: closed without a reply.
      const third = await socksFrom(fleet.haproxy.port, "127.0.0.2", echo.port);
      held.push(third.socket);
      assert.equal(third.reply, "");
      // 127.0.0.1 is another client: served.
      const other = await socksFrom(fleet.haproxy.port, "127.0.0.1", echo.port);
      held.push(other.socket);
      assert.match(other.reply, GRANTED);
      await until(5_000, () => JSON.stringify(fleet.records()), () => fleet.records().length >= 1);
      const refused = fleet.records();
      assert.equal(refused.length, 1, JSON.stringify(refused));
      assert.deepEqual(
        [String(refused[0].client).replace(/:\d+$/, ""), refused[0].outcome, refused[0].reason],
        ["127.0.0.2", "refused_limit", "per-client connection limit reached"],
      );
    } finally {
      for (const s of held) s.destroy();
      await fleet.stop();
      await echo.close();
    }
  });
});
