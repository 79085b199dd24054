// Chaining through real upstream proxies on loopback: microsocks, Dante (username authentication, its
// log showing the user we passed), a second edgesocks (SOCKS4A and SOCKS5 with Tor's RESOLVE), ncat's
// HTTP CONNECT proxy, and a silent upstream for the connect timeout; driven by curl, tor-resolve and raw
// bytes. Every runtime runs this file.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { connect } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConnectionLog } from "../lib/record.ts";
import type { ServeOptions } from "../lib/serve.ts";
import { parseHop } from "../lib/upstream/hop.ts";
import { parseRoute } from "../lib/upstream/route.ts";
import {
  closedPort,
  curl,
  hex,
  HTTP_BODY,
  RawClient,
  run,
  sleep,
  spawnProxy,
  startDns,
  startHttp,
  startProxy,
  startTcp,
  toHex,
  until,
} from "./_fixtures.ts";

/** Waits until something accepts on 127.0.0.1:`port`. */
async function waitPort(port: number, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host: "127.0.0.1" });
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on ${port}`);
}

/** A daemon of the test's own, stopped by its PID. */
async function daemon(
  cmd: string,
  args: string[],
  port: number,
): Promise<{ child: ChildProcess; log(): string; stop(): Promise<void> }> {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout!.on("data", (c) => (log += c));
  child.stderr!.on("data", (c) => (log += c));
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (e) => reject(new Error(`cannot run ${cmd}: ${e.message}`)));
    child.once("exit", (code) => reject(new Error(`${cmd} exited with ${code}: ${log}`)));
  });
  failed.catch(() => {});
  try {
    await Promise.race([waitPort(port, cmd), failed]);
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  return {
    child,
    log: () => log,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        child.once("exit", () => (clearTimeout(timer), resolve()));
        child.kill("SIGTERM");
      }),
  };
}

async function microsocks(auth?: [string, string]) {
  const port = await closedPort();
  const args = ["-i", "127.0.0.1", "-p", String(port), ...(auth ? ["-u", auth[0], "-P", auth[1]] : [])];
  return { port, ...(await daemon("/usr/bin/microsocks", args, port)) };
}

/** The first proxy, in this process, chained as `chain` says; its records in `logs`. */
async function chained(chain: ServeOptions["chain"], options: ServeOptions = {}) {
  const logs: ConnectionLog[] = [];
  const proxy = await startProxy({ chain, onLog: (e) => logs.push(e), ...options });
  return Object.assign(proxy, { logs });
}

/** A chain of one upstream, `name` at `url`, that every destination is routed to. */
function oneHop(name: string, url: string, passthrough?: boolean): ServeOptions["chain"] {
  return { upstreams: [parseHop(name, url)], routes: [parseRoute(`*=${name}`)], passthrough };
}

/** curl for `url` through the proxy on 127.0.0.1:`port` (`--socks5-hostname`, or `flag`), as `user` if given. */
function curlVia(port: number, url: string, user?: string, flag = "--socks5-hostname") {
  return curl([flag, `127.0.0.1:${port}`, ...(user ? ["-U", user] : []), url]);
}

/**
 * The SOCKS5 reply to a CONNECT by name through `port`, after `greeting` (one that offers only
 * username/password carries its login too: 4 bytes come back for it, else 2). Without `toEnd` the 10
 * bytes of an IPv4 reply; with it all the proxy sends until it closes.
 */
async function replyTo(
  port: number,
  host: string,
  target: number,
  greeting = hex("05 01 00"),
  toEnd = false,
): Promise<string> {
  const c = await RawClient.open(port);
  try {
    c.send(greeting);
    await c.readExactly(greeting[2] === 2 ? 4 : 2);
    c.send(
      Uint8Array.of(5, 1, 0, 3, host.length, ...new TextEncoder().encode(host), target >> 8, target & 0xff),
    );
    return toHex(await (toEnd ? c.readToEnd(10_000) : c.readExactly(10, 15_000)));
  } finally {
    c.destroy();
  }
}

/**
 * A second edgesocks (`options`, its records in `upLogs`) as the one upstream "up" (`scheme`) of a first
 * that passes its clients' credentials through, and a web server; `close` stops all three.
 */
async function behindSecond(scheme: string, options: ServeOptions) {
  const web = await startHttp();
  const upLogs: ConnectionLog[] = [];
  const up = await startProxy({ ...options, onLog: (e) => upLogs.push(e) });
  const proxy = await chained(oneHop("up", `${scheme}://127.0.0.1:${up.port}`, true));
  const close = async () => {
    await proxy.close();
    await up.close();
    await web.close();
  };
  return { web, upLogs, proxy, close };
}

