/**
 * Process services for the CLI on Deno.
 *
 * @module
 */
import type { CliHost } from "./main.ts";
import { commandLine } from "./_command.ts";
import { WORKER_ENV, workerNumber, type WorkerProcess } from "./workers.ts";

const encoder = new TextEncoder();

const PERMISSIONS = ["net", "read", "write", "env", "sys", "run", "ffi", "import"] as const;

/** `--allow-NAME` for each permission granted for all of its kind. */
function grantedFlags(): string[] {
  const flags: string[] = [];
  for (const name of PERMISSIONS) {
    try {
      if (Deno.permissions.querySync({ name } as Deno.PermissionDescriptor).state === "granted") {
        flags.push(`--allow-${name}`);
      }
    } catch { /* a permission this Deno does not know */ }
  }
  return flags;
}

const granted = (descriptor: Deno.PermissionDescriptor) =>
  Deno.permissions.querySync(descriptor).state === "granted";

/** How this program was started, as `deno run` flags and script (or the `deno compile` binary). */
function command(): string {
  const flags = grantedFlags();
  let cwd = "/";
  try {
    cwd = Deno.cwd();
  } catch { /* not allowed to read it: paths are shown whole */ }
  return commandLine({
    execPath: Deno.execPath(),
    script: Deno.build.standalone ? undefined : Deno.mainModule,
    runtimeArgs: ["run", ...(flags.length === PERMISSIONS.length ? ["-A"] : flags)],
    cwd,
    path: granted({ name: "env", variable: "PATH" }) ? Deno.env.get("PATH") : undefined,
  });
}

/**
 * Permission flags for a worker: those granted to this process for all of a
 * kind, plus reading the users file. A grant limited to some hosts or paths
 * cannot be read back, so it is not passed on (the worker then fails with
 * Deno's own permission error).
 */
function permissionFlags(usersFile?: string): string[] {
  const flags = grantedFlags();
  // The worker must be able to see that it is one.
  if (!flags.includes("--allow-env")) flags.push(`--allow-env=${WORKER_ENV}`);
  if (!flags.includes("--allow-read") && usersFile !== undefined) {
    if (Deno.permissions.querySync({ name: "read", path: usersFile }).state === "granted") {
      flags.push(`--allow-read=${usersFile}`);
    }
  }
  return flags;
}

function spawnWorker(args: string[], worker: { number: number; usersFile?: string }): WorkerProcess {
  // Workers share the port through SO_REUSEPORT, which Deno keeps behind --unstable-net.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--unstable-net",
      ...permissionFlags(worker.usersFile),
      Deno.mainModule,
      ...args,
    ],
    env: { [WORKER_ENV]: String(worker.number) },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Our end of its standard input stays open while we live; it closing tells the worker to stop.
  const stdin = child.stdin.getWriter();
  const exited = child.status.then((s) => (s.signal ? null : s.code));
  exited.finally(() => stdin.close().catch(() => {}));
  return {
    pid: child.pid,
    stdout: child.stdout,
    exited,
    kill: (signal) => {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    },
  };
}

/** Writes all of `bytes` to `out`; a reader that has gone (a worker's supervisor, `| head`) is no error. */
function writeAll(out: typeof Deno.stdout, bytes: Uint8Array): void {
  try {
    for (let off = 0; off < bytes.length;) off += out.writeSync(bytes.subarray(off));
  } catch (error) {
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
  }
}

/** The CLI host backed by the `Deno` namespace. */
export const denoHost: CliHost = {
  args: () => [...Deno.args],
  command,
  readTextFile: (path) => Deno.readTextFile(path),
  onSignal: (signal, fn) => Deno.addSignalListener(signal, fn),
  exit: (code) => Deno.exit(code),
  stdout: (line) => writeAll(Deno.stdout, encoder.encode(line + "\n")),
  stderr: (line) => writeAll(Deno.stderr, encoder.encode(line + "\n")),
  writeStdout: (bytes) => writeAll(Deno.stdout, bytes),
  // Asked only when allowed, so that a plain run never prompts for environment access.
  worker: () =>
    granted({ name: "env", variable: WORKER_ENV }) ? workerNumber(Deno.env.get(WORKER_ENV)) : undefined,
  spawnWorker,
  onStdinEnd: (fn) => {
    void (async () => {
      try {
        for await (const _ of Deno.stdin.readable) { /* nothing is ever sent */ }
      } catch { /* a broken pipe ends it too */ }
      fn();
    })();
  },
  cpus: () => navigator.hardwareConcurrency ?? 1,
};
