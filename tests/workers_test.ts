/**
 * `--workers N`: a supervisor and N worker processes of the runtime running
 * this file, sharing one port with SO_REUSEPORT. Linux only (reads /proc to
 * see the processes and their sockets).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  curl,
  holdTunnels,
  HTTP_BODY,
  processAlive,
  RawClient,
  ROOT,
  RUNTIME,
  socketFds,
  socks5ConnectBytes,
  spawnProxy,
  startEcho,
  startHttp,
  until,
  usersFile,
} from "./_fixtures.ts";
import { type Flag, FLAGS, parseArgs } from "../lib/cli/flags.ts";
import {
  LineCopier,
  parseReady,
  readyLine,
  stoppedLine,
  takeStopped,
  workerArgs,
  workerNumber,
} from "../lib/cli/workers.ts";

/** PIDs of the processes `pid` started. */
function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

describe(`--workers on ${RUNTIME}`, () => {
  let http: Awaited<ReturnType<typeof startHttp>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    http = await startHttp();
    echo = await startEcho();
  });
  after(async () => {
    await Promise.all([http?.close(), echo?.close()]);
  });

  it("two workers share the port and both serve; their log comes through; SIGTERM stops them all", async () => {
    const users = usersFile("alice:secret\n");
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--workers",
      "2",
      "--users",
      users.path,
      "--allow-private",
      "--log",
      "json",
    ]);
    const pid = proxy.child.pid!;
    const clients: RawClient[] = [];
    let workers: number[] = [];
    try {
      assert.match(
        proxy.startup,
        /listening on 127\.0\.0\.1:\d+ \(auth: username\/password \(1 user\).*2 workers\)$/,
      );
      workers = children(pid);
      assert.equal(workers.length, 2, `children of the supervisor: ${workers}`);
      const before = workers.map(socketFds);
      // 40 open tunnels (greeting offering username/password, credentials, CONNECT, all in one go): the
      // kernel spreads them over both workers.
      const hello = Buffer.from(
        "05 01 02 01 05 61 6c 69 63 65 06 73 65 63 72 65 74".replaceAll(" ", ""),
        "hex",
      );
      for (let i = 0; i < 40; i++) {
        const c = await RawClient.open(proxy.port);
        c.send(Buffer.concat([hello, socks5ConnectBytes(echo.port).subarray(3)]));
        await c.readExactly(2 + 2 + 10);
        c.send("ping");
        assert.equal(String(await c.readExactly(4)), "ping");
        clients.push(c);
      }
      const grown = workers.map((w, i) => socketFds(w) - before[i]);
      assert.ok(grown.every((n) => n >= 2), `sockets added per worker: ${grown}`);
      assert.ok(grown[0] + grown[1] >= 80, `sockets added per worker: ${grown}`);
      const r = await curl([
        "--socks5",
        `127.0.0.1:${proxy.port}`,
        "--proxy-user",
        "alice:secret",
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    } finally {
      for (const c of clients) c.destroy();
      users.remove();
      assert.equal(await proxy.stop("SIGTERM"), 0);
    }
    for (const w of workers) await until(5_000, () => `worker ${w} to exit`, () => !processAlive(w));
    const lines = proxy.output().trim().split("\n").slice(1).map((l) => JSON.parse(l));
    assert.ok(lines.length >= 41, proxy.output());
    assert.ok(lines.some((l) => l.user === "alice" && l.reply === "granted" && l.down > 0));
    // Each record says which worker served it, and both served.
    assert.ok(lines.every((l) => l.worker === 1 || l.worker === 2), proxy.output());
    assert.deepEqual([...new Set(lines.map((l) => l.worker))].sort(), [1, 2]);
    assert.ok(!proxy.output().includes("secret") && !proxy.errors().includes("secret"));
  });

  it("on SIGTERM the supervisor alone says it stops, with the connections all workers closed", async () => {
    const proxy = await spawnProxy([
      "--listen",
      "127.0.0.1:0",
      "--workers",
      "2",
      "--allow-private",
      "--drain-timeout",
      "0.5",
      "--log",
      "text",
    ]);
    let held: RawClient[] = [];
    try {
      held = await holdTunnels(proxy.port, echo.port, 5);
      assert.equal(await proxy.stop("SIGTERM"), 0);
      assert.equal(
        proxy.errors(),
        "edgesocks: drained (SIGTERM): 0 connections finished, 5 closed at timeout in 2 workers\n",
      );
      assert.ok(!proxy.output().includes("edgesocks-worker-"), proxy.output());
      // The text log names the worker at the end of each line.
      const lines = proxy.output().trim().split("\n").slice(1);
      assert.equal(lines.length, 5, proxy.output());
      for (const line of lines) assert.match(line, /^\S+ 127\.0\.0\.1:\d+ socks5 connect .* worker=[12]$/);
    } finally {
      for (const c of held) c.destroy();
      await proxy.stop();
    }
  });

  it("a worker that dies is replaced; workers end when the supervisor is killed", async () => {
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--workers", "2", "--allow-private"]);
    const pid = proxy.child.pid!;
    let workers = children(pid);
    try {
      assert.equal(workers.length, 2);
      process.kill(workers[0], "SIGKILL");
      await until(10_000, () => "a replacement worker", () => {
        const now = children(pid);
        return now.length === 2 && !now.includes(workers[0]);
      });
      assert.match(
        proxy.errors(),
        new RegExp(`worker ${workers[0]} exited \\(killed by a signal\\); starting another`),
      );
      workers = children(pid);
      // Every connection is served whichever worker takes it.
      for (let i = 0; i < 10; i++) {
        const c = await RawClient.open(proxy.port);
        c.send(socks5ConnectBytes(echo.port));
        assert.equal((await c.readExactly(12)).subarray(0, 4).toString("hex"), "05000500", `reply ${i}`);
        c.destroy();
      }
    } finally {
      process.kill(pid, "SIGKILL");
      await proxy.stop();
    }
    // Their standard input closed with the supervisor: they stop by themselves.
    for (const w of workers) {
      await until(10_000, () => `orphaned worker ${w} to exit`, () => !processAlive(w));
    }
    // And say so, for nobody else will.
    await until(
      5_000,
      () => `both orphans' stopping lines in ${proxy.errors()}`,
      () =>
        [1, 2].every((n) =>
          new RegExp(
            `^edgesocks: worker ${n} stopping \\(supervisor gone\\), closed \\d+ open connections?$`,
            "m",
          )
            .test(proxy.errors())
        ),
    );
  });

  // Deno permissions exist on Deno only: the test is registered there and nowhere else.
  if (RUNTIME === "deno") {
    it("on Deno, workers get the permissions granted to the supervisor (run included), no more", async () => {
      const mod = join(ROOT, "mod.ts");
      const program = (...flags: string[]) => ({ cmd: process.execPath, args: ["run", ...flags, mod] });
      const args = ["--listen", "127.0.0.1:0", "--workers", "2", "--allow-private"];
      const refused = await spawnProxy(args, program("--allow-net")).then(
        () => assert.fail("started workers without --allow-run"),
        (error: Error) => error.message,
      );
      assert.match(refused, /exited with 1: edgesocks: cannot start a worker: .*--allow-run/s);
      const proxy = await spawnProxy(args, program("--allow-net", "--allow-run"));
      try {
        assert.match(proxy.startup, /2 workers/);
        const r = await curl(["--socks5", `127.0.0.1:${proxy.port}`, `http://127.0.0.1:${http.port}/`]);
        assert.equal(r.stdout, HTTP_BODY, r.stderr);
      } finally {
        assert.equal(await proxy.stop(), 0);
      }
    });
  }

  it("a worker that cannot listen stops the start with exit code 1", async () => {
    const busy = await spawnProxy(["--listen", "127.0.0.1:0"]);
    try {
      const r = await spawnProxy(["--listen", `127.0.0.1:${busy.port}`, "--workers", "2"]).then(
        () => assert.fail("started on a busy port"),
        (error: Error) => error.message,
      );
      assert.match(r, /exited with 1/);
      assert.match(r, /cannot listen/);
      assert.ok(
        r.includes(`edgesocks: cannot listen on 127.0.0.1:${busy.port}: address already in use\n`),
        r,
      );
    } finally {
      await busy.stop();
    }
  });
});