const reply = (rep: number) => toHex(Uint8Array.of(5, rep, 0, 1, 0, 0, 0, 0, 0, 0));

describe("chaining: microsocks", () => {
  let web: Awaited<ReturnType<typeof startHttp>>;
  let ms: Awaited<ReturnType<typeof microsocks>>;
  let msAuth: Awaited<ReturnType<typeof microsocks>>;
  before(async () => {
    web = await startHttp();
    ms = await microsocks();
    msAuth = await microsocks(["carol", "c0rrect"]);
  });
  after(async () => {
    await ms?.stop();
    await msAuth?.stop();
    await web?.close();
  });

  it("socks5h: curl's name goes to the upstream, which resolves it; the record says which way", async () => {
    const proxy = await chained(oneHop("ms", `socks5h://127.0.0.1:${ms.port}`));
    try {
      const r = await curlVia(proxy.port, `http://localhost:${web.port}/`);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      await until(2_000, () => JSON.stringify(proxy.logs), () => proxy.logs.length === 1);
      assert.equal(proxy.logs[0].dialed, `ms/127.0.0.1:${ms.port}`);
      assert.equal(proxy.logs[0].outcome, "tunnel_done");
    } finally {
      await proxy.close();
    }
  });

  it("the upstream's refusal is the client's reply: 0x05 for a closed port, not a generic 0x01", async () => {
    const closed = await closedPort();
    const proxy = await chained(oneHop("ms", `socks5h://127.0.0.1:${ms.port}`));
    try {
      assert.equal(await replyTo(proxy.port, "localhost", closed), reply(0x05));
      const r = await curlVia(proxy.port, `http://localhost:${closed}/`);
      assert.equal(r.code, 97);
      assert.match(r.stderr, /\(5\)/);
      await until(2_000, () => "", () => proxy.logs.length >= 1);
      assert.equal(proxy.logs[0].outcome, "upstream_failed");
      assert.equal(proxy.logs[0].reply, "0x05");
    } finally {
      await proxy.close();
    }
  });

  it("credentials: the URL's, or the client's under passthrough; a refusal of them is 0x02", async () => {
    const url = (creds: string) => `socks5h://${creds}127.0.0.1:${msAuth.port}`;
    const target = `http://localhost:${web.port}/`;
    for (
      const [creds, passthrough, clientCreds, ok] of [
        ["carol:c0rrect@", false, undefined, true],
        ["carol:wrong@", false, undefined, false],
        ["", true, "carol:c0rrect", true],
        ["", true, "carol:wrong", false],
        // A client that gives none under passthrough: the URL's.
        ["carol:c0rrect@", true, undefined, true],
      ] as const
    ) {
      const proxy = await chained(oneHop("ms", url(creds), passthrough));
      try {
        const r = await curlVia(proxy.port, target, clientCreds);
        if (ok) assert.equal(r.stdout, HTTP_BODY, `${creds} ${clientCreds}: ${r.stderr}`);
        else {
          assert.equal(r.code, 97, `${creds} ${clientCreds}`);
          assert.match(r.stderr, /\(2\)/);
        }
      } finally {
        await proxy.close();
      }
    }
  });

  it("several upstreams: the next is tried while one cannot be reached, never after one answered", async () => {
    const dead = await closedPort();
    const closed = await closedPort();
    const proxy = await chained({
      upstreams: [
        parseHop("dead", `socks5h://127.0.0.1:${dead}`),
        parseHop("ms", `socks5h://127.0.0.1:${ms.port}`),
      ],
      routes: [parseRoute(`connect@localhost:${closed}=ms,dead`), parseRoute("*=dead,ms")],
    });
    try {
      const r = await curlVia(proxy.port, `http://localhost:${web.port}/`);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      await until(2_000, () => "", () => proxy.logs.length === 1);
      assert.equal(proxy.logs[0].dialed, `ms/127.0.0.1:${ms.port}`);
      // ms answers 0x05 for the closed port: that is the answer, "dead" is not tried after it.
      assert.equal(await replyTo(proxy.port, "localhost", closed), reply(0x05));
      // Only "dead" and nothing else: its failure to be reached is what the client hears.
      const solo = await chained(oneHop("dead", `socks5h://127.0.0.1:${dead}`));
      try {
        assert.equal(await replyTo(solo.port, "localhost", web.port), reply(0x05));
        await until(2_000, () => "", () => solo.logs.length === 1);
        assert.equal(solo.logs[0].dialed, `dead/127.0.0.1:${dead}`);
        assert.match(solo.logs[0].reason, /upstream dead \(127\.0\.0\.1:\d+\) cannot be reached/);
      } finally {
        await solo.close();
      }
    } finally {
      await proxy.close();
    }
  });

  it("the policy here: private IP literals refused, name rules apply, routes pick per destination", async () => {
    const proxy = await chained(
      {
        upstreams: [parseHop("ms", `socks5h://127.0.0.1:${ms.port}`)],
        routes: [parseRoute("*.direct.test=direct"), parseRoute("*=ms")],
      },
      {
        policy: {
          rules: [{ action: "deny", commands: ["connect"], host: "blocked.test", text: "blocked.test" }],
        },
      },
    );
    try {
      // An address literal is checked here, as always: 127.0.0.1 is private.
      const c = await RawClient.open(proxy.port);
      c.send(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, web.port >> 8, web.port & 0xff));
      assert.equal(toHex(await c.readToEnd()), toHex(hex("0500 05 02 00 01 00000000 0000")));
      c.destroy();
      // A name rule refuses before anything is sent to the upstream.
      assert.equal(await replyTo(proxy.port, "blocked.test", 80), reply(0x02));
      // Behind the upstream a name is not resolved here, so the after-DNS range check cannot run.
      const r = await curlVia(proxy.port, `http://localhost:${web.port}/`);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      await until(2_000, () => "", () => proxy.logs.length === 3);
      assert.deepEqual(proxy.logs.map((l) => l.outcome), ["refused_policy", "refused_policy", "tunnel_done"]);
      assert.equal(proxy.logs[0].dialed, "127.0.0.1");
    } finally {
      await proxy.close();
    }
  });

  it("socks5:// resolves here, so the after-DNS check runs: a name of a private address is refused", async () => {
    const dns = await startDns();
    const proxy = await chained(oneHop("ms", `socks5://127.0.0.1:${ms.port}`), {
      dns: { host: dns.host, port: dns.port },
    });
    const open = await chained(oneHop("ms", `socks5://127.0.0.1:${ms.port}`), {
      dns: { host: dns.host, port: dns.port },
      policy: { allowPrivate: true },
    });
    try {
      assert.equal(await replyTo(proxy.port, "web.test", web.port), reply(0x02));
      // Allowed, the upstream is given the address (microsocks could not resolve web.test itself).
      const r = await curlVia(open.port, `http://web.test:${web.port}/`);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    } finally {
      await proxy.close();
      await open.close();
      await dns.stop();
    }
  });

  it("the CLI: --upstream and --route, and clear startup errors for bad URLs and unknown names", async () => {
    const cli = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      `ms=socks5h://127.0.0.1:${ms.port}`,
      "--route",
      "*=ms",
      "--log",
      "text",
    ]);
    try {
      const r = await curlVia(cli.port, `http://localhost:${web.port}/`);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      await until(5_000, cli.output, () => /via=ms\/127\.0\.0\.1:\d+ reply=granted/.test(cli.output()));
    } finally {
      await cli.stop();
    }
    const { cmd, args } = (await import("./_fixtures.ts")).runtimeCommand();
    for (
      const [flags, message] of [
        [
          ["--upstream", "tor=socks6://127.0.0.1:9050"],
          'edgesocks: upstream "tor": unknown scheme "socks6" (socks5h, socks5, socks4a, socks4 or http)',
        ],
        [
          ["--upstream", "tor=socks5h://127.0.0.1:9050", "--route", "*.onion=tr"],
          'edgesocks: route "*.onion=tr" names upstream "tr", which no --upstream defines (known: tor, direct)',
        ],
        [["--route", "*.onion"], 'edgesocks: invalid route "*.onion": expected RULE=NAME[,NAME...]'],
        [["--upstream-auth", "maybe"], 'edgesocks: --upstream-auth must be url or passthrough, got "maybe"'],
      ] as const
    ) {
      const r = await run(cmd, [...args, ...flags]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim(), message);
    }
  });
});

