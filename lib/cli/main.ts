/**
 * The command line: flags → options → a running server, with a startup line,
 * a loud warning for open proxies, and a clean stop on SIGINT/SIGTERM.
 *
 * @module
 */
import { parseUsers } from "../auth.ts";
import type { HostPort, RuntimeAdapter } from "../runtime.ts";
import { formatHostPort, parseIPv6 } from "../core/address.ts";
import { createLogger, type LogMode } from "../ops/log.ts";
import { type Cidr, type DestinationRule, parseCidr, parseRule } from "../policy.ts";
import {
  DEFAULT_LISTEN,
  DEFAULT_MAX_CONNECTIONS,
  isLoopbackHost,
  serve,
  type ServeOptions,
  type SocksServer,
} from "../serve.ts";
import { DEFAULT_TIMEOUTS } from "../rules.ts";
import { VERSION } from "../version.ts";
import { readyLine, supervise, type WorkerProcess } from "./workers.ts";

/** Process services the CLI needs, one implementation per runtime. */
export interface CliHost {
  /** Command-line arguments after the script. */
  args(): string[];
  /** Reads a UTF-8 file. */
  readTextFile(path: string): Promise<string>;
  /** Calls `fn` on the signal. */
  onSignal(signal: "SIGINT" | "SIGTERM", fn: () => void): void;
  /** Ends the process. */
  exit(code: number): void;
  /** Writes a line to standard output. */
  stdout(line: string): void;
  /** Writes a line to standard error. */
  stderr(line: string): void;
  /** Writes bytes to standard output as they are (a worker's log, copied through). */
  writeStdout(bytes: Uint8Array): void;
  /** True in a worker process started by `--workers`. */
  isWorker(): boolean;
  /** Starts this program again as a worker with `args`; absent where the runtime cannot. */
  spawnWorker?(args: string[], usersFile?: string): WorkerProcess;
  /** Calls `fn` once standard input ends (in a worker: the supervisor has gone). */
  onStdinEnd(fn: () => void): void;
  /** Number of CPUs, for `--workers auto`. */
  cpus(): number;
}

/** Parsed command line. */
export interface CliOptions {
  listen: HostPort[];
  rules: DestinationRule[];
  clientRules: { action: "allow" | "deny"; cidr: Cidr }[];
  maxConnections: number;
  maxConnectionsPerClient: number;
  usersFile?: string;
  allowPrivate: boolean;
  denyConnectDir: boolean;
  dns?: HostPort;
  log: LogMode;
  handshakeTimeout: number;
  connectTimeout: number;
  idleTimeout: number;
  /** Worker processes sharing the listen addresses; 1: this process serves. */
  workers: number | "auto";
  help: boolean;
  version: boolean;
}

/** The `--help` text. */
export const USAGE = `edgesocks ${VERSION} - a SOCKS4/4A/5 proxy with Tor's extensions

Usage: deno run -A mod.ts [flags]   |   bun mod.ts [flags]   |   node mod.ts [flags]

  --listen HOST:PORT         listen address, repeatable (default ${DEFAULT_LISTEN.host}:${DEFAULT_LISTEN.port});
                             IPv6 as [::1]:1080; port 0 picks a free port
  --users FILE               require RFC 1929 username/password; one user:password per line
                             (split at the first colon). SOCKS4 is refused when set
  --allow-private            allow loopback, private, link-local, CGNAT, multicast and
                             unspecified destinations (refused by default)
  --deny-connect-dir         refuse Tor's CONNECT_DIR (0xF2) command
  --allow RULE, --deny RULE  destination rules, repeatable, first match wins, checked before the
                             defaults: [COMMANDS@]TARGET[:PORTS] where COMMANDS is a comma list of
                             connect, connect_dir, resolve; TARGET an address, CIDR range
                             ([v6/len] with a port), host name, *.domain or *; PORTS N or N-M.
                             e.g. --allow 10.0.0.0/8:443  --deny 'resolve@*.corp.example'
  --allow-client CIDR        only these clients may connect (repeatable)
  --deny-client CIDR         refuse these clients (repeatable; first match wins)
  --max-connections N        connections served at once, more are closed (default ${DEFAULT_MAX_CONNECTIONS}; 0 = no cap)
  --max-connections-per-client N
                             connections per client address (default 0 = no cap)
  --dns HOST[:PORT]          nameserver for RESOLVE, RESOLVE_PTR and CONNECT by name
                             (default: the system's resolver)
  --log text|json|quiet      one line per connection (default quiet)
  --handshake-timeout SEC    time to complete the handshake (default ${
  DEFAULT_TIMEOUTS.handshake / 1000
}; 0 = none)
  --connect-timeout SEC      time for DNS + connect (default ${DEFAULT_TIMEOUTS.connect / 1000}; 0 = none)
  --idle-timeout SEC         close tunnels idle this long (default ${DEFAULT_TIMEOUTS.idle / 1000}; 0 = none)
  --workers N|auto           N processes serve the same addresses (SO_REUSEPORT, Linux), so
                             every core is used; auto: one per CPU (default 1). The caps
                             above then apply per worker (--max-connections is split)
  --help                     show this help
  --version                  print the version
`;

