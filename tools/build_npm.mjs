#!/usr/bin/env node
// Builds the npm package from the same sources as the JSR/URL module: tsc emits .js and .d.ts into
// dist/npm (relative .ts imports rewritten to .js), then this writes its package.json with an exports
// map (one subpath per runtime adapter) and a bin, and packs it: dist/edgesocks-VERSION.tgz.
// Usage: node tools/build_npm.mjs   (prints the tarball's path on its last line)
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "npm");
/** Stops the build with one line on standard error. */
const fail = (line) => {
  console.error(`build_npm: ${line}`);
  process.exit(1);
};
const run = (cmd, args, cwd = root) => {
  const r = spawnSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
  const command = `${cmd.replace(root + "/", "")} ${args.join(" ")}`;
  // status is null when the program could not be started at all (r.error says why) or a signal ended it.
  if (r.error) fail(`cannot run ${command}: ${r.error.message}`);
  if (r.status !== 0) {
    fail(`${command} failed (${r.status === null ? `signal ${r.signal}` : `exit ${r.status}`})`);
  }
  return r.stdout;
};

// A fresh clone has no node_modules: install the dev tools (TypeScript among them) first.
const tsc = join(root, "node_modules", ".bin", "tsc");
if (!existsSync(tsc)) {
  console.error("build_npm: node_modules/.bin/tsc is missing; running npm ci");
  const r = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], {
    cwd: root,
    stdio: ["ignore", 2, "inherit"],
  });
  if (r.status !== 0 || !existsSync(tsc)) {
    fail("npm ci did not install TypeScript; run npm ci, then this again");
  }
}

const deno = JSON.parse(readFileSync(join(root, "deno.json"), "utf8"));
rmSync(out, { recursive: true, force: true });
run(tsc, ["-p", "tsconfig.npm.json"]);

const entry = (path) => ({ types: `./${path}.d.ts`, default: `./${path}.js` });
const pkg = {
  name: "edgesocks",
  version: deno.version,
  description: "A SOCKS4/4A/5 proxy with Tor's extensions, for Deno, Bun and Node",
  license: deno.license,
  type: "module",
  engines: { node: ">=20" },
  main: "./mod.js",
  types: "./mod.d.ts",
  exports: {
    ".": entry("mod"),
    "./node": entry("lib/adapters/node"),
    "./bun": entry("lib/adapters/bun"),
    "./deno": entry("lib/adapters/deno"),
    "./workerd": entry("lib/adapters/workerd"),
    "./workerd/worker": entry("lib/cli/workerd"),
    "./deno/serve": entry("lib/cli/deno_serve"),
  },
  bin: { edgesocks: "./lib/cli/bin.js" },
  files: ["**/*.js", "**/*.d.ts", "README.md"],
  keywords: ["socks", "socks5", "socks4", "proxy", "tor", "deno", "bun", "node"],
};
writeFileSync(join(out, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
copyFileSync(join(root, "README.md"), join(out, "README.md"));
const tarball = run("npm", ["pack", "--silent", "--pack-destination", join(root, "dist")], out).trim().split(
  "\n",
).pop();
console.log(join(root, "dist", tarball));
