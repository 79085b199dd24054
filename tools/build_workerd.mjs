#!/usr/bin/env node
// Builds the workerd worker: bundles lib/cli/workerd.ts (TypeScript, many modules) into the one ES module a
// workerd config embeds, with Bun's bundler (a dev dependency; no esbuild needed). `cloudflare:sockets` stays
// an import that workerd resolves. Reproducible: no minifying, no source map, no timestamp in the output.
// Usage: node tools/build_workerd.mjs [OUTFILE]   (default examples/workerd/edgesocks.js; prints the path)
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outfile = resolve(process.argv[2] ?? join(root, "examples", "workerd", "edgesocks.js"));
const bun = join(root, "node_modules", ".bin", "bun");
if (!existsSync(bun)) {
  console.error("build_workerd: node_modules/.bin/bun is missing; run npm ci first");
  process.exit(1);
}
mkdirSync(dirname(outfile), { recursive: true });
const r = spawnSync(bun, [
  "build",
  join(root, "lib", "cli", "workerd.ts"),
  "--target=browser",
  "--format=esm",
  "--external",
  "cloudflare:sockets",
  "--outfile",
  outfile,
], { cwd: root, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
if (r.error || r.status !== 0) {
  console.error(`build_workerd: bun build failed (${r.error?.message ?? `exit ${r.status}`})`);
  process.exit(1);
}
// Bun names the input by its absolute path in a comment at the top: make it relative, so the bundle is the
// same from any checkout.
const text = readFileSync(outfile, "utf8").split(root + "/").join("");
writeFileSync(outfile, text);
console.log(outfile);
