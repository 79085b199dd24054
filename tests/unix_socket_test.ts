/**
 * `--listen unix:PATH` and serve()'s `{ path }` listeners: served to curl
 * (`socks5h://localhost/PATH`), every peer counted as the one client `unix`
 * for client rules, caps and logs, the socket file removed on stop, and clear
 * errors for a file in the way or for --workers.
 */
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCidr } from "../lib/policy.ts";
import type { ConnectionLog } from "../lib/record.ts";
import { currentRuntime } from "../lib/cli/detect.ts";
import { serve, type ServeOptions } from "../lib/serve.ts";
import {
  curl,
  hex,
  HTTP_BODY,
  run,
  runtimeCommand,
  socks5ConnectBytes,
  spawnProxy,
  startEcho,
  startHttp,
  toHex,
  until,
  within,
} from "./_fixtures.ts";

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "edgesocks-unix-"));
  path = join(dir, "socks.sock");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** serve() on the running runtime's adapter. */
async function startProxy(options: ServeOptions) {
  return serve((await currentRuntime()).adapter, { hostAddressRefresh: 0, ...options });
}

const GRANTED = /^05 00 05 00 00 01 7f 00 00 01 [0-9a-f]{2} [0-9a-f]{2}$/;

/** Connects to the Unix socket `path`, sends `bytes`, resolves with the socket and the first `n` bytes (or all until close). */
function exchange(path: string, bytes: Uint8Array, n = 12): Promise<{ socket: Socket; reply: string }> {
  return within(
    5_000,
    `exchange on ${path}`,
    new Promise((resolve, reject) => {
      const socket = connect({ path });
      let got = Buffer.alloc(0);
      // A refusal closes without reading what we sent: the kernel answers with a reset (as on TCP), or our write finds it closed.
      socket.on(
        "error",
        (e) =>
          got.length === 0 && /^(ECONNRESET|EPIPE)$/.test(String((e as { code?: string }).code))
            ? undefined
            : reject(e),
      );
      socket.on("data", (c) => {
        got = Buffer.concat([got, c]);
        if (got.length >= n) resolve({ socket, reply: toHex(got.subarray(0, n)) });
      });
      socket.on("close", () => resolve({ socket, reply: toHex(got) }));
      socket.once("connect", () => socket.write(bytes));
    }),
  );
}

describe("--listen unix:PATH", () => {
  it("curl fetches through it; the log's client is `unix`; the file is gone after SIGTERM", async () => {
    const web = await startHttp();
    const proxy = await spawnProxy([
      "--listen",
      `unix:${path}`,
      "--listen",
      "127.0.0.1:0",
      "--allow-private",
      "--log",
      "text",
    ]);
    try {
      assert.match(
        proxy.startup,
        new RegExp(`listening on 127\\.0\\.0\\.1:\\d+, unix:${path} \\(auth: none`),
      );
      const r = await curl(["-x", `socks5h://localhost${path}`, `http://127.0.0.1:${web.port}/`]);
      assert.deepEqual([r.code, r.stdout, r.stderr], [0, HTTP_BODY, ""]);
      await until(5_000, () => proxy.output(), () => / unix socks5 connect /.test(proxy.output()));
      assert.match(
        proxy.output(),
        /^\S+ unix socks5 connect 127\.0\.0\.1:\d+ via=127\.0\.0\.1 reply=granted /m,
      );
    } finally {
      assert.equal(await proxy.stop(), 0);
      await web.close();
    }
    assert.equal(existsSync(path), false, "socket file removed");
  });

  it("a file in the way: one line, exit 1; with --workers: exit 2", async () => {
    writeFileSync(path, "");
    const { cmd, args } = runtimeCommand();
    const r = await run(cmd, [...args, "--listen", `unix:${path}`]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [
      1,
      "",
      `edgesocks: cannot listen on unix:${path}: address already in use (a file is there: remove it if no server uses it any more)\n`,
    ]);
    assert.equal(existsSync(path), true, "someone else's file is left alone");
    const w = await run(cmd, [...args, "--listen", `unix:${path}`, "--workers", "2"]);
    assert.deepEqual([w.code, w.stderr], [
      2,
      "edgesocks: --listen unix: cannot be shared by --workers; run one process per socket\n",
    ]);
    const e = await run(cmd, [...args, "--listen", "unix:"]);
    assert.deepEqual([e.code, e.stderr], [
      2,
      "edgesocks: --listen unix: needs a path, as in unix:/run/edgesocks.sock\n",
    ]);
  });
});

