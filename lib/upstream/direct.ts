/**
 * The direct way out: destination policy → DNS → the policy again on each
 * address (after DNS, so a name cannot smuggle in a private address) → dial
 * the allowed addresses in turn.
 *
 * @module
 */
import { canonicalIP } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import type { ProxyRequest } from "../core/request.ts";
import { ReplyCode } from "../core/wire.ts";
import { type DestinationPolicy, evaluateDestination, type RuleCommand, ruleCommand } from "../policy.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { type Opened, type Upstream, UpstreamError } from "./upstream.ts";

type TunnelOrLookup = ProxyRequest & { kind: "connect" | "connect_dir" | "resolve" | "resolve_ptr" };

function refused(message: string, dialed?: string): UpstreamError {
  return new UpstreamError(ReplyCode.NotAllowed, message, {
    code: "refused_policy",
    ...(dialed !== undefined ? { dialed } : {}),
  });
}

/**
 * The addresses a request may use, in preference order: a literal as it is,
 * a name resolved, each checked by the destination policy (a name rule may
 * refuse before any DNS query is sent). An address literal is checked at
 * once, with no promise, for the common case of a client that resolved.
 * Upstreams that resolve here (`socks5://`, `socks4://`) use it too.
 */
export function allowedAddresses(
  resolver: Resolver,
  request: ProxyRequest,
  policy: DestinationPolicy,
): string[] | Promise<string[]> {
  const req = request as TunnelOrLookup;
  const command = ruleCommand(req.kind);
  const literal = canonicalIP(req.target.host);
  const name = literal ? undefined : req.target.host;
  const port = req.kind === "resolve" ? 0 : req.target.port;
  const verdict = name === undefined ? "undecided" : evaluateDestination({ command, name, port }, policy);
  if (verdict !== "undecided" && verdict !== null) throw refused(`${name} not allowed by policy`);
  if (literal) return permitted([literal], command, name, port, policy);
  return resolver.lookup(req.target.host).then(
    (ips) => permitted(ips, command, name, port, policy),
    (error) => {
      throw error instanceof SocksError
        ? new SocksError(error.reply, error.message, { cause: error.cause ?? error, code: "dns_failed" })
        : error;
    },
  );
}

/** The candidates the destination policy allows, in order; throws the refusal when it allows none. */
function permitted(
  candidates: string[],
  command: RuleCommand,
  name: string | undefined,
  port: number,
  policy: DestinationPolicy,
): string[] {
  // (One candidate, the common case of a client that resolved, needs no filtering and no closure.)
  const allowed = candidates.length === 1
    ? evaluateDestination({ command, name, ip: candidates[0], port }, policy) === null ? candidates : []
    : candidates.filter((ip) => evaluateDestination({ command, name, ip, port }, policy) === null);
  if (allowed.length === 0) {
    // Say so when only the default range check stood in the way: that is the one a newcomer meets.
    const open = { ...policy, allowPrivate: true };
    const byDefault = !policy.allowPrivate &&
      candidates.every((ip) => evaluateDestination({ command, name, ip, port }, open) === null);
    const hint = byDefault
      ? " (a private or special-purpose address; allowPrivate / --allow-private lifts this)"
      : "";
    throw refused(`destination ${candidates.join(", ")} not allowed by policy${hint}`, candidates[0]);
  }
  return allowed;
}

/**
 * The direct upstream over a runtime's `dial` and `resolver`.
 *
 * @example
 * ```ts
 * import { directUpstream, type RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const upstream = directUpstream(adapter.dial, adapter.resolver());
 * ```
 */
export function directUpstream(
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver: Resolver,
): Upstream {
  /** Dials the allowed addresses in turn; the first that answers is the tunnel. */
  function open(request: ProxyRequest, policy: DestinationPolicy, signal: AbortSignal): Promise<Opened> {
    const req = request as TunnelOrLookup;
    const port = req.target.port;
    const attempt = (ips: string[], i: number): Promise<Opened> => {
      const dialed = ips[i];
      const opening = dial({ host: dialed, port, signal }).then(
        (conn) => ({ conn, bound: conn.localAddress ?? { host: "0.0.0.0", port: 0 }, dialed }),
        (error) => {
          if (i + 1 < ips.length && !signal.aborted) return attempt(ips, i + 1);
          const reply = error instanceof SocksError ? error.reply : ReplyCode.GeneralFailure;
          throw new UpstreamError(reply, error instanceof Error ? error.message : String(error), {
            cause: error,
            code: reply === ReplyCode.TtlExpired ? "connect_timeout" : "upstream_failed",
            dialed,
          });
        },
      );
      return opening;
    };
    try {
      const ips = allowedAddresses(resolver, req, policy);
      return Array.isArray(ips) ? attempt(ips, 0) : ips.then((list) => attempt(list, 0));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  return {
    open,
    async lookup(request, policy) {
      const req = request as TunnelOrLookup;
      // An IP literal resolves to itself: no DNS, nothing revealed, so no policy check.
      const literal = canonicalIP(req.target.host);
      const addresses = literal ? [literal] : await allowedAddresses(resolver, req, policy);
      // SOCKS4 replies carry only IPv4; SOCKS5 prefers IPv4 as Tor does (lookup lists IPv4 first).
      const pick = req.version === 4 ? addresses.find((a) => !a.includes(":")) : addresses[0];
      if (!pick) {
        throw new SocksError(ReplyCode.HostUnreachable, `${req.target.host} has no usable address`, {
          code: "dns_failed",
        });
      }
      return pick;
    },
    async reverse(request, policy) {
      const ip = request.target.host;
      const denied = evaluateDestination({ command: "resolve", ip, port: 0 }, policy);
      if (denied !== null) throw refused(`${ip} not allowed by policy`);
      let names: string[];
      try {
        names = await resolver.reverse(ip);
      } catch (error) {
        throw error instanceof SocksError
          ? new SocksError(error.reply, error.message, { cause: error.cause ?? error, code: "dns_failed" })
          : error;
      }
      return names[0] ?? "";
    },
  };
}
