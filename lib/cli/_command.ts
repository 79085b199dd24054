/**
 * How `--help` names the command that started it: pure string work on what
 * the process hosts read from their runtime (paths, the working directory,
 * PATH, npm's environment), so that every host words it the same way.
 *
 * @module
 */

/** What a host knows about how this program was started. */
export interface StartedAs {
  /** The runtime's executable, or the single binary's. */
  execPath: string;
  /** The script the runtime runs (a path or a URL); absent for a single binary. */
  script?: string;
  /** Runtime flags to repeat before the script (Deno: `run -A`). */
  runtimeArgs?: string[];
  /** The working directory. */
  cwd: string;
  /** The PATH variable. */
  path?: string;
  /** npm's `npm_lifecycle_event` (`start` under `npm start`), when npm started us. */
  npmEvent?: string;
  /** npm's `npm_command` (`exec` under `npx`), when npm started us. */
  npmCommand?: string;
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

/** `path` as a person would type it from `cwd`: relative when inside it, else absolute. */
function fromCwd(path: string, cwd: string): string {
  const base = cwd.endsWith("/") ? cwd : cwd + "/";
  return path.startsWith(base) ? path.slice(base.length) : path;
}

/** An executable as a person would type it: its name if PATH finds it there, else `./x` or its path. */
function executable(path: string, started: StartedAs): string {
  const dirs = (started.path ?? "").split(":").filter(Boolean).map((d) => d.replace(/\/+$/, ""));
  if (dirs.includes(dirname(path))) return basename(path);
  const rel = fromCwd(path, started.cwd);
  return rel === path ? path : `./${rel}`;
}

/** A script's path or URL as a person would type it. */
function script(text: string, cwd: string): string {
  if (text.startsWith("file://")) text = decodeURIComponent(new URL(text).pathname);
  return fromCwd(text, cwd);
}

/**
 * The command line that started this program, without its arguments:
 * `node mod.ts`, `deno run -A mod.ts`, `npx edgesocks`, `npm start --`, `./edgesocks`.
 *
 * @example
 * ```ts
 * commandLine({ execPath: "/usr/bin/node", script: "/src/edgesocks/mod.ts", cwd: "/src/edgesocks" });
 * // "node mod.ts"
 * ```
 */
export function commandLine(started: StartedAs): string {
  if (started.script === undefined) return executable(started.execPath, started);
  const name = basename(started.script);
  if (name === "start.mjs" && started.npmEvent === "start") return "npm start --";
  // An installed `bin` (a link named edgesocks, no extension): npx, or found on PATH.
  if (!/\.[cm]?[jt]sx?$/.test(name) && !started.script.includes("://")) {
    if (started.npmCommand === "exec") return `npx ${name}`;
    return executable(started.script, started);
  }
  const runtime = basename(started.execPath).replace(/\.exe$/, "");
  return [runtime, ...(started.runtimeArgs ?? []), script(started.script, started.cwd)].join(" ");
}
