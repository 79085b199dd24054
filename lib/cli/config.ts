/**
 * `--config FILE`: the flags of {@linkcode FLAGS}, in a JSON object. Every
 * key is a long flag name without its dashes, so a flag added to the table
 * is a config key with no other edit; a repeatable flag (one whose values add
 * up) takes an array. The file's flags come first and the command line's
 * after them; a flag given on the command line replaces that key of the file.
 *
 * {@linkcode loadOptions} is the whole step from arguments to options, and is
 * pure apart from reading the file: call it again to re-read the file.
 *
 * @module
 */
import { type CliOptions, findFlag, type Flag, FLAGS, parseArgs } from "./flags.ts";
import { readFailure } from "./errors.ts";

/** True when giving `flag` twice adds up rather than replaces (`--listen`, `--allow`, ...). */
function repeatable(flag: Flag): boolean {
  if (flag.value === undefined) return false;
  const once = parseArgs([flag.name, flag.example], [flag]);
  const twice = parseArgs([flag.name, flag.example, flag.name, flag.example], [flag]);
  return JSON.stringify(once) !== JSON.stringify(twice);
}

/** The long names (`--listen`) of the flags `args` gives. */
function givenFlags(args: string[], flags: readonly Flag[]): Set<string> {
  const given = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const eq = args[i].startsWith("--") ? args[i].indexOf("=") : -1;
    const flag = findFlag(eq > 0 ? args[i].slice(0, eq) : args[i], flags);
    if (!flag) continue;
    given.add(flag.name);
    if (eq < 0 && flag.value !== undefined) i++;
  }
  return given;
}

const TYPE_NAME = (v: unknown) => v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;

/**
 * The command-line arguments a parsed config file stands for, each key
 * checked against `flags` (by applying it): an unknown key, a value of the
 * wrong type or one the flag refuses throws a TypeError naming `file` and
 * the key. Keys in `skip` (long names with dashes) are left out: the command
 * line gives those.
 *
 * @example
 * ```ts
 * import { configArgs } from "./config.ts";
 * configArgs({ listen: ["[::1]:1080"], "allow-private": true, "idle-timeout": 60 }, "edgesocks.json");
 * // ["--listen", "[::1]:1080", "--allow-private", "--idle-timeout", "60"]
 * ```
 */
export function configArgs(
  config: unknown,
  file: string,
  flags: readonly Flag[] = FLAGS,
  skip: ReadonlySet<string> = new Set(),
): string[] {
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new TypeError(`config file ${file}: must hold a JSON object of flags, not ${TYPE_NAME(config)}`);
  }
  const out: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    const bad = (why: string) => new TypeError(`config file ${file}, key ${JSON.stringify(key)}: ${why}`);
    const flag = flags.find((f) => f.name === `--${key}`);
    if (!flag || key.startsWith("-")) {
      throw bad("unknown key (keys are the long flag names without dashes; see --help)");
    }
    if (flag.name === "--config") throw bad("a config file cannot name another");
    if (skip.has(flag.name)) continue;
    if (flag.value === undefined) {
      if (typeof value !== "boolean") throw bad(`must be true or false, not ${TYPE_NAME(value)}`);
      if (value) out.push(flag.name);
      continue;
    }
    const many = repeatable(flag);
    const values = many && Array.isArray(value) ? value : [value];
    const scratch = parseArgs([], flags);
    for (const v of values) {
      if (typeof v !== "string" && typeof v !== "number") {
        throw bad(
          `must be ${many ? "a string or an array of strings" : "a string"} (${flag.value}), not ${
            TYPE_NAME(v)
          }`,
        );
      }
      try {
        flag.apply(scratch, String(v));
      } catch (error) {
        throw bad(error instanceof Error ? error.message : String(error));
      }
      out.push(flag.name, String(v));
    }
  }
  return out;
}

/**
 * Reads the command line and, when it names one with `--config`, the config
 * file: the options both give (the command line's flags replacing the file's
 * keys), checked. Throws a TypeError with one line for the user on any
 * problem. Pure apart from `readTextFile`: a reload (SIGHUP) calls it again
 * with the same arguments to read the file anew.
 *
 * @example
 * ```ts
 * import { loadOptions } from "./config.ts";
 * declare const readTextFile: (path: string) => Promise<string>;
 * const opts = await loadOptions(["--config", "/etc/edgesocks.json", "--log", "text"], readTextFile);
 * ```
 */
export async function loadOptions(
  args: string[],
  readTextFile: (path: string) => Promise<string>,
  flags: readonly Flag[] = FLAGS,
): Promise<CliOptions> {
  let opts = parseArgs(args, flags);
  const path = opts.configFile;
  if (path !== undefined) {
    let text: string;
    try {
      text = await readTextFile(path);
    } catch (error) {
      throw new TypeError(readFailure("config file", path, error));
    }
    let config: unknown;
    try {
      config = JSON.parse(text);
    } catch (error) {
      throw new TypeError(
        `config file ${path}: not valid JSON (${error instanceof Error ? error.message : error})`,
      );
    }
    opts = parseArgs([...configArgs(config, path, flags, givenFlags(args, flags)), ...args], flags);
  }
  if (opts.proxyProtocolFrom.length > 0 && !opts.proxyProtocol) {
    throw new TypeError("--proxy-protocol-from is for --proxy-protocol, which is not given");
  }
  return opts;
}
