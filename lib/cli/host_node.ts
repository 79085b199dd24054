/**
 * Process services for the CLI on Node and Bun (both provide `node:process`,
 * `node:fs` and `node:child_process`).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import process from "node:process";
import type { CliHost } from "./main.ts";
import { commandLine } from "./_command.ts";
import { WORKER_ENV, workerNumber, type WorkerProcess } from "./workers.ts";

/** The script the runtime runs; undefined in a single binary from `bun build --compile`. */
function ownScript(): string | undefined {
  const script = process.argv[1];
  // Such a binary carries its script inside, at a /$bunfs/ path.
  const embedded = script === undefined || script.startsWith("/$bunfs/") || script.startsWith("B:/~BUN/");
  return embedded ? undefined : script;
}

/** This program's command line, for starting it again: runtime, its flags, the script (unless built in). */
function selfCommand(): string[] {
  const script = ownScript();
  return [process.execPath, ...process.execArgv, ...(script === undefined ? [] : [script])];
}

function spawnWorker(args: string[], worker: { number: number }): WorkerProcess {
  const [cmd, ...base] = selfCommand();
  const child = spawn(cmd, [...base, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, [WORKER_ENV]: String(worker.number) },
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    // Not started at all (the executable vanished): reported like an exit.
    child.once("error", () => resolve(child.exitCode ?? 127));
  });
  // Our end of its standard input stays open while we live; it closing tells the worker to stop.
  child.stdin!.on("error", () => {});
  return {
    pid: child.pid ?? -1,
    stdout: child.stdout!,
    exited,
    kill: (signal) => {
      try {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, signal);
      } catch { /* already gone */ }
    },
  };
}

// Whoever reads our standard output may go (a worker's supervisor that was killed, `| head`): the lines
// have nowhere to go then, which must not crash a server that is serving or stopping.
process.stdout.on("error", () => {});

/** The CLI host backed by `node:process`. */
export const nodeHost: CliHost = {
  args: () => process.argv.slice(2),
  command: () =>
    commandLine({
      execPath: process.execPath,
      script: ownScript(),
      cwd: process.cwd(),
      path: process.env.PATH,
      npmEvent: process.env.npm_lifecycle_event,
      npmCommand: process.env.npm_command,
    }),
  readTextFile: (path) => readFile(path, "utf8"),
  onSignal: (signal, fn) => void process.on(signal, fn),
  exit: (code) => process.exit(code),
  stdout: (line) => void process.stdout.write(line + "\n"),
  stderr: (line) => void process.stderr.write(line + "\n"),
  writeStdout: (bytes) => void process.stdout.write(bytes),
  worker: () => workerNumber(process.env[WORKER_ENV]),
  spawnWorker,
  onStdinEnd: (fn) => {
    process.stdin.on("end", fn);
    process.stdin.on("error", fn);
    process.stdin.resume();
  },
  cpus: () => availableParallelism(),
};
