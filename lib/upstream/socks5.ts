/**
 * A SOCKS upstream (`socks5h://`, `socks5://`, `socks4a://`, `socks4://`):
 * the request goes on through another SOCKS server, driven by the sans-IO
 * client machine of `core/socks_client.ts`.
 *
 * Where names are resolved decides what the policy can check: `socks5h` and
 * `socks4a` send the name, so only name rules apply to it (the upstream
 * resolves; the after-DNS range check cannot run here); `socks5` and
 * `socks4` resolve here, and every address is checked as for a direct
 * connection. An address literal is always checked here, private ones
 * refused by default.
 *
 * @module
 */
import { canonicalIP, formatHostPort, hostType, type SocksAddress } from "../core/address.ts";
import type { ProxyRequest } from "../core/request.ts";
import {
  type SocksClientAction,
  SocksClientMachine,
  type SocksClientRequest,
  type SocksClientStep,
} from "../core/socks_client.ts";
import { ReplyCode } from "../core/wire.ts";
import { type DestinationPolicy, evaluateDestination, ruleCommand } from "../policy.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { allowedAddresses } from "./direct.ts";
import { credentialsFor, dialHop, drive, type Handshake, type Hop, withEarly } from "./hop.ts";
import { type Opened, type Upstream, UpstreamError } from "./upstream.ts";

/**
 * How a hop is used: credentials passed through or not, and how long the
 * TCP connect to it may take (0: only the connect timeout bounds it).
 *
 * @example
 * ```ts
 * import type { HopOptions } from "@edgesocks/edgesocks";
 * const options: HopOptions = { passthrough: true, dialTimeout: 5_000 };
 * ```
 */
export interface HopOptions {
  /** `--upstream-auth passthrough`: the client's credentials go to the hop. */
  passthrough: boolean;
  /** Milliseconds for the TCP connect to the hop; 0: none of its own. */
  dialTimeout: number;
}

/**
 * What a hop's upstream also says about itself: the hop it goes through.
 *
 * @example
 * ```ts
 * import type { HopUpstream } from "@edgesocks/edgesocks";
 * const resolves = (u: HopUpstream) => u.hop.tor; // speaks Tor's RESOLVE and RESOLVE_PTR
 * ```
 */
export interface HopUpstream extends Upstream {
  /** The hop it goes through. */
  readonly hop: Hop;
}

function refused(message: string): UpstreamError {
  return new UpstreamError(ReplyCode.NotAllowed, message, { code: "refused_policy" });
}

/**
 * Checks a request whose name the upstream resolves: name rules (and `*`
 * rules) decide; address-range rules cannot match a name that is not
 * resolved here, so they are passed over; when no rule matches it goes on.
 */
export function checkRemoteName(request: ProxyRequest, policy: DestinationPolicy): void {
  const command = ruleCommand(request.kind as "connect" | "connect_dir" | "resolve" | "resolve_ptr");
  const name = request.target.host;
  const port = request.kind === "resolve" ? 0 : request.target.port;
  const rules = (policy.rules ?? []).filter((r) => r.cidr === undefined);
  const verdict = evaluateDestination({ command, name, port }, { ...policy, rules });
  if (verdict !== null && verdict !== "undecided") throw refused(`${name} not allowed by policy`);
}

/** The target to send to the hop, checked by the policy here as far as it can be. */
async function targetFor(
  hop: Hop,
  request: ProxyRequest,
  policy: DestinationPolicy,
  resolver: Resolver,
): Promise<SocksAddress> {
  const literal = canonicalIP(request.target.host);
  const remote = hop.protocol === "socks5h" || hop.protocol === "socks4a" || hop.protocol === "http";
  if (literal || !remote) {
    const addresses = await allowedAddresses(resolver, request, policy);
    const pick = hop.protocol === "socks4" || hop.protocol === "socks4a"
      ? addresses.find((a) => !a.includes(":"))
      : addresses[0];
    if (pick === undefined) {
      throw new UpstreamError(
        ReplyCode.AddressTypeNotSupported,
        `${request.target.host}: ${hop.protocol} carries IPv4 addresses only`,
        { code: "upstream_failed" },
      );
    }
    return { host: pick, type: hostType(pick), port: request.target.port };
  }
  checkRemoteName(request, policy);
  return request.target;
}

/** The client machine as a {@linkcode Handshake}. */
function socksHandshake(machine: SocksClientMachine): Handshake<SocksClientAction> {
  const of = (step: SocksClientStep) =>
    step.action.type === "need_more" ? { write: step.write } : { write: step.write, result: step.action };
  return {
    start: () => of(machine.start()),
    receive: (chunk) => of(machine.receive(chunk)),
    closed: () => machine.closed().action,
  };
}