/** Parses `HOST:PORT` or `[V6]:PORT`; with `defaultPort`, the port may be left out. */
export function parseHostPort(text: string, defaultPort?: number): HostPort {
  let host: string, port: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracket) [host, port] = [bracket[1], bracket[2]];
  else if (parseIPv6(text)) [host, port] = [text, undefined];
  else {
    const colon = text.lastIndexOf(":");
    [host, port] = colon < 0 ? [text, undefined] : [text.slice(0, colon), text.slice(colon + 1)];
  }
  if (port === undefined && defaultPort !== undefined) port = String(defaultPort);
  if (!host || port === undefined || !/^\d{1,5}$/.test(port) || Number(port) > 65535) {
    throw new TypeError(`expected HOST:PORT, got ${JSON.stringify(text)}`);
  }
  return { host, port: Number(port) };
}

function seconds(flag: string, value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value)) {
    throw new TypeError(`${flag} needs a number of seconds, got ${JSON.stringify(value)}`);
  }
  return Math.round(Number(value) * 1000);
}

function count(flag: string, value: string): number {
  if (!/^\d{1,9}$/.test(value)) {
    throw new TypeError(`${flag} needs a whole number, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** Parses the command line; throws a TypeError with a message for the user on bad input. */
export function parseArgs(args: string[]): CliOptions {
  const opts: CliOptions = {
    listen: [],
    rules: [],
    clientRules: [],
    maxConnections: DEFAULT_MAX_CONNECTIONS,
    maxConnectionsPerClient: 0,
    allowPrivate: false,
    denyConnectDir: false,
    log: "quiet",
    handshakeTimeout: DEFAULT_TIMEOUTS.handshake,
    connectTimeout: DEFAULT_TIMEOUTS.connect,
    idleTimeout: DEFAULT_TIMEOUTS.idle,
    workers: 1,
    help: false,
    version: false,
  };
  for (let i = 0; i < args.length; i++) {
    let flag = args[i];
    let value: string | undefined;
    const eq = flag.indexOf("=");
    if (flag.startsWith("--") && eq > 0) [flag, value] = [flag.slice(0, eq), flag.slice(eq + 1)];
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= args.length) throw new TypeError(`${flag} needs a value`);
      return args[++i];
    };
    switch (flag) {
      case "--listen":
        opts.listen.push(parseHostPort(take()));
        break;
      case "--users":
        opts.usersFile = take();
        break;
      case "--allow-private":
        opts.allowPrivate = true;
        break;
      case "--deny-connect-dir":
        opts.denyConnectDir = true;
        break;
      case "--allow":
      case "--deny":
        opts.rules.push(parseRule(flag === "--allow" ? "allow" : "deny", take()));
        break;
      case "--allow-client":
      case "--deny-client":
        opts.clientRules.push({
          action: flag === "--allow-client" ? "allow" : "deny",
          cidr: parseCidr(take()),
        });
        break;
      case "--max-connections":
        opts.maxConnections = count(flag, take());
        break;
      case "--max-connections-per-client":
        opts.maxConnectionsPerClient = count(flag, take());
        break;
      case "--dns":
        opts.dns = parseHostPort(take(), 53);
        break;
      case "--log": {
        const mode = take();
        if (mode !== "text" && mode !== "json" && mode !== "quiet") {
          throw new TypeError(`--log must be text, json or quiet, got ${JSON.stringify(mode)}`);
        }
        opts.log = mode;
        break;
      }
      case "--handshake-timeout":
        opts.handshakeTimeout = seconds(flag, take());
        break;
      case "--connect-timeout":
        opts.connectTimeout = seconds(flag, take());
        break;
      case "--idle-timeout":
        opts.idleTimeout = seconds(flag, take());
        break;
      case "--workers": {
        const v = take();
        if (v === "auto") opts.workers = "auto";
        else if (/^\d{1,3}$/.test(v) && Number(v) >= 1 && Number(v) <= 256) opts.workers = Number(v);
        else throw new TypeError(`--workers needs a number from 1 to 256 or auto, got ${JSON.stringify(v)}`);
        break;
      }
      case "--help":
      case "-h":
        opts.help = true;
        break;
      case "--version":
      case "-V":
        opts.version = true;
        break;
      default:
        throw new TypeError(`unknown argument ${JSON.stringify(args[i])} (see --help)`);
    }
  }
  if (opts.listen.length === 0) opts.listen.push(DEFAULT_LISTEN);
  return opts;
}

/** Runs the CLI on `adapter` with `host`'s process services. Resolves once the server is listening. */
export async function main(adapter: RuntimeAdapter, host: CliHost): Promise<void> {
  let opts: CliOptions;
  let users: Map<string, string> | undefined;
  try {
    opts = parseArgs(host.args());
    if (opts.usersFile !== undefined) {
      users = parseUsers(await host.readTextFile(opts.usersFile));
      if (users.size === 0) throw new TypeError(`--users ${opts.usersFile}: no users in the file`);
    }
  } catch (error) {
    host.stderr(`edgesocks: ${error instanceof Error ? error.message : String(error)}`);
    return host.exit(2);
  }
  if (opts.help) return host.stdout(USAGE);
  if (opts.version) return host.stdout(`edgesocks ${VERSION}`);

  const options: ServeOptions = {
    listen: opts.listen,
    users,
    dns: opts.dns,
    policy: { allowPrivate: opts.allowPrivate, allowConnectDir: !opts.denyConnectDir, rules: opts.rules },
    clientPolicy: { rules: opts.clientRules },
    maxConnections: opts.maxConnections,
    maxConnectionsPerClient: opts.maxConnectionsPerClient,
    timeouts: { handshake: opts.handshakeTimeout, connect: opts.connectTimeout, idle: opts.idleTimeout },
    onLog: createLogger(opts.log, host.stdout),
    onAcceptError: (error, failures) =>
      host.stderr(
        `edgesocks: cannot accept connections (${failures}x in the last second): ${
          error instanceof Error ? error.message : String(error)
        }; still listening`,
      ),
  };
  const auth = users ? `username/password (${users.size} user${users.size === 1 ? "" : "s"})` : "none";
  const startupLine = (addresses: HostPort[], workers?: number) =>
    `edgesocks ${VERSION} on ${adapter.name}: listening on ${addresses.map(formatHostPort).join(", ")}` +
    ` (auth: ${auth}${opts.allowPrivate ? ", private destinations allowed" : ""}${
      workers ? `, ${workers} workers` : ""
    })`;
  const warnIfOpen = () => {
    if (!users && opts.listen.some((a) => !isLoopbackHost(a.host))) {
      host.stderr(
        "WARNING: edgesocks is listening on a non-loopback address with no users configured: " +
          "this is an OPEN PROXY that anyone who can reach it may use. Pass --users FILE.",
      );
    }
  };
  const worker = host.isWorker();
  const workers = worker ? 1 : opts.workers === "auto" ? Math.max(1, host.cpus()) : opts.workers;
  if (workers > 1) {
    if (!host.spawnWorker) {
      host.stderr(`edgesocks: --workers is not available on ${adapter.name}`);
      return host.exit(2);
    }
    const spawnWorker = host.spawnWorker.bind(host);
    const addresses = await supervise({ ...host, spawnWorker: (args) => spawnWorker(args, opts.usersFile) }, {
      count: workers,
      args: host.args(),
      listen: opts.listen,
      maxConnections: opts.maxConnections,
    });
    if (!addresses) return;
    host.stdout(startupLine(addresses, workers));
    return warnIfOpen();
  }
  if (worker) options.reusePort = true;

  // Signal handlers go in before anything else: a stop request that arrives while starting (or right
  // after the startup line) must still end in a clean exit, and Deno cannot set them up later if the
  // process has run out of descriptors by then.
  let server: SocksServer | undefined;
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (!server) return host.exit(0);
    server.close().then(() => host.exit(0), () => host.exit(1));
  };
  host.onSignal("SIGINT", stop);
  host.onSignal("SIGTERM", stop);
  // A worker whose supervisor has gone (its end of our standard input closed) stops too.
  if (worker) host.onStdinEnd(stop);
  try {
    server = await serve(adapter, options);
  } catch (error) {
    host.stderr(`edgesocks: cannot listen: ${error instanceof Error ? error.message : String(error)}`);
    return host.exit(1);
  }
  if (worker) host.stdout(readyLine(server.addresses));
  else {
    host.stdout(startupLine(server.addresses));
    warnIfOpen();
  }
  if (stopping) await server.close().then(() => host.exit(0), () => host.exit(1));
}
