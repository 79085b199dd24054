/**
 * Process services for the CLI on Deno.
 *
 * @module
 */
import type { CliHost } from "../cli.ts";

const encoder = new TextEncoder();

/** The CLI host backed by the `Deno` namespace. */
export const denoHost: CliHost = {
  args: () => [...Deno.args],
  readTextFile: (path) => Deno.readTextFile(path),
  onSignal: (signal, fn) => Deno.addSignalListener(signal, fn),
  exit: (code) => Deno.exit(code),
  stdout: (line) => void Deno.stdout.writeSync(encoder.encode(line + "\n")),
  stderr: (line) => void Deno.stderr.writeSync(encoder.encode(line + "\n")),
};