describe("--workers parsing and the supervisor protocol", () => {
  it("parses --workers N and auto, and refuses the rest", () => {
    assert.equal(parseArgs([]).workers, 1);
    assert.equal(parseArgs(["--workers", "4"]).workers, 4);
    assert.equal(parseArgs(["--workers=auto"]).workers, "auto");
    for (const bad of ["0", "257", "-1", "two", ""]) {
      assert.throws(
        () => parseArgs(["--workers", bad]),
        /--workers needs a number from 1 to 256 or auto/,
        bad,
      );
    }
  });

  it("a worker's command line: no --workers, the bound addresses, its share of --max-connections", () => {
    const args = [
      "--listen",
      "127.0.0.1:0",
      "--workers=3",
      "--users",
      "--listen", // a file named like a flag is still the value of --users
      "--max-connections",
      "100",
      "--allow-private",
      "--listen=[::1]:0",
      "--log",
      "json",
    ];
    assert.deepEqual(workerArgs(args, [{ host: "127.0.0.1", port: 4000 }, { host: "::1", port: 4001 }], 34), [
      "--users",
      "--listen",
      "--allow-private",
      "--log",
      "json",
      "--listen",
      "127.0.0.1:4000",
      "--listen",
      "[::1]:4001",
      "--max-connections",
      "34",
    ]);
  });

  it("every flag of the table reaches workers as written, but those the supervisor rewrites", () => {
    const listen = [{ host: "127.0.0.1", port: 4000 }];
    const supervisor = (
      flags: string[],
    ) => [...flags, "--listen", "127.0.0.1:4000", "--max-connections", "7"];
    for (const flag of FLAGS) {
      for (const name of [flag.name, ...(flag.aliases ?? [])]) {
        const forms = flag.value === undefined
          ? [[name]]
          : [[name, flag.example], [`${name}=${flag.example}`], [name, "--listen"]];
        for (const args of forms) {
          const got = workerArgs([...args, "--allow-private"], listen, 7);
          const want = flag.workers === "pass" ? [...args, "--allow-private"] : ["--allow-private"];
          assert.deepEqual(got, supervisor(want), args.join(" "));
        }
      }
    }
    // All of them at once, parsed again by the worker: the same options, bar what the supervisor sets.
    const all = FLAGS.flatMap((f) => f.value === undefined ? [f.name] : [f.name, f.example]);
    const user = parseArgs(all);
    const worker = parseArgs(workerArgs(all, listen, 7));
    assert.deepEqual(worker, { ...user, listen, maxConnections: 7, workers: 1 });
    assert.deepEqual(
      FLAGS.filter((f) => f.workers === "supervisor").map((f) => f.name).sort(),
      ["--listen", "--max-connections", "--workers"],
    );
  });

  it("a flag added to the table reaches workers with no other edit", () => {
    const added: Flag[] = [...FLAGS, {
      name: "--new-flag",
      value: "X",
      example: "x",
      help: "a flag the code does not know yet",
      workers: "pass",
      apply: () => {},
    }, { name: "--new-switch", help: "and a boolean one", workers: "pass", apply: () => {} }];
    assert.deepEqual(
      workerArgs(["--new-flag", "--users", "--new-switch", "--new-flag=y", "--workers", "2"], [], 0, added),
      ["--new-flag", "--users", "--new-switch", "--new-flag=y", "--max-connections", "0"],
    );
    // The same row is what the parser reads.
    assert.doesNotThrow(() => parseArgs(["--new-flag", "--users", "--new-switch"], added));
    assert.throws(() => parseArgs(["--new-flag", "v"]), /unknown argument "--new-flag"/);
  });

  it("a worker's output is passed on in whole lines, so two workers' lines never splice", () => {
    const out: string[] = [];
    const lines = new LineCopier((b) => out.push(new TextDecoder().decode(b)));
    const push = (t: string) => lines.push(new TextEncoder().encode(t));
    push("one\ntw");
    push("o\nthr");
    push("ee");
    push("\nfour\nfi");
    assert.deepEqual(out, ["one\n", "two\n", "three\nfour\n"]);
    lines.flush();
    assert.deepEqual(out.slice(3), ["fi"]);
    // No newline for more than 64 KiB: passed on rather than held without bound.
    push("x".repeat(70_000));
    assert.equal(out.length, 5);
    assert.equal(out[4].length, 70_000);
  });

  it("a worker's stopped line is taken off the end of its output, and only there", () => {
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    const bytes = (t: string) => new TextEncoder().encode(t);
    const [log, closed] = takeStopped(bytes(`a log line\n${stoppedLine(12)}\n`));
    assert.deepEqual([text(log), closed], ["a log line\n", 12]);
    assert.deepEqual(
      takeStopped(bytes(`${stoppedLine(0)}\n`)).map((x) => x instanceof Uint8Array ? text(x) : x),
      [
        "",
        0,
      ],
    );
    for (
      const other of ["a log line\n", `${stoppedLine(1)}\nmore\n`, "edgesocks-worker-stopped x\n", "\n", ""]
    ) {
      const [rest, none] = takeStopped(bytes(other));
      assert.deepEqual([text(rest), none], [other, undefined], other);
    }
  });

  it("a worker's number comes from its environment, and nothing else is one", () => {
    assert.equal(workerNumber("1"), 1);
    assert.equal(workerNumber("256"), 256);
    for (const no of [undefined, "", "0", "01", "-1", "x", "1 "]) {
      assert.equal(workerNumber(no), undefined, no);
    }
  });

  it("ready lines round-trip, and anything else is not one", () => {
    const addresses = [{ host: "127.0.0.1", port: 1080 }, { host: "::1", port: 1081 }];
    assert.deepEqual(parseReady(readyLine(addresses)), addresses);
    assert.equal(parseReady("edgesocks 0.1.0 on node: listening on 127.0.0.1:1080"), null);
    // No TCP address: a worker that serves only --listen-ws (whose addresses every worker gets as given).
    assert.deepEqual(parseReady(readyLine([])), []);
    assert.equal(parseReady("edgesocks-worker-ready 127.0.0.1"), null);
  });
});