describe("chaining: a silent upstream", () => {
  it("the connect timeout spans the upstream's handshake: 0x06, and the upstream connection is closed", async () => {
    let closedByUs = false;
    const silent = await startTcp((s) => {
      s.resume();
      s.on("end", () => (closedByUs = true));
      s.on("close", () => (closedByUs = true));
    });
    const proxy = await chained(oneHop("silent", `socks5h://127.0.0.1:${silent.port}`), {
      timeouts: { connect: 800 },
    });
    try {
      const started = Date.now();
      assert.equal(await replyTo(proxy.port, "example.test", 80), reply(0x06));
      const took = Date.now() - started;
      assert.ok(took >= 700 && took < 5_000, `${took} ms`);
      await until(3_000, () => "still open", () => closedByUs);
      await until(2_000, () => "", () => proxy.logs.length === 1);
      assert.equal(proxy.logs[0].outcome, "connect_timeout");
    } finally {
      await proxy.close();
      await silent.close();
    }
  });
});

describe("chaining: a second edgesocks", () => {
  it("SOCKS4A upstream: the client's SOCKS4 user id, and a SOCKS5 user name, go on as its user id", async () => {
    const { web, upLogs, proxy, close } = await behindSecond("socks4a", { policy: { allowPrivate: true } });
    try {
      let r = await curlVia(proxy.port, `http://localhost:${web.port}/`, "bob:", "--socks4a");
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      r = await curlVia(proxy.port, `http://localhost:${web.port}/`, "alice:pw");
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      await until(3_000, () => JSON.stringify(upLogs), () => upLogs.length === 2);
      assert.deepEqual(upLogs.map((l) => [l.version, l.user, l.target]), [
        [4, "bob", `localhost:${web.port}`],
        [4, "alice", `localhost:${web.port}`],
      ]);
      // Our client sent its login to us: kept for the record as its user, never its password.
      assert.equal(proxy.logs[1].user, "alice");
      assert.ok(!JSON.stringify(proxy.logs).includes("pw"));
    } finally {
      await close();
    }
  });

  it("SOCKS5 upstream with users: passthrough logs in as the client; a wrong password is 0x02", async () => {
    const { web, upLogs, proxy, close } = await behindSecond("socks5h", {
      policy: { allowPrivate: true },
      users: new Map([["alice", "s3cret"]]),
    });
    try {
      const r = await curlVia(proxy.port, `http://localhost:${web.port}/`, "alice:s3cret");
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      // Exact bytes: offer both methods, we ask for the login (Tor does the same), the upstream refuses it.
      const c = await RawClient.open(proxy.port);
      c.send(hex("05 02 00 02"));
      assert.equal(toHex(await c.readExactly(2)), toHex(hex("05 02")));
      c.send(hex("01 05 'alice' 05 'wrong'"));
      assert.equal(toHex(await c.readExactly(2)), toHex(hex("01 00")));
      c.send(hex("05 01 00 03 09 'localhost' 0050"));
      assert.equal(toHex(await c.readToEnd(10_000)), reply(0x02));
      c.destroy();
      await until(3_000, () => JSON.stringify(upLogs), () => upLogs.length === 2);
      assert.deepEqual(upLogs.map((l) => [l.user, l.outcome]), [["alice", "tunnel_done"], [
        "alice",
        "auth_failed",
      ]]);
    } finally {
      await close();
    }
  });

  it("RESOLVE and RESOLVE_PTR go to a ?tor upstream (no lookup here), else are refused 0x07", async () => {
    const dns = await startDns();
    const deadDns = await closedPort();
    const up = await startProxy({ policy: { allowPrivate: true }, dns: { host: dns.host, port: dns.port } });
    // Our own resolver points at nothing: an answer can only have come from the upstream.
    const options: ServeOptions = {
      policy: { allowPrivate: true },
      dns: { host: "127.0.0.1", port: deadDns },
    };
    const proxy = await chained({
      upstreams: [
        parseHop("tor", `socks5h://127.0.0.1:${up.port}?tor`),
        parseHop("plain", `socks5h://127.0.0.1:${up.port}`),
      ],
      // A route's upstreams that cannot resolve are passed over for RESOLVE: web.test goes to "tor".
      routes: [
        parseRoute("resolve@*.plain.test=plain"),
        parseRoute("resolve@web.test=plain,tor"),
        parseRoute("*=tor"),
      ],
    }, options);
    try {
      let r = await run("tor-resolve", ["-5", "web.test", `127.0.0.1:${proxy.port}`]);
      assert.equal(r.stdout.trim(), "127.0.0.1", r.stderr);
      r = await run("tor-resolve", ["-4", "other.test", `127.0.0.1:${proxy.port}`]);
      assert.equal(r.stdout.trim(), "127.0.0.2", r.stderr);
      r = await run("tor-resolve", ["-x", "192.0.2.55", `127.0.0.1:${proxy.port}`]);
      assert.equal(r.stdout.trim(), "ptr.test", r.stderr);
      // The upstream's failure as its reply: no such name is 0x04.
      const c = await RawClient.open(proxy.port);
      c.send(hex("05 01 00  05 f0 00 03 07 'nx.test' 0000"));
      assert.equal(toHex(await c.readToEnd(10_000)), toHex(hex("0500 05 04 00 01 00000000 0000")));
      c.destroy();
      // Routed to an upstream without ?tor: refused, not answered from a local lookup.
      const p = await RawClient.open(proxy.port);
      p.send(hex("05 01 00  05 f0 00 03 0c 'a.plain.test' 0000"));
      assert.equal(toHex(await p.readToEnd(10_000)), toHex(hex("0500 05 07 00 01 00000000 0000")));
      p.destroy();
    } finally {
      await proxy.close();
      await up.close();
      await dns.stop();
    }
  });
});

