/**
 * The way out where the runtime resolves names itself (workerd): a CONNECT
 * by name is dialled by name, after the name rules of the policy, and the
 * runtime's own network rules judge the address the name resolved to (on
 * workerd: the network service's `allow` / `deny` lists; this module cannot
 * see that address). Addresses given as literals, RESOLVE and RESOLVE_PTR
 * go as on the direct way out: the whole policy, private ranges included.
 *
 * @module
 */
import { canonicalIP } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import { ReplyCode } from "../core/wire.ts";
import { evaluateDestination, ruleCommand } from "../policy.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { directUpstream } from "./direct.ts";
import { type Upstream, UpstreamError } from "./upstream.ts";

function unsupported(what: string): SocksError {
  return new SocksError(ReplyCode.CommandNotSupported, `${what} not supported: no DNS resolver configured`, {
    code: "unsupported",
  });
}

/**
 * The upstream over a `dial` that takes host names. With no `resolver`,
 * RESOLVE and RESOLVE_PTR are answered "command not supported" (0x07).
 *
 * @example
 * ```ts
 * import { byNameUpstream, type DialOptions, type ByteConnection } from "@edgesocks/edgesocks";
 * declare const dialByName: (options: DialOptions) => Promise<ByteConnection>;
 * const upstream = byNameUpstream(dialByName); // CONNECT only: the runtime resolves
 * ```
 */
export function byNameUpstream(
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver?: Resolver,
): Upstream {
  const direct = directUpstream(
    dial,
    resolver ?? {
      lookup: () => Promise.reject(unsupported("DNS")),
      reverse: () => Promise.reject(unsupported("DNS")),
    },
  );
  return {
    open(request, policy, signal) {
      const host = request.target.host;
      if (canonicalIP(host) !== null) return direct.open(request, policy, signal);
      const command = ruleCommand(request.kind as "connect" | "connect_dir");
      const port = request.target.port;
      // Address rules cannot judge a name that is not resolved here: they apply to address literals only.
      const byName = { ...policy, rules: policy.rules?.filter((rule) => rule.cidr === undefined) };
      const verdict = evaluateDestination({ command, name: host, port }, byName);
      if (verdict !== "undecided" && verdict !== null) {
        return Promise.reject(
          new UpstreamError(ReplyCode.NotAllowed, `${host} not allowed by policy`, {
            code: "refused_policy",
          }),
        );
      }
      return dial({ host, port, signal }).then(
        (conn) => ({ conn, bound: conn.localAddress ?? { host: "0.0.0.0", port: 0 }, dialed: host }),
        (error) => {
          const reply = error instanceof SocksError ? error.reply : ReplyCode.GeneralFailure;
          throw new UpstreamError(reply, error instanceof Error ? error.message : String(error), {
            cause: error,
            code: reply === ReplyCode.TtlExpired ? "connect_timeout" : "upstream_failed",
            dialed: host,
          });
        },
      );
    },
    lookup: (request, policy) =>
      resolver ? direct.lookup(request, policy) : Promise.reject(unsupported("RESOLVE")),
    reverse: (request, policy) =>
      resolver ? direct.reverse(request, policy) : Promise.reject(unsupported("RESOLVE_PTR")),
  };
}
