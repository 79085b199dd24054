/**
 * The command line: flags → options → a running server, with a startup line,
 * a loud warning for open proxies, and a clean stop on SIGINT/SIGTERM.
 *
 * @module
 */
import { parseUsers } from "../auth.ts";
import type { HostPort, RuntimeAdapter } from "../runtime.ts";
import { formatHostPort } from "../core/address.ts";
import { createLogger, type LogMode } from "../ops/log.ts";
import type { ConnectionLog } from "../session.ts";
import { isLoopbackHost, serve, type ServeOptions, type SocksServer, type WebSocketServe } from "../serve.ts";
import { VERSION } from "../version.ts";
import { listenFailure, readFailure, reasonOf } from "./errors.ts";
import { type CliOptions, flagHelp } from "./flags.ts";
import { loadOptions } from "./config.ts";
import { checkChain } from "../upstream/route.ts";
import { readyLine, stoppedLine, stoppingLine, supervise, type WorkerProcess } from "./workers.ts";

/** Process services the CLI needs, one implementation per runtime. */
export interface CliHost {
  /** Command-line arguments after the script. */
  args(): string[];
  /**
   * The command that started this program, without its arguments, as a person would type it again:
   * `node mod.ts`, `deno run -A mod.ts`, `npx edgesocks`, `./edgesocks` (a single binary).
   */
  command(): string;
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
  /** In a worker process started by `--workers`, its number (1 to N); otherwise undefined. */
  worker(): number | undefined;
  /**
   * Starts this program again as worker `number` with `args` (and, on Deno, leave to read
   * `usersFile`); absent where the runtime cannot.
   */
  spawnWorker?(args: string[], worker: { number: number; usersFile?: string }): WorkerProcess;
  /** Calls `fn` once standard input ends (in a worker: the supervisor has gone). */
  onStdinEnd(fn: () => void): void;
  /** Number of CPUs, for `--workers auto`. */
  cpus(): number;
}

/** The `--help` text, naming `command` (what started this program: `node mod.ts`, `npx edgesocks`). */
export function usage(command: string): string {
  return `edgesocks ${VERSION} - a SOCKS4/4A/5 proxy with Tor's extensions

Usage: ${command} [flags]

${flagHelp()}

Examples:
  ${command}
      serve on 127.0.0.1:1080, no auth, public destinations only; try it with
      curl --socks5-hostname 127.0.0.1:1080 https://example.com/
  ${command} --listen 0.0.0.0:1080 --users users.txt --log text
      serve the network, for the users in users.txt (lines of user:password), one log line per connection
  ${command} --allow-private --allow-client 10.0.0.0/8 --workers auto
      reach private addresses too, only for clients in 10.0.0.0/8, on every core
`;
}

/**
 * The log hook: createLogger's, with the worker's number on every record in a `--workers` worker
 * (text: `worker=N` at the end of the line; JSON: a `worker` member).
 */
function logger(
  mode: LogMode,
  write: (line: string) => void,
  worker: number | undefined,
): ((e: ConnectionLog) => void) | undefined {
  if (worker === undefined || mode === "quiet") return createLogger(mode, write);
  if (mode === "text") return createLogger(mode, (line) => write(`${line} worker=${worker}`));
  const log = createLogger(mode, write)!;
  return (entry) => log({ ...entry, worker } as ConnectionLog);
}

/** What the CLI says when accepting starts failing: out of descriptors above all, and what to do about it. */
export function acceptFailure(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "EMFILE" || code === "ENFILE" || /too many open files/i.test(message)) {
    return `out of file descriptors: cannot accept new connections (${message}); still listening. ` +
      "Raise the limit (ulimit -n, systemd's LimitNOFILE=) or lower --max-connections";
  }
  return `cannot accept connections (${message}); still listening`;
}

/** The line for a Unix socket listen that failed: a socket file left by a process gone needs removing. */
function unixListenFailure(path: string, error: unknown): string {
  const reason = reasonOf(error);
  const stale = reason === "address already in use"
    ? " (a file is there: remove it if no server uses it any more)"
    : "";
  return `cannot listen on unix:${path}: ${reason}${stale}`;
}

/**
 * What the startup line says about UDP ASSOCIATE when `--udp` is given: on, or off and why. A
 * supervisor speaks for its workers, which Deno runs with --unstable-net (host_deno.ts): the one thing
 * its own adapter may lack.
 */
function udpNote(adapter: RuntimeAdapter, opts: CliOptions, workers?: number): string {
  if (!opts.udp) return "";
  if (adapter.udp || (workers && adapter.udpUnavailable?.includes("--unstable-net"))) {
    return ", UDP ASSOCIATE on";
  }
  return `, UDP ASSOCIATE off: ${adapter.udpUnavailable ?? `no UDP on ${adapter.name}`}`;
}

