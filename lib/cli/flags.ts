/**
 * The command line's flags, written once: {@linkcode FLAGS} is the table that
 * the parser ({@linkcode parseArgs}), the `--help` text ({@linkcode flagHelp})
 * and the supervisor's worker command line (`workerArgs` in `workers.ts`)
 * all read, so a flag added here is parsed, documented and passed on to
 * `--workers` processes with no other edit.
 *
 * @module
 */
import type { HostPort } from "../runtime.ts";
import { canonicalIP, parseIPv6 } from "../core/address.ts";
import type { LogMode } from "../ops/log.ts";
import { type Cidr, type DestinationRule, parseCidr, parseRule } from "../policy.ts";
import { DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, type ListenAddress } from "../serve.ts";
import { DEFAULT_TIMEOUTS } from "../rules.ts";
import { DEFAULT_AUTH_BACKOFF } from "../admission.ts";
import { DEFAULT_PROXY_PROTOCOL_TIMEOUT } from "../ingress/proxy_protocol.ts";
import { type Hop, parseHop } from "../upstream/hop.ts";
import { parseRoute, type Route } from "../upstream/route.ts";
import { UDP_DEFAULTS } from "../upstream/udp.ts";

/** Parsed command line. */
export interface CliOptions {
  /** `--listen`, in order (TCP addresses and Unix socket paths); the default address when none was given. */
  listen: ListenAddress[];
  /** `--allow` and `--deny`, in order. */
  rules: DestinationRule[];
  /** `--allow-client` and `--deny-client`, in order. */
  clientRules: { action: "allow" | "deny"; cidr: Cidr }[];
  /** `--max-connections`; 0: no cap. */
  maxConnections: number;
  /** `--max-connections-per-client`; 0: no cap. */
  maxConnectionsPerClient: number;
  /** `--users`: the users file's path. */
  usersFile?: string;
  /** `--allow-private`. */
  allowPrivate: boolean;
  /** `--deny-connect-dir`. */
  denyConnectDir: boolean;
  /** `--hide-bound-address`. */
  hideBoundAddress: boolean;
  /** `--conceal-refusals`. */
  concealRefusals: boolean;
  /** `--client-prefix-v6`: IPv6 clients count per this prefix length. */
  clientPrefixV6: number;
  /** `--auth-backoff`: failures, window and block in milliseconds, or false (`off`). */
  authBackoff: { failures: number; windowMs: number; blockMs: number } | false;
  /** `--dns`: the nameserver. */
  dns?: HostPort;
  /** `--log`. */
  log: LogMode;
  /** `--handshake-timeout`, in milliseconds; 0: none. */
  handshakeTimeout: number;
  /** `--connect-timeout`, in milliseconds; 0: none. */
  connectTimeout: number;
  /** `--idle-timeout`, in milliseconds; 0: none. */
  idleTimeout: number;
  /** `--udp`: serve UDP ASSOCIATE. */
  udp?: boolean;
  /** `--udp-advertise`: the address UDP ASSOCIATE replies carry. */
  udpAdvertise?: string;
  /** `--udp-ports`: the ports relay sockets bind to. */
  udpPorts?: [number, number];
  /** `--udp-rate`: datagrams per second per association. */
  udpRate?: number;
  /** Worker processes sharing the listen addresses; 1: this process serves. */
  workers: number | "auto";
  /** `--proxy-protocol`: every listener requires a PROXY protocol (v1 or v2) header. */
  proxyProtocol: boolean;
  /** `--proxy-protocol-from`, in order; empty: the default (loopback). */
  proxyProtocolFrom: Cidr[];
  /** `--proxy-protocol-timeout`, in milliseconds. */
  proxyProtocolTimeout: number;
  /** `--config`: the JSON file holding flags. */
  configFile?: string;
  /** `--upstream`, in order. */
  upstreams: Hop[];
  /** `--route`, in order. */
  routes: Route[];
  /** `--upstream-auth`: the URL's credentials only, or the client's passed through. */
  upstreamAuth: "url" | "passthrough";
  /** `--listen-ws`, in order: SOCKS over WebSocket. */
  listenWs: (HostPort & { path: string })[];
  /** `--ws-token-file`: the file holding the WebSocket bearer token. */
  wsTokenFile?: string;
  /** `--ws-cert`: PEM certificate chain for wss:// on the --listen-ws addresses. */
  wsCert?: string;
  /** `--ws-key`: PEM private key for `--ws-cert`. */
  wsKey?: string;
  /** `--bind`: serve BIND. */
  bind?: boolean;
  /** `--bind-address`: where BIND listens instead of the control connection's local address. */
  bindAddress?: string;
  /** `--http-connect`: serve HTTP CONNECT on the SOCKS port. */
  httpConnect?: boolean;
  /** `--help`. */
  help: boolean;
  /** `--version`. */
  version: boolean;
}

