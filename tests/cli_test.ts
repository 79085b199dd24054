/**
 * The CLI as a person runs it: `mod.ts` started as a subprocess of the
 * runtime running this file, driven by curl.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  curl,
  HTTP_BODY,
  RawClient,
  ROOT,
  run,
  RUNTIME,
  runtimeCommand,
  socketFds,
  spawnProxy,
  startDns,
  startHttp,
  toHex,
  until,
  usersFile,
} from "./_fixtures.ts";
import { FLAGS, parseArgs, parseHostPort } from "../lib/cli/flags.ts";
import { usage } from "../lib/cli/main.ts";
import { commandLine } from "../lib/cli/_command.ts";
import { listenFailure, readFailure, reasonOf } from "../lib/cli/errors.ts";
import process from "node:process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { VERSION } from "../lib/version.ts";

type Awaited2<T> = T extends Promise<infer U> ? U : T;

describe(`CLI on ${RUNTIME}`, () => {
  let http: Awaited2<ReturnType<typeof startHttp>>;
  let dns: Awaited2<ReturnType<typeof startDns>>;
  before(async () => {
    http = await startHttp();
    dns = await startDns();
  });
  after(async () => {
    await Promise.all([http?.close(), dns?.stop()]);
  });

  it("starts with users, serves curl, logs JSON without the password, and stops cleanly on SIGTERM", async () => {
    const users = usersFile("# test users\nalice:pa ss:word\nbob:hunter2\n");
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--users",
      users.path,
      "--allow-private",
      "--log",
      "json",
      "--dns",
      `${dns.host}:${dns.port}`,
    ]);
    try {
      assert.match(proxy.startup, new RegExp(`^edgesocks ${VERSION.replaceAll(".", "\\.")} on ${RUNTIME} `));
      assert.match(proxy.startup, /auth: username\/password \(2 users\)/);
      const ok = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.port}`,
        "--proxy-user",
        "alice:pa ss:word",
        `http://web.test:${http.port}/`,
      ]);
      assert.equal(ok.stdout, HTTP_BODY, ok.stderr);
      const bad = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.port}`,
        "--proxy-user",
        "bob:wrongpass",
        `http://web.test:${http.port}/`,
      ]);
      assert.notEqual(bad.code, 0);
    } finally {
      users.remove();
      const code = await proxy.stop("SIGTERM");
      assert.equal(code, 0);
    }
    const lines = proxy.output().trim().split("\n").slice(1).map((l) => JSON.parse(l));
    assert.ok(
      lines.some((l) =>
        l.user === "alice" && l.reply === "granted" && l.target === `web.test:${http.port}` &&
        l.dialed === "127.0.0.1"
      ),
    );
    assert.ok(
      lines.some((l) =>
        l.outcome === "auth_failed" && l.reason === "authentication failed" && l.user === "bob"
      ),
      `the failed login's record names the user tried: ${proxy.output()}`,
    );
    for (const secret of ["pa ss:word", "hunter2", "wrongpass"]) {
      assert.ok(
        !proxy.output().includes(secret) && !proxy.errors().includes(secret),
        `credential ${secret} in the log`,
      );
    }
  });

  it("defaults to 127.0.0.1:1080-style loopback, refuses private destinations, and SIGINT stops it", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--log",
      "text",
      "--dns",
      `${dns.host}:${dns.port}`,
    ]);
    try {
      assert.match(proxy.startup, /listening on 127\.0\.0\.1:\d+ \(auth: none\)/);
      assert.equal(proxy.errors(), "");
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.port}`,
        `http://web.test:${http.port}/`,
      ]);
      assert.notEqual(r.code, 0);
      const c = await RawClient.open(proxy.port);
      c.send(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80));
      assert.equal(toHex(await c.readToEnd()), "05 00 05 02 00 01 00 00 00 00 00 00");
      c.destroy();
    } finally {
      assert.equal(await proxy.stop("SIGINT"), 0);
    }
    assert.match(proxy.output(), /reply=0x02/);
    assert.match(proxy.errors(), /^edgesocks: stopping \(SIGINT\), closed \d+ open connections?\n$/);
  });

  it("says in one line that it stops, on which signal, and how many connections it closed", async () => {
    // SIGTERM drains: the half greetings get the drain timeout, then are closed.
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private", "--drain-timeout", "0.5"]);
    const held: RawClient[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await RawClient.open(proxy.port);
        c.send(Uint8Array.of(5)); // half a greeting: the connection stays open
        held.push(c);
      }
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await proxy.stop("SIGTERM"), 0);
      assert.equal(
        proxy.errors(),
        "edgesocks: drained (SIGTERM): 0 connections finished, 3 closed at timeout\n",
      );
      for (const c of held) assert.equal((await c.readToEnd()).length, 0);
    } finally {
      for (const c of held) c.destroy();
      await proxy.stop();
    }
    const idle = await spawnProxy(["--listen", "127.0.0.1:0"]);
    assert.equal(await idle.stop("SIGINT"), 0);
    assert.equal(idle.errors(), "edgesocks: stopping (SIGINT), closed 0 open connections\n");
  });

  it("--deny-connect-dir refuses 0xF2 with 02", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private", "--deny-connect-dir"]);
    try {
      const c = await RawClient.open(proxy.port);
      c.send(Uint8Array.of(5, 1, 0, 5, 0xf2, 0, 1, 127, 0, 0, 1, 0, 80));
      assert.equal(toHex(await c.readToEnd()), "05 00 05 02 00 01 00 00 00 00 00 00");
      c.destroy();
    } finally {
      await proxy.stop();
    }
  });

  it("warns loudly when listening beyond loopback without users", async () => {
    const proxy = await spawnProxy(["--listen", "0.0.0.0:0"]);
    try {
      for (let i = 0; i < 50 && !proxy.errors().includes("OPEN PROXY"); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(proxy.errors(), /WARNING.*OPEN PROXY/);
    } finally {
      await proxy.stop();
    }
  });

  it("listens on several addresses, IPv6 loopback included", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--allow-private"]);
    try {
      const m = /listening on 127\.0\.0\.1:(\d+), \[::1\]:(\d+)/.exec(proxy.startup);
      assert.ok(m, proxy.startup);
      const r = await curl([
        "--socks5",
        `[::1]:${m[2]}`,
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    } finally {
      await proxy.stop();
    }
  });

  it("--deny rules refuse by name, --allow rules by range, before the defaults", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--dns",
      `${dns.host}:${dns.port}`,
      "--deny",
      "connect@web.test",
      "--allow",
      `connect@127.0.0.0/8:${http.port}`,
    ]);
    try {
      const fetchVia = (host: string) =>
        curl([
          "--socks5-hostname",
          `127.0.0.1:${proxy.port}`,
          `http://${host}:${http.port}/`,
        ]);
      const byName = await fetchVia("web.test");
      // curl exit 97 with reply 02 (not allowed by ruleset): refused by the rule, not a crash or a DNS failure.
      assert.equal(byName.stdout, "", "web.test went through a deny rule");
      assert.match(byName.stderr, /SOCKS5 connection to web\.test\. \(2\)/);
      assert.equal(byName.code, 97, byName.stderr);
      const allowed = await fetchVia("127.0.0.1");
      assert.equal(
        allowed.stdout,
        HTTP_BODY,
        `${allowed.stderr} (the allow rule should open 127.0.0.0/8:${http.port})`,
      );
      // other.test is 127.0.0.2: the range rule lets it be dialled, and nothing listens there, so the
      // reply is 05 (refused) rather than 02 (not allowed).
      const other = await fetchVia("other.test");
      assert.match(other.stderr, /\(5\)\s*$/);
    } finally {
      await proxy.stop();
    }
  });

  it("--max-connections and --max-connections-per-client close extra connections at once; --deny-client refuses", async () => {
    for (const flags of [["--max-connections", "2"], ["--max-connections-per-client", "2"]]) {
      // A 60 s handshake timeout: "closed at once" is then anything well under it, however loaded the machine.
      const proxy = await spawnProxy([
        "--listen",
        "127.0.0.1:0",
        "--allow-private",
        "--handshake-timeout",
        "60",
        ...flags,
      ]);
      const opened: RawClient[] = [];
      const open = async () => {
        const c = await RawClient.open(proxy.port);
        opened.push(c);
        return c;
      };
      try {
        const held = [await open(), await open()];
        // The proxy holds both (it answered their greetings) before the extra one comes.
        held[0].send(Uint8Array.of(5, 1, 0));
        held[1].send(Uint8Array.of(5, 1, 0));
        for (const c of held) assert.equal(toHex(await c.readExactly(2, 10_000)), "05 00");
        const base = socketFds(proxy.child.pid!);
        const extra = await open();
        extra.send(Uint8Array.of(5, 1, 0));
        const t0 = Date.now();
        assert.equal(
          (await extra.readToEnd(20_000)).length,
          0,
          `${flags[0]}: the extra connection got a reply`,
        );
        assert.ok(Date.now() - t0 < 20_000, `${flags[0]}: not refused before the handshake timeout`);
        for (const c of held) c.destroy();
        // Wait for the event (the proxy let go of the held ones), then a new client must get through.
        await until(
          10_000,
          () => "the proxy still holds the closed clients",
          () => socketFds(proxy.child.pid!) < base,
        );
        const again = await open();
        again.send(Uint8Array.of(5, 1, 0));
        assert.equal(
          toHex(await again.readExactly(2, 10_000)),
          "05 00",
          `${flags[0]}: no recovery after the others closed`,
        );
      } finally {
        for (const c of opened) c.destroy();
        await proxy.stop();
      }
    }
    const denied = await spawnProxy(["--listen", "127.0.0.1:0", "--deny-client", "127.0.0.0/8"]);
    try {
      const c = await RawClient.open(denied.port);
      c.send(Uint8Array.of(5, 1, 0));
      assert.equal((await c.readToEnd(2_000)).length, 0);
    } finally {
      await denied.stop();
    }
  });

  it("--help, --version, and clear errors for bad flags", async () => {
    const { cmd, args } = runtimeCommand();
    const help = await run(cmd, [...args, "--help"]);
    assert.equal(help.code, 0);
    // The command actually used, as typed from here, in the usage line and the examples.
    const mod = relative(process.cwd(), join(ROOT, "mod.ts")) || "mod.ts";
    const used = { deno: `deno run -A ${mod}`, bun: `bun ${mod}`, node: `node ${mod}` }[RUNTIME];
    assert.equal(help.stdout.split("\n")[2], `Usage: ${used} [flags]`);
    assert.match(help.stdout, new RegExp(`\nExamples:\n  ${used.replaceAll(".", "\\.")}\n`));
    assert.ok(help.stdout.includes(`\n  ${used} --listen 0.0.0.0:1080 --users users.txt --log text\n`));
    for (
      const flag of [
        "--listen",
        "--users",
        "--allow-private",
        "--dns",
        "--log",
        "--idle-timeout",
        "--workers",
      ]
    ) {
      assert.ok(help.stdout.includes(flag));
    }
    const version = await run(cmd, [...args, "--version"]);
    assert.equal(version.stdout.trim(), `edgesocks ${VERSION}`);
    for (
      const bad of [
        ["--bogus"],
        ["--listen", "nope"],
        ["--log", "loud"],
        ["--users", "/nonexistent/users"],
        [
          "--idle-timeout",
          "soon",
        ],
        ["--deny", "listen@1.2.3.4"],
        ["--allow-client", "nope"],
        ["--max-connections", "-1"],
        ["--workers", "0"],
      ]
    ) {
      const r = await run(cmd, [...args, ...bad]);
      assert.equal(r.code, 2, `${bad.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^edgesocks: /);
    }
    const busy = await spawnProxy(["--listen", "127.0.0.1:0"]);
    try {
      const r = await run(cmd, [...args, "--listen", `127.0.0.1:${busy.port}`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /cannot listen/);
      assert.equal(r.stderr, `edgesocks: cannot listen on 127.0.0.1:${busy.port}: address already in use\n`);
    } finally {
      await busy.stop();
    }
  });
});

describe(`CLI startup failures on ${RUNTIME}: one line naming the file or address and the reason`, () => {
  const { cmd, args } = runtimeCommand();
  const fails = async (flags: string[], code: number, line: string) => {
    const r = await run(cmd, [...args, ...flags]);
    assert.equal(r.stderr, `edgesocks: ${line}\n`, flags.join(" "));
    assert.equal(r.code, code, flags.join(" "));
  };

  it("a port in use, on one of several addresses", async () => {
    const busy = await spawnProxy(["--listen", "127.0.0.1:0"]);
    try {
      await fails(
        ["--listen", "[::1]:0", "--listen", `127.0.0.1:${busy.port}`],
        1,
        `cannot listen on 127.0.0.1:${busy.port}: address already in use`,
      );
    } finally {
      await busy.stop();
    }
  });

  it("a users file that is a directory, is missing, has a bad line, or has no users", async () => {
    const bad = usersFile("# users\nalice:secret\n\nbob\n");
    const empty = usersFile("# nobody yet\n");
    const dir = dirname(bad.path);
    try {
      await fails(["--users", dir], 2, `cannot read users file ${dir}: it is a directory, not a file`);
      await fails(["--users", `${dir}/nope`], 2, `cannot read users file ${dir}/nope: no such file`);
      await fails(["--users", bad.path], 2, `users file ${bad.path}, line 4: expected user:password`);
      await fails(["--users", empty.path], 2, `users file ${empty.path}: no users in it`);
    } finally {
      bad.remove();
      empty.remove();
    }
  });

  it("a port out of range is not a bad HOST:PORT", async () => {
    await fails(
      ["--listen", "127.0.0.1:99999"],
      2,
      `--listen: port out of range (0 to 65535) in "127.0.0.1:99999"`,
    );
    await fails(
      ["--dns", "127.0.0.1:65536"],
      2,
      `--dns: port out of range (0 to 65535) in "127.0.0.1:65536"`,
    );
    await fails(["--listen", "127.0.0.1"], 2, `--listen: expected HOST:PORT, got "127.0.0.1"`);
  });
});

describe("startup failures in words", () => {
  it("by errno name, Deno's error class, or the runtime's own message", () => {
    const at = { host: "127.0.0.1", port: 1080 };
    const node = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:1080"), {
      code: "EADDRINUSE",
    });
    const deno = Object.assign(new Error("Address already in use (os error 98)"), { name: "AddrInUse" });
    const bun = Object.assign(new Error("Failed to listen at 127.0.0.1"), { code: "EADDRINUSE" });
    for (const e of [node, deno, bun]) {
      assert.equal(listenFailure(at, e), "cannot listen on 127.0.0.1:1080: address already in use");
    }
    assert.equal(
      listenFailure({ host: "::1", port: 1 }, { code: "EADDRNOTAVAIL" }),
      "cannot listen on [::1]:1: address not available on this machine",
    );
    assert.equal(
      listenFailure({ host: "no.such.test", port: 1 }, new Error("Failed to listen at no.such.test")),
      "cannot listen on no.such.test:1: host name not found",
    );
    assert.equal(
      reasonOf(Object.assign(new Error("x"), { name: "IsADirectory" })),
      "it is a directory, not a file",
    );
    assert.equal(reasonOf(new Error("something new")), "something new");
    assert.equal(
      readFailure("users file", "/u", { code: "EACCES" }),
      "cannot read users file /u: permission denied",
    );
  });
});

describe("npm start (tools/start.mjs)", () => {
  const node = join(ROOT, "node_modules", ".bin", "node");
  const start = join(ROOT, "tools", "start.mjs");
  // Node 20 cannot be installed next to Node 24 here: pretend, before the launcher reads the version.
  const pretend = (version: string) =>
    `--import=data:text/javascript,Object.defineProperty(process.versions,"node",{value:"${version}"})`;

  it("on a Node too old for TypeScript, says so in one line", async () => {
    for (const version of ["20.20.2", "22.17.1"]) {
      const r = await run(node, [pretend(version), start, "--version"]);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `edgesocks needs Node >= 22.18 to run from source (or use the npm package); this is Node ${version}\n`,
      );
      assert.equal(r.stdout, "");
    }
  });

  it("on Node >= 22.18 runs the CLI, and npm start goes through it", async () => {
    for (const version of ["22.18.0", "23.0.0"]) {
      const r = await run(node, [pretend(version), start, "--version"]);
      assert.equal(r.stdout, `edgesocks ${VERSION}\n`, r.stderr);
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.equal(pkg.scripts.start, "node tools/start.mjs");
    const r = await run("npm", ["start", "--silent", "--prefix", ROOT, "--", "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split("\n")[2], "Usage: npm start -- [flags]");
  });
});

describe("CLI argument parsing", () => {
  it("parses HOST:PORT forms", () => {
    assert.deepEqual(parseHostPort("127.0.0.1:1080"), { host: "127.0.0.1", port: 1080 });
    assert.deepEqual(parseHostPort("[::1]:0"), { host: "::1", port: 0 });
    assert.deepEqual(parseHostPort("localhost:53"), { host: "localhost", port: 53 });
    assert.deepEqual(parseHostPort("127.0.0.1", 53), { host: "127.0.0.1", port: 53 });
    assert.deepEqual(parseHostPort("::1", 53), { host: "::1", port: 53 });
    for (const bad of ["127.0.0.1", "127.0.0.1:", ":80", "h:65536", "h:-1", "[::1]"]) {
      assert.throws(() => parseHostPort(bad), TypeError, bad);
    }
  });

  it("--help lists every flag of the table, with its aliases and value", () => {
    for (const flag of FLAGS) {
      const names = [flag.name, ...(flag.aliases ?? [])].join(", ");
      const entry = flag.value === undefined ? names : `${names} ${flag.value}`;
      assert.match(
        usage("edgesocks"),
        new RegExp(`^  ${entry.replace(/[|[\]]/g, "\\$&")}( |$)`, "m"),
        flag.name,
      );
      // Its help text is there too (wrapped: compare word by word).
      const words = usage("edgesocks").split(/\s+/).join(" ");
      assert.ok(words.includes(flag.help), `${flag.name}: ${flag.help}`);
    }
  });

  it("names the command that started it: runtime and script, npx, npm start, a single binary", () => {
    const at = { cwd: "/src/edgesocks", path: "/usr/local/bin:/usr/bin" };
    const cases: [Parameters<typeof commandLine>[0], string][] = [
      [{ ...at, execPath: "/usr/bin/node", script: "/src/edgesocks/mod.ts" }, "node mod.ts"],
      [
        { ...at, execPath: "/x/bun/bin/bun.exe", script: "/src/edgesocks/lib/cli/bin.ts" },
        "bun lib/cli/bin.ts",
      ],
      [{ ...at, execPath: "/usr/bin/node", script: "/elsewhere/mod.ts" }, "node /elsewhere/mod.ts"],
      [
        { ...at, execPath: "/opt/deno", script: "file:///src/edgesocks/mod.ts", runtimeArgs: ["run", "-A"] },
        "deno run -A mod.ts",
      ],
      [
        {
          ...at,
          execPath: "/opt/deno",
          script: "https://example.com/mod.ts",
          runtimeArgs: ["run", "--allow-net"],
        },
        "deno run --allow-net https://example.com/mod.ts",
      ],
      [
        { ...at, execPath: "/usr/bin/node", script: "/p/node_modules/.bin/edgesocks", npmCommand: "exec" },
        "npx edgesocks",
      ],
      [{ ...at, execPath: "/usr/bin/node", script: "/usr/local/bin/edgesocks" }, "edgesocks"],
      [
        { ...at, execPath: "/usr/bin/node", script: "/src/edgesocks/tools/start.mjs", npmEvent: "start" },
        "npm start --",
      ],
      [
        { ...at, execPath: "/usr/bin/node", script: "/src/edgesocks/tools/start.mjs" },
        "node tools/start.mjs",
      ],
      [{ ...at, execPath: "/src/edgesocks/edgesocks" }, "./edgesocks"],
      [{ ...at, execPath: "/usr/local/bin/edgesocks" }, "edgesocks"],
      [{ ...at, execPath: "/opt/edgesocks" }, "/opt/edgesocks"],
    ];
    for (const [started, want] of cases) assert.equal(commandLine(started), want, JSON.stringify(started));
  });

  it("every flag of the table accepts its example, under each of its names", () => {
    for (const flag of FLAGS) {
      for (const name of [flag.name, ...(flag.aliases ?? [])]) {
        const args = flag.value === undefined ? [name] : [name, flag.example];
        assert.doesNotThrow(() => parseArgs(args), args.join(" "));
        assert.notDeepEqual(parseArgs(args), parseArgs([]), `${args.join(" ")} changes nothing`);
      }
    }
  });

  it("applies defaults and flags", () => {
    const d = parseArgs([]);
    assert.deepEqual(d.listen, [{ host: "127.0.0.1", port: 1080 }]);
    assert.equal(d.allowPrivate, false);
    assert.equal(d.log, "quiet");
    const o = parseArgs([
      "--listen=0.0.0.0:9050",
      "--listen",
      "[::1]:9051",
      "--allow-private",
      "--dns",
      "127.0.0.1:5353",
      "--idle-timeout",
      "1.5",
      "--log",
      "json",
    ]);
    assert.deepEqual(o.listen, [{ host: "0.0.0.0", port: 9050 }, { host: "::1", port: 9051 }]);
    assert.deepEqual(o.dns, { host: "127.0.0.1", port: 5353 });
    assert.equal(o.idleTimeout, 1500);
    assert.equal(o.log, "json");
    assert.throws(() => parseArgs(["--listen"]), /needs a value/);
  });
});

describe("lib/cli/ is the one room that knows about processes", () => {
  const walk = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []
    );
  /** Every relative import of `file` (static, `export from`, dynamic), as a path from the root. */
  const imports = (file: string) =>
    [...readFileSync(join(ROOT, file), "utf8").matchAll(/(?:from\s+|import\s*\(\s*|import\s+)"(\.[^"]+)"/g)]
      .map((m) => relative(ROOT, resolve(dirname(join(ROOT, file)), m[1])));

  it("nothing outside lib/cli/ imports it, but mod.ts loading bin.ts as the program", () => {
    for (const file of [...walk("lib"), "mod.ts"]) {
      if (file.startsWith("lib/cli/")) continue;
      const into = imports(file).filter((i) => i.startsWith("lib/cli/"));
      assert.deepEqual(into, file === "mod.ts" ? ["lib/cli/bin.ts"] : [], file);
    }
  });

  it("in lib/cli/, detect.ts is the one file that picks a runtime adapter", () => {
    for (const file of walk("lib/cli")) {
      const adapters = imports(file).filter((i) => i.startsWith("lib/adapters/"));
      if (file === "lib/cli/detect.ts") assert.equal(adapters.length, 3, adapters.join(", "));
      // The workerd worker is a program of its own, on its one runtime.
      else if (file === "lib/cli/workerd.ts") assert.deepEqual(adapters, ["lib/adapters/workerd.ts"], file);
      // So is the `deno serve` edge, on Deno.
      else if (file === "lib/cli/deno_serve.ts") {
        assert.deepEqual(adapters.sort(), ["lib/adapters/_deno_serve.ts", "lib/adapters/deno.ts"], file);
      } else assert.deepEqual(adapters, [], file);
    }
  });
});