/** Reads and parses the users file; throws a TypeError naming the file (and the line) on failure. */
async function readUsers(host: CliHost, path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await host.readTextFile(path);
  } catch (error) {
    throw new TypeError(readFailure("users file", path, error));
  }
  let users: Map<string, string>;
  try {
    users = parseUsers(text);
  } catch (error) {
    // parseUsers says "users file line N: ..." and knows no path.
    const message = error instanceof Error ? error.message : String(error);
    const line = /^users file line (\d+): (.*)$/s.exec(message);
    throw new TypeError(
      line ? `users file ${path}, line ${line[1]}: ${line[2]}` : `users file ${path}: ${message}`,
    );
  }
  if (users.size === 0) throw new TypeError(`users file ${path}: no users in it`);
  return users;
}

/**
 * `--listen-ws`'s options: the token and certificate files read, and a
 * non-loopback address without a token refused (an open proxy on the web).
 */
async function webSocketOptions(host: CliHost, opts: CliOptions): Promise<WebSocketServe | undefined> {
  const read = async (what: string, path: string) => {
    try {
      return await host.readTextFile(path);
    } catch (error) {
      throw new TypeError(readFailure(what, path, error));
    }
  };
  if ((opts.wsCert === undefined) !== (opts.wsKey === undefined)) {
    throw new TypeError("--ws-cert and --ws-key go together");
  }
  if (opts.listenWs.length === 0) {
    if (opts.wsTokenFile !== undefined || opts.wsCert !== undefined) {
      throw new TypeError("--ws-token-file, --ws-cert and --ws-key need --listen-ws");
    }
    return undefined;
  }
  let token: string | undefined;
  if (opts.wsTokenFile !== undefined) {
    token = (await read("token file", opts.wsTokenFile)).split(/\r?\n/)[0].trim();
    if (!token) throw new TypeError(`token file ${opts.wsTokenFile}: its first line is empty`);
    if (/\s/.test(token)) throw new TypeError(`token file ${opts.wsTokenFile}: the token has a space in it`);
  } else {
    const open = opts.listenWs.find((a) => !isLoopbackHost(a.host));
    if (open) {
      throw new TypeError(
        `--listen-ws ${formatHostPort(open)}${open.path} is not a loopback address: it needs --ws-token-file`,
      );
    }
  }
  const tls = opts.wsCert !== undefined && opts.wsKey !== undefined
    ? { cert: await read("certificate file", opts.wsCert), key: await read("key file", opts.wsKey) }
    : undefined;
  return { listen: opts.listenWs, token, tls };
}

