/**
 * `--config FILE`: every flag of the table is a key (repeatable ones take
 * arrays), the command line replaces a key, and a bad file is one line naming
 * the key, exit 2.
 */
import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configArgs, loadOptions } from "../lib/cli/config.ts";
import { FLAGS, parseArgs } from "../lib/cli/flags.ts";
import { curl, HTTP_BODY, run, runtimeCommand, spawnProxy, startHttp, until } from "./_fixtures.ts";

const files = new Map<string, string>();
const read = (path: string) =>
  files.has(path) ? Promise.resolve(files.get(path)!) : Promise.reject(
    Object.assign(new Error("nope"), { code: "ENOENT" }),
  );
const load = (config: unknown, args: string[] = []) => {
  files.set("c.json", typeof config === "string" ? config : JSON.stringify(config));
  return loadOptions(["--config", "c.json", ...args], read);
};
const fails = async (config: unknown, message: string, args: string[] = []) => {
  await assert.rejects(load(config, args), (e: Error) => {
    assert.ok(e instanceof TypeError);
    assert.equal(e.message, message);
    return true;
  });
};

describe("--config", () => {
  it("every flag of the table is a key: its example in a file means what it means on the command line", async () => {
    for (const flag of FLAGS) {
      if (flag.name === "--config") continue;
      const key = flag.name.slice(2);
      const value = flag.value === undefined ? true : flag.example;
      // (--proxy-protocol-from is only for --proxy-protocol.)
      const extra = key === "proxy-protocol-from" ? ["--proxy-protocol"] : [];
      const { configFile, ...fromFile } = await load({ [key]: value }, extra);
      assert.equal(configFile, "c.json");
      const fromArgs = parseArgs([
        ...(flag.value === undefined ? [flag.name] : [flag.name, flag.example]),
        ...extra,
      ]);
      assert.deepEqual(fromFile, fromArgs, key);
      assert.notDeepEqual(fromFile, parseArgs(extra), `${key} changes something`);
    }
  });

  it("repeatable flags take arrays (in order); numbers may be JSON numbers; false leaves a switch off", async () => {
    const opts = await load({
      listen: ["127.0.0.1:1081", "[::1]:1082"],
      deny: ["*.corp.example"],
      allow: "10.0.0.0/8:443",
      "idle-timeout": 1.5,
      "max-connections": 7,
      "allow-private": false,
      "hide-bound-address": true,
    });
    assert.deepEqual(opts.listen, [{ host: "127.0.0.1", port: 1081 }, { host: "::1", port: 1082 }]);
    assert.deepEqual(opts.rules.map((r) => r.action), ["deny", "allow"], "in the order of the keys");
    assert.equal(opts.idleTimeout, 1500);
    assert.equal(opts.maxConnections, 7);
    assert.equal(opts.allowPrivate, false);
    assert.equal(opts.hideBoundAddress, true);
  });

  it("a flag on the command line replaces the key, arrays too; other keys stay", async () => {
    const opts = await load({ listen: ["127.0.0.1:1081", "127.0.0.1:1082"], log: "json", dns: "127.0.0.1" }, [
      "--listen",
      "127.0.0.1:2000",
      "--log=text",
    ]);
    assert.deepEqual(opts.listen, [{ host: "127.0.0.1", port: 2000 }]);
    assert.equal(opts.log, "text");
    assert.deepEqual(opts.dns, { host: "127.0.0.1", port: 53 });
  });

  it("errors name the file and the key, in one line", async () => {
    await fails(
      { lisen: "127.0.0.1:1" },
      'config file c.json, key "lisen": unknown key (keys are the long flag names without dashes; see --help)',
    );
    await fails(
      { "--listen": "127.0.0.1:1" },
      'config file c.json, key "--listen": unknown key (keys are the long flag names without dashes; see --help)',
    );
    await fails(
      { listen: 1080 },
      'config file c.json, key "listen": --listen: expected HOST:PORT, got "1080"',
    );
    await fails(
      { listen: [true] },
      'config file c.json, key "listen": must be a string or an array of strings (HOST:PORT), not a boolean',
    );
    await fails(
      { log: ["json"] },
      'config file c.json, key "log": must be a string (text|json|quiet), not an array',
    );
    await fails(
      { log: "loud" },
      'config file c.json, key "log": --log must be text, json or quiet, got "loud"',
    );
    await fails(
      { "allow-private": "yes" },
      'config file c.json, key "allow-private": must be true or false, not a string',
    );
    await fails(
      { "max-connections": null },
      'config file c.json, key "max-connections": must be a string (N), not null',
    );
    await fails(
      { config: "other.json" },
      'config file c.json, key "config": a config file cannot name another',
    );
    await fails(["--listen"], "config file c.json: must hold a JSON object of flags, not an array");
    await assert.rejects(load("{ listen: 1 }"), (e: Error) => {
      assert.match(e.message, /^config file c\.json: not valid JSON \(.+\)$/);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
    await assert.rejects(loadOptions(["--config", "missing.json"], read), {
      message: "cannot read config file missing.json: no such file",
    });
  });

  it("--proxy-protocol-from without --proxy-protocol is an error, from the file or the command line", async () => {
    await fails(
      { "proxy-protocol-from": ["10.0.0.0/8"] },
      "--proxy-protocol-from is for --proxy-protocol, which is not given",
    );
    const opts = await load({ "proxy-protocol-from": ["10.0.0.0/8"] }, ["--proxy-protocol"]);
    assert.equal(opts.proxyProtocol, true);
    assert.equal(opts.proxyProtocolFrom[0].text, "10.0.0.0/8");
  });

  it("configArgs: the arguments a file stands for", () => {
    assert.deepEqual(configArgs({ listen: ["[::1]:1"], "allow-private": true, "idle-timeout": 60 }, "f"), [
      "--listen",
      "[::1]:1",
      "--allow-private",
      "--idle-timeout",
      "60",
    ]);
  });
});

describe("--config, the program", () => {
  let dir: string | undefined;
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));
  const write = (text: string) => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-config-"));
    const path = join(dir, "edgesocks.json");
    writeFileSync(path, text);
    return path;
  };

  it("serves as the file says, the command line overriding it", async () => {
    const web = await startHttp();
    const path = write(JSON.stringify({ listen: ["127.0.0.1:1"], "allow-private": true, log: "json" }));
    const proxy = await spawnProxy(["--config", path, "--listen", "127.0.0.1:0", "--log", "text"]);
    try {
      const r = await curl(["--socks5-hostname", `127.0.0.1:${proxy.port}`, `http://127.0.0.1:${web.port}/`]);
      assert.deepEqual([r.code, r.stdout], [0, HTTP_BODY], r.stderr);
      assert.match(
        proxy.startup,
        /listening on 127\.0\.0\.1:\d+ \(auth: none, private destinations allowed\)$/,
      );
      // curl is done once it has the body; the tunnel's record follows when both sides have closed.
      await until(10_000, () => `no record line: ${proxy.output()}`, () => / outcome=/.test(proxy.output()));
    } finally {
      assert.equal(await proxy.stop(), 0);
      await web.close();
    }
    assert.match(
      proxy.output(),
      / socks5 connect 127\.0\.0\.1:\d+ via=127\.0\.0\.1 reply=granted outcome=tunnel_done /,
    );
  });

  it("a bad file: one line naming the key on standard error, exit 2", async () => {
    const { cmd, args } = runtimeCommand();
    const path = write(JSON.stringify({ "allow-private": true, "max-conections": 5 }));
    const r = await run(cmd, [...args, "--config", path]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [
      2,
      "",
      `edgesocks: config file ${path}, key "max-conections": unknown key (keys are the long flag names without dashes; see --help)\n`,
    ]);
    const typed = write(JSON.stringify({ "idle-timeout": "soon" }));
    const t = await run(cmd, [...args, "--config", typed]);
    assert.deepEqual([t.code, t.stderr], [
      2,
      `edgesocks: config file ${typed}, key "idle-timeout": --idle-timeout needs a number of seconds, got "soon"\n`,
    ]);
  });
});
