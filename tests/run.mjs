#!/usr/bin/env node
// The test command: installs the dev tools if needed (deno, bun and Node 24 come from npm), checks the
// real clients the end-to-end tests drive, then runs the same test files on Deno, Bun and Node.
// Plain JavaScript so that any Node with npm (20 included) can start it: `npm test`.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const sh = (cmd, args, opts = {}) => spawnSync(cmd, args, { cwd: root, stdio: "inherit", ...opts });

if (!["deno", "bun", "node"].every((b) => existsSync(bin(b)))) {
  console.log("# installing dev tools from npm (deno, bun, node 24, fast-check, socks)");
  const r = sh("npm", ["ci", "--no-audit", "--no-fund"]);
  if (r.status !== 0) process.exit(r.status ?? 1);
}

// The real clients the tests run, by the exact name they run them (Debian's ncat package may own `nc`,
// so the tests ask for OpenBSD netcat as nc.openbsd), with the Debian package of each. .ci/run has the
// same list.
const clients = {
  curl: "curl",
  dnsmasq: "dnsmasq-base",
  "nc.openbsd": "netcat-openbsd",
  socat: "socat",
  ss: "iproute2",
  "tor-resolve": "tor",
  python3: "python3",
  "systemd-analyze": "systemd",
  haproxy: "haproxy",
  socksify: "dante-client",
  tnftp: "tnftp",
  ncat: "ncat",
  microsocks: "microsocks",
  danted: "dante-server",
  openssl: "openssl",
};
const missing = Object.entries(clients).filter(([cmd]) =>
  sh("sh", ["-c", `command -v ${cmd} || test -x /usr/sbin/${cmd}`], { stdio: "ignore" }).status !== 0
);
// PySocks, for Debian's own python3 (the UDP ASSOCIATE tests): a module, not a command.
if (sh("/usr/bin/python3", ["-c", "import socks"], { stdio: "ignore" }).status !== 0) {
  missing.push(["python3 socks module", "python3-socks"]);
}
// A Python module rather than a command: the FTP server of the BIND tests.
if (sh("/usr/bin/python3", ["-c", "import pyftpdlib"], { stdio: "ignore" }).status !== 0) {
  missing.push(["pyftpdlib (python module)", "python3-pyftpdlib"]);
}
if (missing.length) {
  console.error(
    `missing test clients: ${missing.map(([c]) => c).join(", ")}; install them with: apt-get install -y ` +
      `${missing.map(([, p]) => p).join(" ")} (.ci/run does this)`,
  );
  process.exit(1);
}

const only = process.argv.slice(2);
const files = readdirSync(join(root, "tests")).filter((f) => f.endsWith("_test.ts")).sort().map((f) =>
  join("tests", f)
);
const env = {
  ...process.env,
  DENO_NO_UPDATE_CHECK: "1",
  PATH: `${join(root, "node_modules", ".bin")}:/usr/sbin:${process.env.PATH}`,
};
const runs = [
  ["deno", [bin("deno"), "test", "-A", "--no-check", ...files]],
  ["bun", [bin("bun"), "test", "--timeout", "120000", ...files.map((f) => `./${f}`)]],
  ["node", [bin("node"), "--test", "--test-timeout=120000", ...files]],
].filter(([name]) => only.length === 0 || only.includes(name));

const failed = [];
for (const [name, [cmd, ...args]] of runs) {
  console.log(`\n# ===== ${name}: ${[cmd.replace(root + "/", ""), ...args].join(" ")}`);
  const r = sh(cmd, args, { env });
  if (r.status !== 0) failed.push(name);
}
// Not an "N passed, N failed" line: the runners' own summaries above count the tests.
console.log(`\n# ${runs.map(([name]) => `${name} ${failed.includes(name) ? "FAILED" : "ok"}`).join(", ")}`);
process.exit(failed.length ? 1 : 0);