describe("chaining: an HTTP CONNECT upstream (a second edgesocks, --http-connect)", () => {
  it("Basic credentials passed through are checked by it; its 407, 403 and 502 are 0x02, 0x02, 0x04", async () => {
    const closed = await closedPort();
    const { web, upLogs, proxy, close } = await behindSecond("http", {
      httpConnect: true,
      policy: {
        allowPrivate: true,
        rules: [{ action: "deny", commands: ["connect"], host: "no.test", text: "no.test" }],
      },
      users: new Map([["alice", "s3cret"]]),
      authBackoff: false,
    });
    try {
      const r = await curlVia(proxy.port, `http://localhost:${web.port}/`, "alice:s3cret");
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      const login = hex("05 01 02 01 05 'alice' 06 's3cret'");
      const answer = (host: string, port: number, greeting: Uint8Array) =>
        replyTo(proxy.port, host, port, greeting, true);
      // Its refusals as their statuses say: 407 (no credentials) and 403 (its policy) are 0x02; it answers
      // a refused connection 502, which is 0x04.
      assert.equal(await answer("localhost", web.port, hex("05 01 00")), reply(0x02));
      assert.equal(await answer("no.test", 80, login), reply(0x02));
      assert.equal(await answer("localhost", closed, login), reply(0x04));
      await until(3_000, () => JSON.stringify(upLogs), () => upLogs.length === 4);
      assert.deepEqual(upLogs.map((l) => l.user), ["alice", undefined, "alice", "alice"]);
    } finally {
      await close();
    }
  });
});