describe("serve() on a Unix socket", () => {
  it("client rules: `unix` matches no CIDR, so an allow list refuses it and a deny list does not", async () => {
    const echo = await startEcho();
    for (const [action, outcome] of [["allow", "refused_client"], ["deny", "tunnel_done"]] as const) {
      const logs: ConnectionLog[] = [];
      const server = await startProxy({
        listen: [{ path }],
        policy: { allowPrivate: true },
        clientPolicy: { rules: [{ action, cidr: parseCidr("127.0.0.0/8") }] },
        onLog: (e) => logs.push(e),
      });
      try {
        assert.deepEqual(server.paths, [path]);
        const { socket, reply } = await exchange(path, socks5ConnectBytes(echo.port));
        if (outcome === "refused_client") assert.equal(reply, "");
        else assert.match(reply, GRANTED);
        socket.end();
        await until(5_000, () => JSON.stringify(logs), () => logs.length === 1);
        assert.deepEqual([logs[0].client, logs[0].outcome], ["unix", outcome]);
      } finally {
        await server.close();
      }
    }
    await echo.close();
  });

  it("per-client caps: every peer of the socket is the one client `unix`", async () => {
    const echo = await startEcho();
    const logs: ConnectionLog[] = [];
    const server = await startProxy({
      listen: [{ path }],
      policy: { allowPrivate: true },
      maxConnectionsPerClient: 1,
      onLog: (e) => logs.push(e),
    });
    try {
      const first = await exchange(path, socks5ConnectBytes(echo.port));
      assert.match(first.reply, GRANTED);
      const second = await exchange(path, socks5ConnectBytes(echo.port));
      assert.equal(second.reply, "");
      await until(5_000, () => JSON.stringify(logs), () => logs.length === 1);
      assert.deepEqual([logs[0].client, logs[0].outcome], ["unix", "refused_limit"]);
      first.socket.destroy();
    } finally {
      await server.close();
      await echo.close();
    }
  });

  it("with the PROXY protocol (a balancer on the same host): the header's client, and the peer is trusted", async () => {
    const echo = await startEcho();
    const logs: ConnectionLog[] = [];
    const server = await startProxy({
      listen: [{ path, proxyProtocol: { from: [] } }],
      policy: { allowPrivate: true },
      onLog: (e) => logs.push(e),
    });
    try {
      const header = hex("0d0a0d0a000d0a515549540a 21 11 000c c6336407 7f000001 1092 0438");
      const { socket, reply } = await exchange(
        path,
        new Uint8Array([...header, ...socks5ConnectBytes(echo.port)]),
      );
      assert.match(reply, GRANTED);
      socket.end();
      await until(5_000, () => JSON.stringify(logs), () => logs.length === 1);
      assert.equal(logs[0].client, "198.51.100.7:4242");
      const local = await exchange(
        path,
        new Uint8Array([...hex("0d0a0d0a000d0a515549540a 20 00 0000"), ...socks5ConnectBytes(echo.port)]),
      );
      assert.match(local.reply, GRANTED);
      local.socket.end();
      await until(5_000, () => JSON.stringify(logs), () => logs.length === 2);
      assert.equal(logs[1].client, "unix", "LOCAL keeps the real peer");
    } finally {
      await server.close();
      await echo.close();
    }
  });
});