/**
 * What the `--workers` supervisor does with a flag: `pass` gives it to every
 * worker as the user wrote it; `supervisor` leaves the user's out, because
 * the supervisor passes its own (`--listen`: the addresses the first worker
 * bound, `--max-connections`: each worker's share, `--workers`: none).
 */
export type WorkerPolicy = "pass" | "supervisor";

/** What every row of {@linkcode FLAGS} says. */
export interface FlagBase {
  /** The long name, with its dashes: `--listen`. */
  readonly name: string;
  /** Other spellings, e.g. `-h`. */
  readonly aliases?: readonly string[];
  /** The `--help` text, one paragraph (wrapped when printed). */
  readonly help: string;
  /** What `--workers` does with it. */
  readonly workers: WorkerPolicy;
}

/** A flag that stands alone (`--allow-private`). */
export interface BooleanFlag extends FlagBase {
  /** None: the flag takes no value. */
  readonly value?: undefined;
  /** Records the flag in `opts`. */
  apply(opts: CliOptions): void;
}

/** A flag followed by a value (`--listen HOST:PORT` or `--listen=HOST:PORT`). */
export interface ValueFlag extends FlagBase {
  /** The value's placeholder in `--help`: `HOST:PORT`. */
  readonly value: string;
  /** A value the flag accepts (for the tests, which check every flag with it). */
  readonly example: string;
  /** Parses `value` into `opts`; throws a TypeError with a message for the user on bad input. */
  apply(opts: CliOptions, value: string): void;
}

/** One row of {@linkcode FLAGS}. */
export type Flag = BooleanFlag | ValueFlag;

/**
 * Parses `HOST:PORT` or `[V6]:PORT`; with `defaultPort`, the port may be left out.
 *
 * @example
 * ```ts
 * parseHostPort("[::1]:1080"); // { host: "::1", port: 1080 }
 * parseHostPort("127.0.0.1", 53); // { host: "127.0.0.1", port: 53 }
 * ```
 */
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
  if (!host || port === undefined || !/^\d+$/.test(port)) {
    throw new TypeError(`expected HOST:PORT, got ${JSON.stringify(text)}`);
  }
  if (Number(port) > 65535) throw new TypeError(`port out of range (0 to 65535) in ${JSON.stringify(text)}`);
  return { host, port: Number(port) };
}

/**
 * Parses `--listen-ws`'s `HOST:PORT/PATH` (`[V6]:PORT/PATH`); the path
 * starts at the first `/` after the port and defaults to `/`.
 *
 * @example
 * ```ts
 * parseWebSocketListen("127.0.0.1:8080/socks"); // { host: "127.0.0.1", port: 8080, path: "/socks" }
 * ```
 */
