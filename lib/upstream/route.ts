/**
 * Routes: which way out a request takes. `--route RULE=NAME[,NAME...]`, the
 * RULE written as for `--allow` / `--deny`; the first route that matches
 * decides, and a request no route matches goes `direct`. A route's
 * upstreams are tried in order while one cannot be reached (its TCP connect
 * refused or timed out, its name unknown); an upstream that answers,
 * whatever it answers, ends the list.
 *
 * @module
 */
import { canonicalIP } from "../core/address.ts";
import type { ProxyRequest } from "../core/request.ts";
import { ReplyCode } from "../core/wire.ts";
import {
  type DestinationPolicy,
  type DestinationRule,
  evaluateDestination,
  parseRule,
  ruleCommand,
} from "../policy.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { type Hop, HopUnreachable } from "./hop.ts";
import { httpUpstream } from "./http.ts";
import { type HopUpstream, socksUpstream } from "./socks5.ts";
import { type Upstream, UpstreamError } from "./upstream.ts";

/**
 * One route: the requests it matches and the upstreams (or `direct`) they take, in order.
 *
 * @example
 * ```ts
 * import { parseRoute, type Route } from "@edgesocks/edgesocks";
 * const onion: Route = parseRoute("*.onion=tor");
 * ```
 */
export interface Route {
  /** What it matches, as an allow/deny rule would (its action is not used). */
  rule: DestinationRule;
  /** Upstream names in order; `direct` is no upstream. */
  via: readonly string[];
  /** The route as written. */
  text: string;
}

/**
 * Parses `[COMMANDS@]TARGET[:PORTS]=NAME[,NAME...]`; throws a TypeError on bad input.
 *
 * @example
 * ```ts
 * import { parseRoute } from "@edgesocks/edgesocks";
 * parseRoute("connect@*.example.com:443=corp,direct").via; // ["corp", "direct"]
 * ```
 */
export function parseRoute(text: string): Route {
  const eq = text.lastIndexOf("=");
  if (eq <= 0 || eq === text.length - 1) {
    throw new TypeError(`invalid route ${JSON.stringify(text)}: expected RULE=NAME[,NAME...]`);
  }
  const via = text.slice(eq + 1).split(",");
  if (via.some((n) => !/^[A-Za-z0-9_.-]+$/.test(n))) {
    throw new TypeError(
      `invalid route ${JSON.stringify(text)}: upstream names are letters, digits, '_', '.', '-'`,
    );
  }
  return { rule: parseRule("allow", text.slice(0, eq)), via, text };
}

/**
 * Upstreams and routes, as data.
 *
 * @example
 * ```ts
 * import { type ChainOptions, parseHop, parseRoute } from "@edgesocks/edgesocks";
 * const chain: ChainOptions = {
 *   upstreams: [parseHop("tor", "socks5h://127.0.0.1:9050?tor")],
 *   routes: [parseRoute("*.onion=tor"), parseRoute("resolve@*=tor")],
 *   passthrough: true,
 * };
 * ```
 */
export interface ChainOptions {
  /** The upstreams routes name. */
  upstreams: readonly Hop[];
  /** First match wins; no match: direct. */
  routes: readonly Route[];
  /** `--upstream-auth passthrough`: the client's credentials go on to the upstream. Default false. */
  passthrough?: boolean;
  /**
   * The connect timeout, in milliseconds: an upstream in a list of N gets
   * this / N for its TCP connect, so the next one still has time. Default 10 s.
   */
  connectTimeout?: number;
}

/** Checks that every route names a known upstream; throws a TypeError saying which does not. */
export function checkChain(chain: ChainOptions): void {
  const names = new Set(chain.upstreams.map((h) => h.name));
  const seen = new Set<string>();
  for (const hop of chain.upstreams) {
    if (seen.has(hop.name)) throw new TypeError(`upstream ${JSON.stringify(hop.name)} is defined twice`);
    seen.add(hop.name);
  }
  for (const route of chain.routes) {
    for (const name of route.via) {
      if (name !== "direct" && !names.has(name)) {
        throw new TypeError(
          `route ${JSON.stringify(route.text)} names upstream ${
            JSON.stringify(name)
          }, which no --upstream defines` +
            (names.size ? ` (known: ${[...names].join(", ")}, direct)` : ""),
        );
      }
    }
  }
}

