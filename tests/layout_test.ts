/**
 * The layout's one rule, checked on the source: imports run one way, from
 * the program down to the sans-IO core, and never in a cycle. Each room of
 * lib/ has a rank; a module may import its own rank or lower ones only.
 * Adapters sit beside the rest: they import only the core, the adapter
 * contract (runtime.ts) and the relay, and nothing but lib/cli/ imports them.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "./_fixtures.ts";

/** Every .ts file under lib/, relative to the repository root. */
function libFiles(dir = join(ROOT, "lib")): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return libFiles(path);
    return name.endsWith(".ts") ? [relative(ROOT, path)] : [];
  });
}

/** The relative modules `file` imports (static, re-exported or dynamic), comments (and their examples) left out. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]);
  return specs.map((s) => relative(ROOT, resolve(join(ROOT, dirname(file)), s)));
}

/** The rank of a module: lower ranks never import higher ones. */
function rank(file: string): number {
  if (file.startsWith("lib/core/")) return 0;
  if (file === "lib/runtime.ts" || file === "lib/version.ts") return 1;
  if (/^lib\/(policy|auth|admission|rules|record|relay|streams|tunnels|_[a-z_]+)\.ts$/.test(file)) return 2;
  if (file.startsWith("lib/ingress/") || file.startsWith("lib/upstream/")) return 3;
  if (file === "lib/session.ts" || file === "lib/commands.ts") return 4;
  if (file === "lib/serve.ts") return 5;
  if (file.startsWith("lib/ops/")) return 6;
  if (file.startsWith("lib/cli/")) return 7;
  if (file.startsWith("lib/adapters/")) return 2.5;
  throw new Error(`${file}: no room in the layout (add it to tests/layout_test.ts)`);
}

const files = libFiles();
const graph = new Map(files.map((f) => [f, importsOf(f)]));

describe("layout", () => {
  it("every module of lib/ has a room", () => {
    for (const f of files) assert.doesNotThrow(() => rank(f), f);
  });

  it("imports run one way: from the program down to the core", () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      for (const dep of deps) {
        if (!dep.startsWith("lib/")) continue;
        const adapter = file.startsWith("lib/adapters/");
        const toAdapter = dep.startsWith("lib/adapters/");
        const ok = adapter
          ? dep.startsWith("lib/core/") || dep === "lib/runtime.ts" || dep === "lib/relay.ts" || toAdapter
          : toAdapter
          ? file.startsWith("lib/cli/")
          : rank(dep) <= rank(file);
        if (!ok) wrong.push(`${file} → ${dep}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it("no import cycle", () => {
    const state = new Map<string, "visiting" | "done">();
    const cycles: string[] = [];
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === "done") return;
      if (state.get(file) === "visiting") {
        cycles.push([...path.slice(path.indexOf(file)), file].join(" → "));
        return;
      }
      state.set(file, "visiting");
      for (const dep of graph.get(file) ?? []) if (graph.has(dep)) visit(dep, [...path, file]);
      state.set(file, "done");
    };
    for (const f of files) visit(f, []);
    assert.deepEqual(cycles, []);
  });

  it("the checks see the imports they judge (a module known to import others)", () => {
    assert.ok(graph.get("lib/session.ts")!.includes("lib/core/socks_server.ts"));
    assert.ok(graph.get("lib/cli/detect.ts")!.some((d) => d.startsWith("lib/adapters/")));
  });
});
