#!/usr/bin/env node
// `npm start`: runs the CLI from source. Plain JavaScript, so that a Node too old to run TypeScript
// (before 22.18, which strips types by default) says so in one line instead of dying with
// ERR_UNKNOWN_FILE_EXTENSION before any of our code runs. Deno and Bun run mod.ts directly.
// Usage: npm start -- [flags]   or   node tools/start.mjs [flags]
import process from "node:process";

const NEEDED = [22, 18];

/** True when Node `version` ("22.18.0") can run TypeScript without flags. */
function runsTypeScript(version) {
  const [major, minor] = version.split(".").map(Number);
  return major > NEEDED[0] || (major === NEEDED[0] && minor >= NEEDED[1]);
}

// Bun and Deno report a Node version too, and run TypeScript whatever it is.
const isNode = !("Bun" in globalThis) && !("Deno" in globalThis);
if (isNode && !runsTypeScript(process.versions.node)) {
  console.error(
    `edgesocks needs Node >= ${NEEDED.join(".")} to run from source (or use the npm package); ` +
      `this is Node ${process.versions.node}`,
  );
  process.exit(1);
}
await import("../lib/cli/bin.ts");