/** The route a request takes, or undefined (direct). */
export function routeFor(request: ProxyRequest, routes: readonly Route[]): Route | undefined {
  const command = ruleCommand(request.kind as "connect" | "connect_dir" | "resolve" | "resolve_ptr");
  const literal = canonicalIP(request.target.host);
  const port = request.kind === "resolve" || request.kind === "resolve_ptr" ? 0 : request.target.port;
  const query = literal ? { command, ip: literal, port } : { command, name: request.target.host, port };
  return routes.find((route) =>
    evaluateDestination(query, {
      allowPrivate: true,
      allowConnectDir: true,
      rules: [{ ...route.rule, action: "deny" }],
    }) === ReplyCode.NotAllowed
  );
}

/**
 * The way out with routes: each request goes through its route's upstreams
 * in turn, or `direct`.
 *
 * @example
 * ```ts
 * import { chainUpstream, directUpstream, parseHop, parseRoute, type RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const resolver = adapter.resolver();
 * const upstream = chainUpstream(directUpstream(adapter.dial, resolver), adapter.dial, resolver, {
 *   upstreams: [parseHop("tor", "socks5h://127.0.0.1:9050?tor")],
 *   routes: [parseRoute("*.onion=tor")],
 * });
 * ```
 */
export function chainUpstream(
  direct: Upstream,
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver: Resolver,
  chain: ChainOptions,
): Upstream {
  checkChain(chain);
  const connectTimeout = chain.connectTimeout ?? 10_000;
  const hops = new Map<string, HopUpstream>();
  for (const hop of chain.upstreams) {
    // Its share of the connect timeout in the longest list it is in; alone, only the connect timeout.
    const n = Math.max(1, ...chain.routes.filter((r) => r.via.includes(hop.name)).map((r) => r.via.length));
    const options = {
      passthrough: chain.passthrough === true,
      dialTimeout: n > 1 ? Math.floor(connectTimeout / n) : 0,
    };
    hops.set(
      hop.name,
      hop.protocol === "http"
        ? httpUpstream(hop, dial, resolver, options)
        : socksUpstream(hop, dial, resolver, options),
    );
  }
  const way = (name: string): Upstream => (name === "direct" ? direct : hops.get(name)!);

  /** Tries `via` in turn: the next only while the last could not be reached. */
  async function attempt<T>(
    via: readonly string[],
    signal: AbortSignal | undefined,
    use: (u: Upstream) => Promise<T>,
  ): Promise<T> {
    for (let i = 0;; i++) {
      try {
        return await use(way(via[i]));
      } catch (error) {
        if (!(error instanceof HopUnreachable) || i + 1 >= via.length || signal?.aborted) throw error;
      }
    }
  }

  /** For RESOLVE and RESOLVE_PTR: the ways of the route that can answer (direct, or a Tor upstream). */
  function resolvers(request: ProxyRequest): readonly string[] {
    const route = routeFor(request, chain.routes);
    if (!route) return ["direct"];
    const able = route.via.filter((n) => n === "direct" || hops.get(n)!.hop.tor);
    if (able.length === 0) {
      // Answering here would leak the name to the local resolver while the route says it goes elsewhere.
      throw new UpstreamError(
        ReplyCode.CommandNotSupported,
        `route ${route.text}: no upstream that resolves (direct, or a SOCKS5 upstream with ?tor)`,
        { code: "unsupported" },
      );
    }
    return able;
  }

  return {
    // BIND is not routed: its listener is this host's own, whatever the routes say.
    ...(direct.bind ? { bind: direct.bind.bind(direct) } : {}),
    open(request, policy: DestinationPolicy, signal) {
      const route = routeFor(request, chain.routes);
      if (!route) return direct.open(request, policy, signal);
      return attempt(route.via, signal, (u) => u.open(request, policy, signal));
    },
    lookup(request, policy, signal) {
      try {
        return attempt(resolvers(request), signal, (u) => u.lookup(request, policy, signal));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    reverse(request, policy, signal) {
      try {
        return attempt(resolvers(request), signal, (u) => u.reverse(request, policy, signal));
      } catch (error) {
        return Promise.reject(error);
      }
    },
  };
}
