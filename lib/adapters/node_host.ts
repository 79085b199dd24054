/**
 * Process services for the CLI on Node and Bun (both provide `node:process`
 * and `node:fs`).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import process from "node:process";
import type { CliHost } from "../cli.ts";

/** The CLI host backed by `node:process`. */
export const nodeHost: CliHost = {
  args: () => process.argv.slice(2),
  readTextFile: (path) => readFile(path, "utf8"),
  onSignal: (signal, fn) => void process.on(signal, fn),
  exit: (code) => process.exit(code),
  stdout: (line) => void process.stdout.write(line + "\n"),
  stderr: (line) => void process.stderr.write(line + "\n"),
};