/** Runs the CLI on `adapter` with `host`'s process services. Resolves once the server is listening. */
export async function main(adapter: RuntimeAdapter, host: CliHost): Promise<void> {
  if (host.args()[0] === "bridge") return (await import("./bridge.ts")).bridgeMain(adapter, host);
  let opts: CliOptions;
  let users: Map<string, string> | undefined;
  let webSocket: WebSocketServe | undefined;
  try {
    opts = await loadOptions(host.args(), (path) => host.readTextFile(path));
    checkChain(opts);
    if (opts.usersFile !== undefined) users = await readUsers(host, opts.usersFile);
    webSocket = await webSocketOptions(host, opts);
  } catch (error) {
    host.stderr(`edgesocks: ${error instanceof Error ? error.message : String(error)}`);
    return host.exit(2);
  }
  if (opts.help) return host.stdout(usage(host.command()));
  if (opts.version) return host.stdout(`edgesocks ${VERSION}`);

  const whoIs = host.worker() ? `worker ${host.worker()} ` : "";
  const options: ServeOptions = {
    listen: opts.listen,
    users,
    dns: opts.dns,
    policy: { allowPrivate: opts.allowPrivate, allowConnectDir: !opts.denyConnectDir, rules: opts.rules },
    clientPolicy: { rules: opts.clientRules },
    maxConnections: opts.maxConnections,
    maxConnectionsPerClient: opts.maxConnectionsPerClient,
    clientPrefixV6: opts.clientPrefixV6,
    authBackoff: opts.authBackoff,
    hideBoundAddress: opts.hideBoundAddress,
    concealRefusals: opts.concealRefusals,
    ...(opts.bind ? { bind: true } : {}),
    ...(opts.bindAddress !== undefined ? { bindAddress: opts.bindAddress } : {}),
    ...(opts.httpConnect ? { httpConnect: true } : {}),
    timeouts: { handshake: opts.handshakeTimeout, connect: opts.connectTimeout, idle: opts.idleTimeout },
    ...(opts.udp
      ? { udp: { advertise: opts.udpAdvertise, ports: opts.udpPorts, datagramsPerSecond: opts.udpRate } }
      : {}),
    onLog: logger(opts.log, host.stdout, host.worker()),
    proxyProtocol: opts.proxyProtocol && {
      ...(opts.proxyProtocolFrom.length > 0 ? { from: opts.proxyProtocolFrom } : {}),
      timeout: opts.proxyProtocolTimeout,
    },
    chain: {
      upstreams: opts.upstreams,
      routes: opts.routes,
      passthrough: opts.upstreamAuth === "passthrough",
    },
    webSocket,
    // One line when accepting starts failing, one when it works again (serve() makes it one episode).
    onAcceptError: (error) => host.stderr(`edgesocks: ${whoIs}${acceptFailure(error)}`),
    onAcceptRecovered: (ms) =>
      host.stderr(`edgesocks: ${whoIs}accepting connections again after ${(ms / 1000).toFixed(1)} s`),
  };
  const auth = users ? `username/password (${users.size} user${users.size === 1 ? "" : "s"})` : "none";
  // The TCP --listen addresses (a unix:PATH is not one): serve() lists these first in its addresses.
  const tcpListen = opts.listen.filter((a): a is HostPort => "host" in a);
  const startupLine = (addresses: HostPort[], workers?: number, paths: string[] = []) =>
    `edgesocks ${VERSION} on ${adapter.name}: listening on ${
      [
        ...addresses.slice(0, tcpListen.length).map(formatHostPort),
        ...paths.map((p) => `unix:${p}`),
        ...opts.listenWs.map((a, i) =>
          `${webSocket?.tls ? "wss" : "ws"}://${
            formatHostPort(addresses[tcpListen.length + i] ?? a)
          }${a.path}`
        ),
      ].join(", ")
    }` +
    ` (auth: ${auth}${webSocket?.token !== undefined ? ", WebSocket token required" : ""}${
      opts.allowPrivate ? ", private destinations allowed" : ""
    }${opts.proxyProtocol ? ", PROXY protocol required" : ""}${udpNote(adapter, opts, workers)}${
      workers ? `, ${workers} workers` : ""
    })`;
  const warnIfOpen = () => {
    if (!users && opts.listen.some((a) => "host" in a && !isLoopbackHost(a.host))) {
      host.stderr(
        "WARNING: edgesocks is listening on a non-loopback address with no users configured: " +
          "this is an OPEN PROXY that anyone who can reach it may use. Pass --users FILE.",
      );
    }
  };
  const worker = host.worker();
  const workers = worker ? 1 : opts.workers === "auto" ? Math.max(1, host.cpus()) : opts.workers;
  if (workers > 1 && opts.listenWs.some((a) => a.port === 0)) {
    host.stderr("edgesocks: --listen-ws with port 0 cannot be shared by --workers: give a port");
    return host.exit(2);
  }
  if (workers > 1) {
    if (tcpListen.length < opts.listen.length) {
      // SO_REUSEPORT is for TCP: the workers could not share a Unix socket.
      host.stderr("edgesocks: --listen unix: cannot be shared by --workers; run one process per socket");
      return host.exit(2);
    }
    if (!host.spawnWorker) {
      host.stderr(`edgesocks: --workers is not available on ${adapter.name}`);
      return host.exit(2);
    }
    const spawnWorker = host.spawnWorker.bind(host);
    const addresses = await supervise({
      ...host,
      spawnWorker: (args, number) => spawnWorker(args, { number, usersFile: opts.usersFile }),
    }, {
      count: workers,
      args: host.args(),
      listen: tcpListen,
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
  // One line when stopping, once every connection has been closed. A worker tells its supervisor
  // instead, which prints one line for all; a worker whose supervisor has gone says it itself.
  const stop = (why: "SIGINT" | "SIGTERM" | "supervisor gone") => {
    if (stopping) return;
    stopping = true;
    const open = server?.activeConnections ?? 0;
    const report = () => {
      if (worker && why !== "supervisor gone") host.stdout(stoppedLine(open));
      else host.stderr(`edgesocks: ${worker ? `worker ${worker} ` : ""}${stoppingLine(why, open)}`);
    };
    if (!server) return (report(), host.exit(0));
    server.close().then(() => (report(), host.exit(0)), () => host.exit(1));
  };
  host.onSignal("SIGINT", () => stop("SIGINT"));
  host.onSignal("SIGTERM", () => stop("SIGTERM"));
  // A worker whose supervisor has gone (its end of our standard input closed) stops too.
  if (worker) host.onStdinEnd(() => stop("supervisor gone"));
  // Which address a failed listen was for: not every runtime's error says.
  let binding: HostPort | string | undefined;
  const listen: RuntimeAdapter["listen"] = (address, ...rest) => {
    binding = address;
    return adapter.listen(address, ...rest);
  };
  const listenUnix: RuntimeAdapter["listenUnix"] = adapter.listenUnix &&
    ((path, ...rest) => {
      binding = path;
      return adapter.listenUnix!(path, ...rest);
    });
  try {
    server = await serve({ ...adapter, listen, listenUnix }, options);
  } catch (error) {
    host.stderr(
      `edgesocks: ${
        typeof binding === "string"
          ? unixListenFailure(binding, error)
          : binding
          ? listenFailure(binding, error)
          : `cannot listen: ${error instanceof Error ? error.message : error}`
      }`,
    );
    return host.exit(1);
  }
  // (The supervisor hands the first worker's TCP addresses to the others; --listen-ws is passed as given.)
  if (worker) host.stdout(readyLine(server.addresses.slice(0, tcpListen.length)));
  else {
    host.stdout(startupLine(server.addresses, undefined, server.paths));
    warnIfOpen();
  }
  if (stopping) await server.close().then(() => host.exit(0), () => host.exit(1));
}
