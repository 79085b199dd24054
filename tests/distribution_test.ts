/**
 * The ways people use edgesocks besides the CLI: the examples (on the runtime
 * running this file), import by URL with no import map (under Deno, served
 * from a local HTTP server), and the module graph rules that make both work.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { curl, HTTP_BODY, ROOT, RUNTIME, spawnProxy, startHttp } from "./_fixtures.ts";

type Awaited2<T> = T extends Promise<infer U> ? U : T;

const DENO = join(ROOT, "node_modules", ".bin", "deno");

/** Static imports (and `export ... from`) of a TypeScript file. */
function staticImports(path: string): string[] {
  const text = readFileSync(path, "utf8");
  const specs: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/gms)) specs.push(m[1]);
  for (const m of text.matchAll(/^\s*import\s+"([^"]+)"/gm)) specs.push(m[1]);
  return specs;
}

/** Every file reachable from `entry` through static relative imports, and every non-relative specifier seen. */
function graph(entry: string): { files: string[]; external: string[] } {
  const files = new Set<string>();
  const external = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of staticImports(file)) {
      if (spec.startsWith(".")) visit(resolve(dirname(file), spec));
      else external.add(spec);
    }
  };
  visit(resolve(ROOT, entry));
  return { files: [...files].map((f) => relative(ROOT, f)).sort(), external: [...external].sort() };
}

describe("module graph", () => {
  it("mod.ts statically pulls in no runtime code, no bare, npm: or jsr: specifier", () => {
    const { files, external } = graph("mod.ts");
    assert.deepEqual(external, []);
    for (const file of files) {
      assert.ok(!file.startsWith("lib/adapters/") && !file.startsWith("lib/cli/"), file);
      const text = readFileSync(join(ROOT, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
      assert.doesNotMatch(text, /\b(Deno|Bun)\.|\bprocess\.|node:/, `${file} touches a runtime`);
    }
  });

  it("each adapter entry point loads only its own runtime's code", () => {
    for (
      const [runtime, others] of [["deno", ["bun", "node"]], ["bun", ["deno", "node"]], ["node", [
        "deno",
        "bun",
      ]]]
    ) {
      const { files, external } = graph(`lib/adapters/${runtime}.ts`);
      for (const other of others) {
        assert.ok(!files.includes(`lib/adapters/${other}.ts`), `${runtime} loads ${other}`);
      }
      for (const spec of external) assert.match(spec, /^node:/, `${runtime}: ${spec}`);
    }
  });

  it("no file outside an adapter (or the CLI's per-runtime process host) mentions Deno., Bun. or node:net", () => {
    const walk = (dir: string): string[] =>
      readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []
      );
    for (const file of [...walk("lib"), "mod.ts"]) {
      if (file.startsWith("lib/adapters/") || /^lib\/cli\/host_[a-z]+\.ts$/.test(file)) continue;
      const text = readFileSync(join(ROOT, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
      assert.doesNotMatch(text, /\bDeno\.|\bBun\.|node:net/, file);
    }
  });
});

describe("package metadata", () => {
  it("the version is the same in lib/version.ts, deno.json and package.json", async () => {
    const { VERSION } = await import("../lib/version.ts");
    const deno = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
    const npm = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.equal(deno.version, VERSION);
    assert.equal(npm.version, VERSION);
    assert.ok(
      deno.name && deno.license && deno.exports["./deno"] && deno.exports["./bun"] && deno.exports["./node"],
    );
  });
});

describe("import by URL under Deno", () => {
  let files: Server;
  let port: number;
  let http: Awaited2<ReturnType<typeof startHttp>>;
  before(async () => {
    http = await startHttp();
    // A plain static file server for the repository, on loopback.
    files = createServer((req, res) => {
      const path = join(ROOT, decodeURIComponent(new URL(req.url!, "http://x").pathname));
      if (!path.startsWith(ROOT) || !/\.(ts|json)$/.test(path)) return void res.writeHead(404).end();
      try {
        const body = readFileSync(path);
        res.writeHead(200, { "content-type": "application/typescript" }).end(body);
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => files.listen(0, "127.0.0.1", () => r()));
    port = (files.address() as { port: number }).port;
  });
  after(async () => {
    (files as unknown as { closeAllConnections?: () => void })?.closeAllConnections?.();
    await new Promise((r) => files?.close(r));
    await http?.close();
  });

  it("a project with no import map or config imports mod.ts by URL and serves a SOCKS5 CONNECT", async () => {
    const dir = mkdtempSync(join(tmpdir(), "edgesocks-url-"));
    const base = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, "main.ts"),
      `import { serve } from "${base}/mod.ts";
import { denoAdapter } from "${base}/lib/adapters/deno.ts";
const server = await serve(denoAdapter, { listen: [{ host: "127.0.0.1", port: 0 }], policy: { allowPrivate: true } });
console.log("SOCKS proxy on 127.0.0.1:" + server.addresses[0].port);
Deno.addSignalListener("SIGTERM", () => server.close().then(() => Deno.exit(0)));
`,
    );
    const proxy = await spawnProxy([], {
      cmd: DENO,
      args: [
        "run",
        "--no-config",
        "--allow-net",
        "--allow-read",
        `--allow-import=127.0.0.1:${port}`,
        join(dir, "main.ts"),
      ],
      env: { DENO_DIR: join(dir, "deno_dir"), NO_COLOR: "1" },
    });
    try {
      const r = await curl([
        "--socks5",
        `127.0.0.1:${proxy.port}`,
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    } finally {
      const code = await proxy.stop();
      rmSync(dir, { recursive: true, force: true });
      assert.equal(code, 0);
    }
    assert.match(
      proxy.errors(),
      new RegExp(`127\\.0\\.0\\.1:${port}/mod\\.ts`),
      "modules were not fetched by URL",
    );
  });
});

describe(`examples on ${RUNTIME}`, () => {
  it(`examples/${RUNTIME}.ts serves curl and stops on SIGTERM`, async () => {
    const http = await startHttp();
    const file = join(ROOT, "examples", `${RUNTIME}.ts`);
    const program = RUNTIME === "deno"
      ? { cmd: process.execPath, args: ["run", "--allow-net", "--allow-env", "--allow-read", file] }
      : { cmd: process.execPath, args: [file] };
    const proxy = await spawnProxy([], { ...program, env: { PORT: "0", ALLOW_PRIVATE: "1" } });
    try {
      const r = await curl([
        "--socks5",
        `127.0.0.1:${proxy.port}`,
        `http://127.0.0.1:${http.port}/`,
      ]);
      assert.equal(r.stdout, HTTP_BODY, r.stderr);
    } finally {
      const code = await proxy.stop();
      await http.close();
      assert.equal(code, 0);
    }
    assert.match(proxy.output(), /"reply":"granted"/);
  });
});