export function parseWebSocketListen(text: string): HostPort & { path: string } {
  const m = /^(\[[^\]]+\]|[^/]*?)(?::(\d*))?(\/.*)?$/.exec(text);
  const hostPort = m ? `${m[1]}${m[2] !== undefined ? `:${m[2]}` : ""}` : text;
  const path = m?.[3] ?? "/";
  if (/[\s?#]/.test(path)) throw new TypeError(`--listen-ws: bad path in ${JSON.stringify(text)}`);
  return { ...hostPortOf("--listen-ws", hostPort), path };
}

/** {@linkcode parseHostPort} for `flag`, whose name starts its errors. */
function hostPortOf(flag: string, text: string, defaultPort?: number): HostPort {
  try {
    return parseHostPort(text, defaultPort);
  } catch (error) {
    throw new TypeError(`${flag}: ${(error as Error).message}`);
  }
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

/** Every flag of the command line, in the order `--help` lists them. */
export const FLAGS: readonly Flag[] = [
  {
    name: "--listen",
    value: "HOST:PORT",
    example: "[::1]:1090",
    help: `listen address, repeatable (default ${DEFAULT_LISTEN.host}:${DEFAULT_LISTEN.port}); ` +
      "IPv6 as [::1]:1080; port 0 picks a free port; unix:PATH for a Unix socket",
    workers: "supervisor",
    apply: (opts, value) => {
      if (!value.startsWith("unix:")) return void opts.listen.push(hostPortOf("--listen", value));
      if (value.length === 5) {
        throw new TypeError("--listen unix: needs a path, as in unix:/run/edgesocks.sock");
      }
      opts.listen.push({ path: value.slice(5) });
    },
  },
  {
    name: "--users",
    value: "FILE",
    example: "users.txt",
    help: "require RFC 1929 username/password; one user:password per line (split at the first colon). " +
      "SOCKS4 is refused when set",
    workers: "pass",
    apply: (opts, value) => void (opts.usersFile = value),
  },
  {
    name: "--allow-private",
    help: "allow destinations that are not globally reachable (loopback, private, link-local, CGNAT, " +
      "documentation, multicast, ...) and the proxy host's own addresses (all refused by default)",
    workers: "pass",
    apply: (opts) => void (opts.allowPrivate = true),
  },
  {
    name: "--deny-connect-dir",
    help: "refuse Tor's CONNECT_DIR (0xF2) command",
    workers: "pass",
    apply: (opts) => void (opts.denyConnectDir = true),
  },
  {
    name: "--hide-bound-address",
    help: "CONNECT replies carry 0.0.0.0:0 instead of the outbound socket's address and port (which can " +
      "tell a client the proxy's address behind NAT)",
    workers: "pass",
    apply: (opts) => void (opts.hideBoundAddress = true),
  },
  {
    name: "--conceal-refusals",
    help: "answer a name refused by policy with 0x04 (host unreachable), as a name that does not exist, " +
      "instead of 0x02, which tells a client that the name exists",
    workers: "pass",
    apply: (opts) => void (opts.concealRefusals = true),
  },
  {
    name: "--allow",
    value: "RULE",
    example: "connect@10.0.0.0/8:443",
    help: "allow destinations matching RULE, repeatable; --allow and --deny rules are checked in order " +
      "(first match wins) before the defaults. RULE is [COMMANDS@]TARGET[:PORTS] where COMMANDS is a " +
      "comma list of connect, connect_dir, resolve, bind; TARGET an address, CIDR range ([v6/len] with a port), " +
      "host name, *.domain or *; PORTS N or N-M. e.g. --allow 10.0.0.0/8:443",
    workers: "pass",
    apply: (opts, value) => void opts.rules.push(parseRule("allow", value)),
  },
  {
    name: "--deny",
    value: "RULE",
    example: "resolve@*.corp.example",
    help:
      "refuse destinations matching RULE (as for --allow), repeatable. e.g. --deny 'resolve@*.corp.example'",
    workers: "pass",
    apply: (opts, value) => void opts.rules.push(parseRule("deny", value)),
  },
  {
    name: "--allow-client",
    value: "CIDR",
    example: "127.0.0.0/8",
    help: "only these clients may connect (repeatable)",
    workers: "pass",
    apply: (opts, value) => void opts.clientRules.push({ action: "allow", cidr: parseCidr(value) }),
  },
  {
    name: "--deny-client",
    value: "CIDR",
    example: "[fd00::]/8",
    help: "refuse these clients (repeatable; first match wins)",
    workers: "pass",
    apply: (opts, value) => void opts.clientRules.push({ action: "deny", cidr: parseCidr(value) }),
  },
  {
    name: "--max-connections",
    value: "N",
    example: "500",
    help: `connections served at once, more are closed (default ${DEFAULT_MAX_CONNECTIONS}; 0 = no cap)`,
    workers: "supervisor",
    apply: (opts, value) => void (opts.maxConnections = count("--max-connections", value)),
  },
  {
    name: "--max-connections-per-client",
    value: "N",
    example: "20",
    help: "connections per client address (default 0 = no cap)",
    workers: "pass",
    apply: (opts, value) =>
      void (opts.maxConnectionsPerClient = count("--max-connections-per-client", value)),
  },
  {
    name: "--client-prefix-v6",
    value: "BITS",
    example: "56",
    help: "IPv6 clients count as one per this prefix for --max-connections-per-client and the login " +
      "backoff (default 64; 128: each address on its own)",
    workers: "pass",
    apply: (opts, value) => {
      const bits = count("--client-prefix-v6", value);
      if (bits < 1 || bits > 128) throw new TypeError(`--client-prefix-v6 needs 1 to 128, got ${value}`);
      opts.clientPrefixV6 = bits;
    },
  },
  {
    name: "--auth-backoff",
    value: "N/SEC/SEC|off",
    example: "5/60/300",
    help: "after N failed logins from a client within the first SEC, refuse its new connections for the " +
      "second SEC (default 10/60/60; off: never)",
    workers: "pass",
    apply: (opts, value) => {
      if (value === "off") return void (opts.authBackoff = false);
      const m = /^(\d{1,6})\/(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(value);
      if (!m || Number(m[1]) < 1) {
        throw new TypeError(
          `--auth-backoff needs N/SEC/SEC (e.g. 10/60/60) or off, got ${JSON.stringify(value)}`,
        );
      }
      opts.authBackoff = {
        failures: Number(m[1]),
        windowMs: seconds("--auth-backoff", m[2]),
        blockMs: seconds("--auth-backoff", m[3]),
      };
    },
  },
  {
    name: "--dns",
    value: "HOST[:PORT]",
    example: "127.0.0.1:5353",
    help: "nameserver for RESOLVE, RESOLVE_PTR and CONNECT by name (default: the system's resolver)",
    workers: "pass",
    apply: (opts, value) => void (opts.dns = hostPortOf("--dns", value, 53)),
  },
  {
    name: "--log",
    value: "text|json|quiet",
    example: "json",
    help: "one line per connection (default quiet)",
    workers: "pass",
    apply: (opts, value) => {
      if (value !== "text" && value !== "json" && value !== "quiet") {
        throw new TypeError(`--log must be text, json or quiet, got ${JSON.stringify(value)}`);
      }
      opts.log = value;
    },
  },
  {
    name: "--handshake-timeout",
    value: "SEC",
    example: "5",
    help: `time to complete the handshake (default ${DEFAULT_TIMEOUTS.handshake / 1000}; 0 = none)`,
    workers: "pass",
    apply: (opts, value) => void (opts.handshakeTimeout = seconds("--handshake-timeout", value)),
  },
  {
    name: "--connect-timeout",
    value: "SEC",
    example: "2.5",
    help: `time for DNS + connect (default ${DEFAULT_TIMEOUTS.connect / 1000}; 0 = none)`,
    workers: "pass",
    apply: (opts, value) => void (opts.connectTimeout = seconds("--connect-timeout", value)),
  },
  {
    name: "--idle-timeout",
    value: "SEC",
    example: "60",
    help: `close tunnels idle this long (default ${DEFAULT_TIMEOUTS.idle / 1000}; 0 = none)`,
    workers: "pass",
    apply: (opts, value) => void (opts.idleTimeout = seconds("--idle-timeout", value)),
  },
  {
    name: "--udp",
    help: "serve UDP ASSOCIATE (off by default: 0x07); every datagram goes through the destination policy " +
      "(rule command udp)",
    workers: "pass",
    apply: (opts) => void (opts.udp = true),
  },
  {
    name: "--udp-advertise",
    value: "IP",
    example: "203.0.113.7",
    help: "the address UDP ASSOCIATE replies carry (NAT, containers); default: the address the client " +
      "connected to",
    workers: "pass",
    apply: (opts, value) => {
      const ip = canonicalIP(value.replace(/^\[(.*)\]$/, "$1"));
      if (ip === null || ip === "0.0.0.0" || ip === "::") {
        throw new TypeError(
          `--udp-advertise needs an IP address other than 0.0.0.0 and ::, got ${JSON.stringify(value)}`,
        );
      }
      opts.udpAdvertise = ip;
    },
  },
  {
    name: "--udp-ports",
    value: "A-B",
    example: "40000-40999",
    help: "the ports UDP relay sockets bind to (default: any free port)",
    workers: "pass",
    apply: (opts, value) => {
      const m = /^(\d{1,5})-(\d{1,5})$/.exec(value);
      const [lo, hi] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
      if (!m || lo < 1 || lo > hi || hi > 65535) {
        throw new TypeError(`--udp-ports needs A-B with 1 <= A <= B <= 65535, got ${JSON.stringify(value)}`);
      }
      opts.udpPorts = [lo, hi];
    },
  },
  {
    name: "--udp-rate",
    value: "N",
    example: "50000",
    help: `datagrams per second through one UDP association, both ways together; more are dropped ` +
      `(default ${UDP_DEFAULTS.datagramsPerSecond}; 0 = no cap)`,
    workers: "pass",
    apply: (opts, value) => void (opts.udpRate = count("--udp-rate", value)),
  },
  {
    name: "--workers",
    value: "N|auto",
    example: "auto",
    help: "N processes serve the same addresses (SO_REUSEPORT, Linux), so every core is used; auto: one " +
      "per CPU (default 1). The caps above then apply per worker (--max-connections is split)",
    workers: "supervisor",
    apply: (opts, value) => {
      if (value === "auto") opts.workers = "auto";
      else if (/^\d{1,3}$/.test(value) && Number(value) >= 1 && Number(value) <= 256) {
        opts.workers = Number(value);
      } else {
        throw new TypeError(`--workers needs a number from 1 to 256 or auto, got ${JSON.stringify(value)}`);
      }
    },
  },
  {
    name: "--proxy-protocol",
    help: "every listener requires a PROXY protocol header (v1 or v2, as HAProxy's send-proxy and " +
      "send-proxy-v2 send), from the sources --proxy-protocol-from trusts; its client is then the client " +
      "for client rules, caps and logs. Connections without a valid header are closed without a reply",
    workers: "pass",
    apply: (opts) => void (opts.proxyProtocol = true),
  },
  {
    name: "--proxy-protocol-from",
    value: "CIDR",
    example: "10.0.0.0/24",
    help: "peers trusted to send a PROXY header (the load balancers), repeatable (default 127.0.0.0/8 " +
      "and ::1); others are closed",
    workers: "pass",
    apply: (opts, value) => void opts.proxyProtocolFrom.push(parseCidr(value)),
  },
  {
    name: "--proxy-protocol-timeout",
    value: "SEC",
    example: "2.5",
    help: `time for the PROXY header to arrive (default ${DEFAULT_PROXY_PROTOCOL_TIMEOUT / 1000})`,
    workers: "pass",
    apply: (opts, value) => {
      const ms = seconds("--proxy-protocol-timeout", value);
      if (ms === 0) throw new TypeError("--proxy-protocol-timeout needs more than 0 seconds");
      opts.proxyProtocolTimeout = ms;
    },
  },
  {
    name: "--config",
    value: "FILE",
    example: "edgesocks.json",
    help: "read flags from a JSON object whose keys are the long flag names without dashes " +
      '({"listen": ["0.0.0.0:1080"], "users": "users.txt", "allow-private": true}); a repeatable flag ' +
      "takes an array. A flag given on the command line replaces that key",
    workers: "pass",
    apply: (opts, value) => void (opts.configFile = value),
  },
  {
    name: "--upstream",
    value: "NAME=URL",
    example: "tor=socks5h://127.0.0.1:9050?tor",
    help: "an upstream proxy that --route can name, repeatable. URL is socks5h:// (names resolved by the " +
      "upstream), socks5:// (resolved here), socks4a://, socks4:// or http:// (CONNECT), with optional " +
      "USER:PASS@ (percent-encoded), HOST:PORT, and ?tor for a SOCKS5 upstream that speaks Tor's RESOLVE " +
      "and RESOLVE_PTR",
    workers: "pass",
    apply: (opts, value) => {
      const eq = value.indexOf("=");
      if (eq <= 0) throw new TypeError(`--upstream needs NAME=URL, got ${JSON.stringify(value)}`);
      opts.upstreams.push(parseHop(value.slice(0, eq), value.slice(eq + 1)));
    },
  },
  {
    name: "--route",
    value: "RULE=NAME[,NAME]",
    example: "*.onion=tor",
    help: "send requests matching RULE (as for --allow) through the upstream NAME, repeatable; the first " +
      "matching route wins, the rest go direct. Several names are tried in order while one cannot be " +
      "reached; 'direct' is no upstream. RESOLVE and RESOLVE_PTR follow their route only to direct or to a " +
      "?tor upstream (else they are refused). e.g. --route 'connect@*.corp.example=corp,direct'",
    workers: "pass",
    apply: (opts, value) => void opts.routes.push(parseRoute(value)),
  },
  {
    name: "--upstream-auth",
    value: "url|passthrough",
    example: "passthrough",
    help: "credentials for upstreams: url (default) sends those of the upstream's URL; passthrough sends " +
      "the client's own (RFC 1929 user and password byte for byte to SOCKS5, as HTTP Basic to http://, the " +
      "user id or user name to SOCKS4), and the URL's for a client that gave none. With passthrough and no " +
      "--users, a client that offers username/password is asked for it and any is accepted",
    workers: "pass",
    apply: (opts, value) => {
      if (value !== "url" && value !== "passthrough") {
        throw new TypeError(`--upstream-auth must be url or passthrough, got ${JSON.stringify(value)}`);
      }
      opts.upstreamAuth = value;
    },
  },
  {
    name: "--listen-ws",
    value: "HOST:PORT/PATH",
    example: "127.0.0.1:8080/socks",
    help: "also (or, without --listen, only) take SOCKS over WebSocket at http://HOST:PORT/PATH, " +
      "repeatable: one WebSocket per SOCKS connection, for hosts that pass only HTTP (see `bridge`). " +
      "A non-loopback HOST needs --ws-token-file",
    workers: "pass",
    apply: (opts, value) => void opts.listenWs.push(parseWebSocketListen(value)),
  },
  {
    name: "--ws-token-file",
    value: "FILE",
    example: "token.txt",
    help: "the bearer token (the file's first line) every --listen-ws upgrade must carry, as " +
      "`Authorization: Bearer TOKEN` or a `edgesocks.token.BASE64URL` subprotocol; others get HTTP 401",
    workers: "pass",
    apply: (opts, value) => void (opts.wsTokenFile = value),
  },
  {
    name: "--ws-cert",
    value: "FILE",
    example: "cert.pem",
    help: "serve --listen-ws over TLS (wss://) with this PEM certificate chain (needs --ws-key)",
    workers: "pass",
    apply: (opts, value) => void (opts.wsCert = value),
  },
  {
    name: "--ws-key",
    value: "FILE",
    example: "key.pem",
    help: "the PEM private key for --ws-cert",
    workers: "pass",
    apply: (opts, value) => void (opts.wsKey = value),
  },
  {
    name: "--bind",
    help: "serve BIND (SOCKS4 and SOCKS5, e.g. active FTP): listen on the address the client reached the " +
      "proxy on, for one connection from the request's address only (checked by the destination policy, " +
      "rule command bind), within the connect timeout",
    workers: "pass",
    apply: (opts) => void (opts.bind = true),
  },
  {
    name: "--bind-address",
    value: "IP",
    example: "192.0.2.10",
    help: "BIND listens on this address of the host (the one targets can reach) instead of the address the " +
      "client reached the proxy on; implies nothing without --bind",
    workers: "pass",
    apply: (opts, value) => {
      const ip = canonicalIP(value);
      if (ip === null) {
        throw new TypeError(`--bind-address needs an IP address, got ${JSON.stringify(value)}`);
      }
      opts.bindAddress = ip;
    },
  },
  {
    name: "--http-connect",
    help: "serve HTTP CONNECT host:port on the SOCKS port too, under the same destination policy and users " +
      "(Proxy-Authorization: Basic); other HTTP requests still get the 501 page",
    workers: "pass",
    apply: (opts) => void (opts.httpConnect = true),
  },
  {
    name: "--help",
    aliases: ["-h"],
    help: "show this help",
    workers: "pass",
    apply: (opts) => void (opts.help = true),
  },
  {
    name: "--version",
    aliases: ["-V"],
    help: "print the version",
    workers: "pass",
    apply: (opts) => void (opts.version = true),
  },
];

/** Finds the row of `flag` (a name or an alias) in `flags`. */
export function findFlag(flag: string, flags: readonly Flag[] = FLAGS): Flag | undefined {
  return flags.find((f) => f.name === flag || f.aliases?.includes(flag));
}

/** Parses the command line; throws a TypeError with a message for the user on bad input. */
export function parseArgs(args: string[], flags: readonly Flag[] = FLAGS): CliOptions {
  const opts: CliOptions = {
    listen: [],
    rules: [],
    clientRules: [],
    maxConnections: DEFAULT_MAX_CONNECTIONS,
    maxConnectionsPerClient: 0,
    allowPrivate: false,
    denyConnectDir: false,
    hideBoundAddress: false,
    concealRefusals: false,
    clientPrefixV6: 64,
    authBackoff: { ...DEFAULT_AUTH_BACKOFF },
    log: "quiet",
    handshakeTimeout: DEFAULT_TIMEOUTS.handshake,
    connectTimeout: DEFAULT_TIMEOUTS.connect,
    idleTimeout: DEFAULT_TIMEOUTS.idle,
    workers: 1,
    proxyProtocol: false,
    proxyProtocolFrom: [],
    proxyProtocolTimeout: DEFAULT_PROXY_PROTOCOL_TIMEOUT,
    upstreams: [],
    routes: [],
    upstreamAuth: "url",
    listenWs: [],
    help: false,
    version: false,
  };
  for (let i = 0; i < args.length; i++) {
    let name = args[i];
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (name.startsWith("--") && eq > 0) [name, value] = [name.slice(0, eq), name.slice(eq + 1)];
    const flag = findFlag(name, flags);
    if (!flag) throw new TypeError(`unknown argument ${JSON.stringify(args[i])} (see --help)`);
    if (flag.value === undefined) {
      flag.apply(opts);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= args.length) throw new TypeError(`${name} needs a value`);
      value = args[++i];
    }
    flag.apply(opts, value);
  }
  if (opts.listen.length === 0 && opts.listenWs.length === 0) opts.listen.push(DEFAULT_LISTEN);
  return opts;
}

const HELP_WIDTH = 100;
const HELP_COLUMN = 29;

/** Word-wraps `text` to lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

/** The flags part of `--help`: one entry per row of `flags`, its help wrapped beside it. */
export function flagHelp(flags: readonly Flag[] = FLAGS): string {
  const out: string[] = [];
  for (const flag of flags) {
    const names = [flag.name, ...(flag.aliases ?? [])].join(", ");
    const left = `  ${names}${flag.value === undefined ? "" : ` ${flag.value}`}`;
    const text = wrap(flag.help, HELP_WIDTH - HELP_COLUMN);
    const pad = " ".repeat(HELP_COLUMN);
    if (left.length + 1 > HELP_COLUMN) out.push(left);
    else out.push(left.padEnd(HELP_COLUMN) + text.shift());
    for (const line of text) out.push(pad + line);
  }
  return out.join("\n");
}
