#!/usr/bin/env node
// Checks that every symbol exported by the public entry points (the `exports` of deno.json: mod.ts and the
// three runtime adapters) has a JSDoc example: an `@example` tag or a fenced code block in its doc.
// Reads `deno doc --json` (the version 2 shape of Deno 2.x; the flat array of Deno 1.x is accepted too).
// Usage: node tools/check_docs.mjs   (exits 1 and lists the symbols without an example)
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const deno = join(root, "node_modules", ".bin", "deno");
const entryPoints = Object.values(JSON.parse(readFileSync(join(root, "deno.json"), "utf8")).exports);

const fail = (message, code = 2) => {
  console.error(`check_docs: ${message}`);
  process.exit(code);
};

const r = spawnSync(deno, ["doc", "--json", ...entryPoints], {
  cwd: root,
  encoding: "utf8",
  env: { ...process.env, NO_COLOR: "1" },
  maxBuffer: 256 * 1024 * 1024,
});
if (r.error) fail(`cannot run ${deno}: ${r.error.message}`);
if (r.status !== 0) fail(`deno doc --json failed with ${r.status}:\n${r.stderr}`);
const json = JSON.parse(r.stdout);

/** Yields { entry, name, declarations } for each exported symbol, whatever the output's version. */
function* exportedSymbols(doc) {
  if (Array.isArray(doc)) {
    // Deno 1.x: one flat node per declaration, each carrying its own name.
    for (const node of doc) {
      if (node.kind === "import" || node.kind === "moduleDoc" || node.declarationKind === "private") continue;
      yield { entry: node.location?.filename ?? "?", name: node.name, declarations: [node] };
    }
    return;
  }
  if (doc?.version !== 2 || typeof doc.nodes !== "object") {
    fail(`unknown deno doc output (version ${doc?.version})`);
  }
  for (const [entry, module] of Object.entries(doc.nodes)) {
    for (const symbol of module.symbols ?? []) {
      const declarations = (symbol.declarations ?? []).filter((d) => d.declarationKind !== "private");
      if (declarations.length > 0) yield { entry, name: symbol.name, declarations };
    }
  }
}

const hasExample = (jsDoc) =>
  !!jsDoc && ((jsDoc.tags ?? []).some((t) => t.kind === "example") || /```/.test(jsDoc.doc ?? ""));

const rel = (url) => (url?.startsWith("file:") ? relative(root, fileURLToPath(url)) : String(url));
const where = (location) => (location ? `${rel(location.filename)}:${location.line}` : "unknown location");

const seen = new Set();
const missing = [];
for (const { entry, name, declarations } of exportedSymbols(json)) {
  // A name exported twice (a constant and its type, or from two entry points) is one symbol.
  const first = declarations[0].location;
  const key = `${name}@${first?.filename}:${first?.line}`;
  if (seen.has(key)) continue;
  seen.add(key);
  // A constant and the type of the same name share one doc page: an example on either serves both.
  if (declarations.some((d) => hasExample(d.jsDoc))) continue;
  const kinds = declarations.map((d) => d.kind).join("+");
  missing.push(`  ${name} (${kinds}) at ${where(first)}, exported by ${rel(entry)}`);
}

if (seen.size === 0) fail("deno doc listed no exported symbols; its output format may have changed");
if (missing.length > 0) {
  console.error(`docs: ${missing.length} of ${seen.size} exported symbols have no example:`);
  console.error(missing.join("\n"));
  process.exit(1);
}
console.log(`docs: ${seen.size} exported symbols, all with examples`);