describe("chaining: an HTTP CONNECT upstream (ncat --proxy-type http)", () => {
  let web: Awaited<ReturnType<typeof startHttp>>;
  let ncat: Awaited<ReturnType<typeof daemon>>;
  let port: number;
  before(async () => {
    web = await startHttp();
    port = await closedPort();
    ncat = await daemon("ncat", [
      "-l",
      "127.0.0.1",
      String(port),
      "--proxy-type",
      "http",
      "--proxy-auth",
      "alice:s3cret",
      "-k",
    ], port);
  });
  after(async () => {
    await ncat?.stop();
    await web?.close();
  });

  it("Basic credentials from the URL, or the client's under passthrough; 407 is 0x02, ncat's 504 is 0x06", async () => {
    const closed = await closedPort();
    for (
      const [creds, passthrough, clientCreds, ok] of [
        ["alice:s3cret@", false, undefined, true],
        ["", true, "alice:s3cret", true],
        ["", false, undefined, false],
        ["alice:nope@", false, undefined, false],
      ] as const
    ) {
      const proxy = await chained(oneHop("web", `http://${creds}127.0.0.1:${port}`, passthrough));
      try {
        const r = await curlVia(proxy.port, `http://localhost:${web.port}/`, clientCreds);
        if (ok) {
          assert.equal(r.stdout, HTTP_BODY, `${creds}${clientCreds}: ${r.stderr}`);
          // ncat answers a CONNECT to a closed port with 504.
          if (creds) assert.equal(await replyTo(proxy.port, "localhost", closed), reply(0x06));
        } else {
          assert.equal(r.code, 97);
          assert.match(r.stderr, /\(2\)/);
          await until(2_000, () => "", () => proxy.logs.length === 1);
          assert.equal(proxy.logs[0].reason, "upstream web: 407 Proxy Authentication Required");
        }
      } finally {
        await proxy.close();
      }
    }
  });
});