/** One request through the hop: connect to it, then its handshake. */
async function exchange(
  hop: Hop,
  request: ProxyRequest,
  client: Omit<SocksClientRequest, "protocol" | "login" | "userId">,
  env: { dial: (o: DialOptions) => Promise<ByteConnection>; resolver: Resolver; options: HopOptions },
  signal: AbortSignal,
): Promise<{ conn: ByteConnection; action: Exclude<SocksClientAction, { type: "need_more" | "failed" }> }> {
  const socks5 = hop.protocol === "socks5" || hop.protocol === "socks5h";
  const creds = credentialsFor(hop, request, env.options.passthrough);
  const full: SocksClientRequest = {
    ...client,
    protocol: socks5 ? "socks5" : hop.protocol === "socks4" ? "socks4" : "socks4a",
    ...(socks5 && creds?.password ? { login: { user: creds.user, password: creds.password } } : {}),
    ...(!socks5 && creds ? { userId: creds.user } : {}),
  };
  const machine = new SocksClientMachine(full);
  const conn = await dialHop(hop, env.dial, env.resolver, signal, env.options.dialTimeout);
  const where = `${hop.name}/${formatHostPort(hop.address)}`;
  const action = await drive(conn, socksHandshake(machine), signal);
  if (action.type === "need_more") throw new TypeError("handshake ended without an answer");
  if (action.type === "failed") {
    conn.close();
    throw new UpstreamError(action.reply as ReplyCode, `upstream ${hop.name}: ${action.reason}`, {
      code: "upstream_failed",
      dialed: where,
    });
  }
  return { conn, action };
}

/**
 * The upstream through a SOCKS hop. RESOLVE and RESOLVE_PTR go to it only
 * when it speaks Tor's extensions (`?tor`); otherwise they are refused with
 * "command not supported" (the router answers them locally when routed `direct`).
 *
 * @example
 * ```ts
 * import { parseHop, socksUpstream, type RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const tor = socksUpstream(parseHop("tor", "socks5h://127.0.0.1:9050?tor"), adapter.dial, adapter.resolver(), {
 *   passthrough: true,
 *   dialTimeout: 0,
 * });
 * ```
 */
export function socksUpstream(
  hop: Hop,
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver: Resolver,
  options: HopOptions,
): HopUpstream {
  const env = { dial, resolver, options };
  const noTor = (kind: string) =>
    new UpstreamError(
      ReplyCode.CommandNotSupported,
      `upstream ${hop.name} does not speak Tor's ${kind} (add ?tor to its URL)`,
      { code: "unsupported" },
    );
  return {
    hop,
    async open(request: ProxyRequest, policy: DestinationPolicy, signal: AbortSignal): Promise<Opened> {
      const target = await targetFor(hop, request, policy, resolver);
      const { conn, action } = await exchange(hop, request, { command: "connect", target }, env, signal);
      if (action.type !== "connected") {
        conn.close();
        throw new UpstreamError(ReplyCode.GeneralFailure, `upstream ${hop.name}: not a CONNECT reply`, {
          code: "upstream_failed",
        });
      }
      return {
        conn: withEarly(conn, action.early),
        bound: action.bound,
        dialed: `${hop.name}/${formatHostPort(hop.address)}`,
      };
    },
    async lookup(request, policy, signal = new AbortController().signal) {
      if (!hop.tor) throw noTor("RESOLVE");
      const literal = canonicalIP(request.target.host);
      if (literal) return literal;
      checkRemoteName(request, policy);
      const { conn, action } = await exchange(
        hop,
        request,
        { command: "resolve", target: { ...request.target, port: 0 } },
        env,
        signal,
      );
      conn.close();
      if (action.type !== "resolved") {
        throw new UpstreamError(ReplyCode.GeneralFailure, `upstream ${hop.name}: not a RESOLVE reply`);
      }
      // An answer is checked as a direct lookup's is: the client would connect to it next.
      const denied = evaluateDestination({
        command: "resolve",
        name: request.target.host,
        ip: action.address,
        port: 0,
      }, policy);
      if (denied !== null && denied !== "undecided") throw refused(`${action.address} not allowed by policy`);
      return action.address;
    },
    async reverse(request, policy, signal = new AbortController().signal) {
      if (!hop.tor) throw noTor("RESOLVE_PTR");
      const ip = request.target.host;
      const denied = evaluateDestination({ command: "resolve", ip, port: 0 }, policy);
      if (denied !== null) throw refused(`${ip} not allowed by policy`);
      const { conn, action } = await exchange(
        hop,
        request,
        { command: "resolve_ptr", target: { ...request.target, port: 0 } },
        env,
        signal,
      );
      conn.close();
      if (action.type !== "resolved_name") {
        throw new UpstreamError(ReplyCode.GeneralFailure, `upstream ${hop.name}: not a RESOLVE_PTR reply`);
      }
      return action.name;
    },
  };
}