describe("chaining: Dante with username authentication", () => {
  it("passthrough: danted authenticates the client's user and logs it", async () => {
    const web = await startHttp();
    const dir = mkdtempSync(join(tmpdir(), "edgesocks-dante-"));
    const port = await closedPort();
    // Dante checks the system's passwords: a user of the test's own, in a mount namespace where
    // /etc/passwd and /etc/shadow are copies with that user added (the machine's own are untouched).
    const hash = (await run("openssl", ["passwd", "-6", "pa:ss w0rd"])).stdout.trim();
    writeFileSync(
      join(dir, "passwd"),
      readFileSync("/etc/passwd", "utf8") + "edgechain:x:64999:64999::/nonexistent:/usr/sbin/nologin\n",
    );
    writeFileSync(
      join(dir, "shadow"),
      readFileSync("/etc/shadow", "utf8") + `edgechain:${hash}:20000:0:99999:7:::\n`,
    );
    const log = join(dir, "danted.log");
    writeFileSync(
      join(dir, "sockd.conf"),
      `logoutput: ${log}\ninternal: 127.0.0.1 port = ${port}\nexternal: 127.0.0.1\nsocksmethod: username\n` +
        "clientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n" +
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }\n" +
        "socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 log: connect error }\n",
    );
    const script = `mount --bind ${dir}/passwd /etc/passwd && mount --bind ${dir}/shadow /etc/shadow && ` +
      `exec /usr/sbin/danted -f ${dir}/sockd.conf -N 1`;
    const dante = await daemon("unshare", ["-m", "sh", "-c", script], port);
    const proxy = await chained(oneHop("dante", `socks5://127.0.0.1:${port}`, true), {
      policy: { allowPrivate: true },
    });
    try {
      const r = await curlVia(
        proxy.port,
        `http://127.0.0.1:${web.port}/`,
        "edgechain:pa:ss w0rd",
        "--socks5",
      );
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
      const bad = await curlVia(proxy.port, `http://127.0.0.1:${web.port}/`, "edgechain:wrong", "--socks5");
      assert.equal(bad.code, 97);
      await until(
        5_000,
        () => readFileSync(log, "utf8"),
        () => /authentication failed/.test(readFileSync(log, "utf8")),
      );
      const text = readFileSync(log, "utf8");
      assert.match(
        text,
        new RegExp(
          `tcp/connect \\[: username%edgechain@127\\.0\\.0\\.1\\.\\d+ 127\\.0\\.0\\.1\\.${port} -> .* 127\\.0\\.0\\.1\\.${web.port}`,
        ),
      );
      assert.match(text, /system password authentication failed for user "edgechain"/);
    } finally {
      await proxy.close();
      await dante.stop();
      await web.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
