/**
 * The edgesocks worker for workerd: its `connect(socket, env, ctx)` export
 * serves SOCKS4 / SOCKS4A / SOCKS5 on the connections of a `tcp = ()`
 * socket, with the same sessions and admission as `serve()` on the other
 * runtimes, configured from the worker's `env` (text or JSON bindings of
 * the config; see {@linkcode workerOptions} and the README's "At the
 * edge"). `npm run build:workerd` bundles this file into the one ES module
 * a workerd config embeds.
 *
 * @example
 * ```ts ignore
 * // A worker of your own with the same behaviour:
 * import { connect } from "cloudflare:sockets";
 * import { createWorker } from "@edgesocks/edgesocks/workerd/worker";
 * export default createWorker(() => Promise.resolve(connect));
 * ```
 *
 * @module
 */
import { parseUsers } from "../auth.ts";
import { parseRule } from "../policy.ts";
import { formatJson, formatText } from "../ops/log.ts";
import { serve, type ServeOptions, type SocksServer } from "../serve.ts";
import type { Resolver } from "../runtime.ts";
import { byNameUpstream } from "../upstream/by_name.ts";
import { admitWebSocket, fromWebSocket, refusalResponse } from "../ingress/websocket.ts";
import type { WebSocketLike } from "../runtime.ts";
import { type DohOptions, dohResolver } from "../upstream/doh.ts";
import {
  type WorkerdAdapter,
  workerdAdapter,
  type WorkerdConnect,
  type WorkerdSocket,
} from "../adapters/workerd.ts";

/**
 * The bindings the worker reads, all optional. Values are text (a `text`
 * binding, or `fromEnvironment`) or, from a `json` binding, the value itself.
 *
 * @example
 * ```ts
 * import type { WorkerdEnv } from "@edgesocks/edgesocks/workerd/worker";
 * const env: WorkerdEnv = { EDGESOCKS_USERS: "alice:secret", EDGESOCKS_IDLE_TIMEOUT: "600" };
 * ```
 */
export interface WorkerdEnv {
  /** Users, one `user:password` a line (as `--users` reads them): SOCKS5 login required, SOCKS4 refused. */
  EDGESOCKS_USERS?: unknown;
  /** Destination rules, one `allow RULE` or `deny RULE` a line, first match wins (as `--allow` / `--deny`). */
  EDGESOCKS_RULES?: unknown;
  /** `true`: do not refuse non-public address literals here (the network service still judges them). */
  EDGESOCKS_ALLOW_PRIVATE?: unknown;
  /** `true`: refuse Tor's CONNECT_DIR. */
  EDGESOCKS_DENY_CONNECT_DIR?: unknown;
  /** `true`: a name refused by a rule is answered 0x04, as a name that does not resolve. */
  EDGESOCKS_CONCEAL_REFUSALS?: unknown;
  /** Seconds; 0: none. Defaults 10, 10 and 300 as on the other runtimes. */
  EDGESOCKS_HANDSHAKE_TIMEOUT?: unknown;
  /** Seconds for a connect (or a RESOLVE's lookup). */
  EDGESOCKS_CONNECT_TIMEOUT?: unknown;
  /** Seconds without a byte either way before a tunnel is closed. */
  EDGESOCKS_IDLE_TIMEOUT?: unknown;
  /** Most connections at once (per workerd isolate); default 10,000; 0: no cap. */
  EDGESOCKS_MAX_CONNECTIONS?: unknown;
  /** Most connections at once from one client address; default 0: no cap. */
  EDGESOCKS_MAX_CONNECTIONS_PER_CLIENT?: unknown;
  /** DNS-over-HTTPS resolver URL (RFC 8484) for RESOLVE and RESOLVE_PTR; without it both answer 0x07. */
  EDGESOCKS_DOH?: unknown;
  /** `GET` (default) or `POST`. */
  EDGESOCKS_DOH_METHOD?: unknown;
  /** A service binding the DoH requests go through instead of the worker's global outbound. */
  EDGESOCKS_DOH_SERVICE?: unknown;
  /** `quiet` (default), `text` or `json`: one line per connection on workerd's standard output. */
  EDGESOCKS_LOG?: unknown;
  /**
   * The bearer token of the WebSocket ingress (`fetch`: SOCKS over WebSocket, for `edgesocks bridge`);
   * unset: `fetch` answers 404 and serves no WebSocket.
   */
  EDGESOCKS_WS_TOKEN?: unknown;
  /** The path the WebSocket ingress answers on; default any path. */
  EDGESOCKS_WS_PATH?: unknown;
  /**
   * A Durable Object namespace binding of the class {@linkcode EdgesocksTunnel}: each WebSocket tunnel
   * then runs in an object of its own, whose input gate holds the WebSocket's messages back while a write
   * to the target is under way, so an upload never runs ahead of its target. Unset: tunnels run in the
   * worker, where a WebSocket cannot stop reading and more than 8 MiB unread closes it with 1008.
   */
  EDGESOCKS_WS_TUNNELS?: unknown;
}

/** The part of a Durable Object namespace binding the worker uses. */
interface TunnelNamespace {
  newUniqueId(): unknown;
  get(id: unknown): { fetch(request: Request): Promise<Response> };
}

/**
 * The part of a Durable Object's state (`ctx`) an {@linkcode EdgesocksTunnel} uses.
 *
 * @example
 * ```ts
 * import type { TunnelState } from "@edgesocks/edgesocks/workerd/worker";
 * const state: TunnelState = { blockConcurrencyWhile: (callback) => callback() };
 * ```
 */
export interface TunnelState {
  /** Runs `callback`; workerd delivers none of the object's other events until it settles. */
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
}

/**
 * What the bindings say, as `serve()` options and the DoH resolver's.
 *
 * @example
 * ```ts
 * import { workerOptions } from "@edgesocks/edgesocks/workerd/worker";
 * workerOptions({ EDGESOCKS_CONNECT_TIMEOUT: "5" }).serve.timeouts; // { connect: 5000 }
 * ```
 */
export interface WorkerOptions {
  /** For `serve()`: rules, timeouts, caps. */
  serve: ServeOptions;
  /** The resolver for RESOLVE / RESOLVE_PTR, when `EDGESOCKS_DOH` is set. */
  doh?: DohOptions;
  /** The log lines' format. */
  log: "quiet" | "text" | "json";
}

function text(env: WorkerdEnv, name: keyof WorkerdEnv): string | undefined {
  const value = env[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value.trim() === "" ? undefined : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  throw new TypeError(`binding ${name}: expected text, got ${typeof value}`);
}

function flag(env: WorkerdEnv, name: keyof WorkerdEnv): boolean {
  const value = text(env, name)?.trim().toLowerCase();
  if (value === undefined || value === "false" || value === "0" || value === "no") return false;
  if (value === "true" || value === "1" || value === "yes") return true;
  throw new TypeError(`binding ${name}: expected true or false, got ${JSON.stringify(value)}`);
}

function seconds(env: WorkerdEnv, name: keyof WorkerdEnv): number | undefined {
  const value = text(env, name)?.trim();
  if (value === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(value)) {
    throw new TypeError(`binding ${name}: expected a number of seconds, got ${JSON.stringify(value)}`);
  }
  return Math.round(Number(value) * 1000);
}

function count(env: WorkerdEnv, name: keyof WorkerdEnv): number | undefined {
  const value = text(env, name)?.trim();
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) {
    throw new TypeError(`binding ${name}: expected a whole number, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/**
 * Reads the bindings (see {@linkcode WorkerdEnv}); throws a TypeError naming
 * the binding that is wrong.
 *
 * @example
 * ```ts
 * import { workerOptions } from "@edgesocks/edgesocks/workerd/worker";
 * const { serve } = workerOptions({ EDGESOCKS_RULES: "deny *:25\nallow *" });
 * serve.policy?.rules?.length; // 2
 * ```
 */
export function workerOptions(env: WorkerdEnv): WorkerOptions {
  const options: ServeOptions = { listen: [{ host: "0.0.0.0", port: 0 }], hostAddressRefresh: 0 };
  const users = text(env, "EDGESOCKS_USERS");
  if (users !== undefined) {
    try {
      options.users = parseUsers(users);
    } catch (error) {
      throw new TypeError(`binding EDGESOCKS_USERS: ${(error as Error).message}`);
    }
  }
  const rules = (text(env, "EDGESOCKS_RULES") ?? "").split("\n").map((l) => l.trim()).filter((l) =>
    l !== "" && !l.startsWith("#")
  ).map((line, i) => {
    const m = /^(allow|deny)\s+(\S+)$/.exec(line);
    if (!m) {
      throw new TypeError(`binding EDGESOCKS_RULES line ${i + 1}: expected "allow RULE" or "deny RULE"`);
    }
    try {
      return parseRule(m[1] as "allow" | "deny", m[2]);
    } catch (error) {
      throw new TypeError(`binding EDGESOCKS_RULES line ${i + 1}: ${(error as Error).message}`);
    }
  });
  options.policy = {
    allowPrivate: flag(env, "EDGESOCKS_ALLOW_PRIVATE"),
    allowConnectDir: !flag(env, "EDGESOCKS_DENY_CONNECT_DIR"),
    ...(rules.length > 0 ? { rules } : {}),
  };
  if (flag(env, "EDGESOCKS_CONCEAL_REFUSALS")) options.concealRefusals = true;
  const timeouts: Record<string, number> = {};
  const handshake = seconds(env, "EDGESOCKS_HANDSHAKE_TIMEOUT");
  const connect = seconds(env, "EDGESOCKS_CONNECT_TIMEOUT");
  const idle = seconds(env, "EDGESOCKS_IDLE_TIMEOUT");
  if (handshake !== undefined) timeouts.handshake = handshake;
  if (connect !== undefined) timeouts.connect = connect;
  if (idle !== undefined) timeouts.idle = idle;
  if (Object.keys(timeouts).length > 0) options.timeouts = timeouts;
  const max = count(env, "EDGESOCKS_MAX_CONNECTIONS");
  const perClient = count(env, "EDGESOCKS_MAX_CONNECTIONS_PER_CLIENT");
  if (max !== undefined) options.maxConnections = max;
  if (perClient !== undefined) options.maxConnectionsPerClient = perClient;
  const log = text(env, "EDGESOCKS_LOG")?.trim() ?? "quiet";
  if (log !== "quiet" && log !== "text" && log !== "json") {
    throw new TypeError(`binding EDGESOCKS_LOG: expected quiet, text or json, got ${JSON.stringify(log)}`);
  }
  const result: WorkerOptions = { serve: options, log };
  const url = text(env, "EDGESOCKS_DOH")?.trim();
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`binding EDGESOCKS_DOH: not a URL: ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
      throw new TypeError(`binding EDGESOCKS_DOH: expected an https:// URL, got ${JSON.stringify(url)}`);
    }
    const method = text(env, "EDGESOCKS_DOH_METHOD")?.trim().toUpperCase() ?? "GET";
    if (method !== "GET" && method !== "POST") {
      throw new TypeError(
        `binding EDGESOCKS_DOH_METHOD: expected GET or POST, got ${JSON.stringify(method)}`,
      );
    }
    const service = env.EDGESOCKS_DOH_SERVICE as { fetch?: unknown } | undefined;
    if (service !== undefined && typeof service?.fetch !== "function") {
      throw new TypeError("binding EDGESOCKS_DOH_SERVICE: expected a service binding");
    }
    const doh: DohOptions = { url, method };
    if (service) {
      const fetcher = service as { fetch(url: string, init: RequestInit): Promise<Response> };
      doh.fetch = (u, init) => fetcher.fetch(u, init);
    }
    result.doh = doh;
  }
  return result;
}

/**
 * A workerd worker: `export default createWorker(...)`. `loadConnect`
 * supplies `connect` from `cloudflare:sockets` (called once).
 *
 * @example
 * ```ts ignore
 * import { connect } from "cloudflare:sockets";
 * import { createWorker } from "@edgesocks/edgesocks/workerd/worker";
 * export default createWorker(() => Promise.resolve(connect));
 * ```
 */
export function createWorker(loadConnect: () => Promise<WorkerdConnect>): {
  connect(socket: WorkerdSocket, env: WorkerdEnv): Promise<void>;
  fetch(request: Request, env: WorkerdEnv, ctx: { waitUntil(p: Promise<unknown>): void }): Promise<Response>;
} {
  // One server per env (workerd hands every request of an isolate the same env object).
  const servers = new WeakMap<object, Promise<{ adapter: WorkerdAdapter; server: SocksServer }>>();
  const serverFor = (env: WorkerdEnv) => {
    let running = servers.get(env);
    if (!running) {
      running = startServer(env, loadConnect);
      servers.set(env, running);
      // A wrong binding is said once per connection until it is fixed; nothing is served meanwhile.
      running.catch(() => servers.delete(env));
    }
    return running;
  };
  return {
    async connect(socket, env) {
      let adapter: WorkerdAdapter;
      try {
        ({ adapter } = await serverFor(env));
      } catch (error) {
        console.error(`edgesocks: ${(error as Error).message ?? error}`);
        await socket.close().catch(() => {});
        return;
      }
      await adapter.accept(socket);
    },

    // SOCKS over WebSocket (one WebSocket, one SOCKS connection; see the README's bridge protocol).
    async fetch(request, env, ctx) {
      const token = text(env, "EDGESOCKS_WS_TOKEN")?.trim();
      const path = text(env, "EDGESOCKS_WS_PATH")?.trim();
      if (token === undefined || (path !== undefined && new URL(request.url).pathname !== path)) {
        return new Response("not found\n", { status: 404 });
      }
      const answer = await admitWebSocket((name) => request.headers.get(name), token);
      if (!answer.ok) {
        const refusal = refusalResponse(answer);
        return new Response(refusal.body, { status: refusal.status, headers: refusal.headers });
      }
      const tunnels = env.EDGESOCKS_WS_TUNNELS as TunnelNamespace | undefined;
      if (tunnels !== undefined) {
        if (typeof tunnels?.newUniqueId !== "function" || typeof tunnels?.get !== "function") {
          console.error("edgesocks: binding EDGESOCKS_WS_TUNNELS: expected a Durable Object namespace");
          return new Response("edgesocks is misconfigured\n", { status: 500 });
        }
        // Admitted here; the object (reachable only through the binding) serves the tunnel.
        return tunnels.get(tunnels.newUniqueId()).fetch(request);
      }
      let adapter: WorkerdAdapter;
      try {
        ({ adapter } = await serverFor(env));
      } catch (error) {
        console.error(`edgesocks: ${(error as Error).message ?? error}`);
        return new Response("edgesocks is misconfigured\n", { status: 500 });
      }
      return acceptWebSocket(request, adapter, answer.protocol, (p) => ctx.waitUntil(p));
    },
  };
}

/** One server (adapter, `serve()`) for `env`; with `gate`, every write to a target goes through it. */
async function startServer(
  env: WorkerdEnv,
  loadConnect: () => Promise<WorkerdConnect>,
  gate?: (write: () => Promise<void>) => Promise<void>,
): Promise<{ adapter: WorkerdAdapter; server: SocksServer }> {
  const options = workerOptions(env);
  const connect = await loadConnect();
  const resolver: Resolver | undefined = options.doh ? dohResolver(options.doh) : undefined;
  const adapter = workerdAdapter({ connect, ...(resolver ? { resolver } : {}) });
  const format = options.log === "json" ? formatJson : options.log === "text" ? formatText : undefined;
  const dial: WorkerdAdapter["dial"] = !gate ? adapter.dial : async (request) => {
    const conn = await adapter.dial(request);
    const write = conn.write.bind(conn);
    conn.write = (chunk) => gate(() => write(chunk));
    return conn;
  };
  const server = await serve(adapter, {
    ...options.serve,
    upstream: byNameUpstream(dial, resolver),
    ...(format ? { onLog: (entry) => console.log(format(entry)) } : {}),
  });
  return { adapter, server };
}

/** Answers an admitted upgrade with a `WebSocketPair` whose server end carries one SOCKS connection. */
function acceptWebSocket(
  request: Request,
  adapter: WorkerdAdapter,
  protocol: string | undefined,
  keep: (p: Promise<unknown>) => void,
): Response {
  const Pair = (globalThis as unknown as { WebSocketPair: new () => Record<0 | 1, WebSocketLike> })
    .WebSocketPair;
  const pair = new Pair();
  const [client, server] = [pair[0], pair[1]];
  (server as unknown as { accept(): void }).accept();
  const address = request.headers.get("cf-connecting-ip");
  const conn = fromWebSocket(server, address ? { remoteAddress: { host: address, port: 0 } } : {});
  keep(adapter.acceptConnection(conn));
  return new Response(null, {
    status: 101,
    ...({ webSocket: client } as object),
    headers: protocol ? { "sec-websocket-protocol": protocol } : {},
  });
}

/**
 * The Durable Object class of `EDGESOCKS_WS_TUNNELS`, over `connect` from
 * `loadConnect`: one object serves one WebSocket tunnel (the worker's `fetch`
 * has admitted it). Each write to the target runs in `blockConcurrencyWhile`,
 * during which workerd delivers none of the object's events: the WebSocket's
 * messages wait in workerd, which stops reading the socket, and the bridge's
 * sends wait in turn (measured: no message waited in the ingress's queue, and
 * 100 MiB arrived byte-exact at a target that read nothing for 2 s).
 *
 * @example
 * ```ts ignore
 * import { connect } from "cloudflare:sockets";
 * import { createTunnelObject, createWorker } from "@edgesocks/edgesocks/workerd/worker";
 * export default createWorker(() => Promise.resolve(connect));
 * export const EdgesocksTunnel = createTunnelObject(() => Promise.resolve(connect));
 * ```
 */
export function createTunnelObject(
  loadConnect: () => Promise<WorkerdConnect>,
): new (state: TunnelState, env: WorkerdEnv) => { fetch(request: Request): Promise<Response> } {
  return class {
    readonly #state: TunnelState;
    readonly #env: WorkerdEnv;
    constructor(state: TunnelState, env: WorkerdEnv) {
      this.#state = state;
      this.#env = env;
    }

    async fetch(request: Request): Promise<Response> {
      let adapter: WorkerdAdapter;
      try {
        ({ adapter } = await startServer(
          this.#env,
          loadConnect,
          (write) => this.#state.blockConcurrencyWhile(write),
        ));
      } catch (error) {
        console.error(`edgesocks: ${(error as Error).message ?? error}`);
        return new Response("edgesocks is misconfigured\n", { status: 500 });
      }
      const answer = await admitWebSocket((name) => request.headers.get(name), undefined);
      return acceptWebSocket(request, adapter, answer.ok ? answer.protocol : undefined, (p) => {
        p.catch(() => {});
      });
    }
  };
}

// Not a literal in the import: type checkers and bundlers leave it alone, and only workerd loads it.
const SOCKETS = "cloudflare:sockets";

/**
 * The worker the bundle exports: `connect` comes from `cloudflare:sockets`,
 * loaded when the first connection arrives.
 *
 * @example
 * ```ts ignore
 * // worker.js of your own: the same worker, re-exported
 * export { default } from "@edgesocks/edgesocks/workerd/worker";
 * ```
 */
const worker: ReturnType<typeof createWorker> = createWorker(() =>
  import(SOCKETS).then((m: { connect: WorkerdConnect }) => m.connect)
);
export default worker;

/**
 * The Durable Object class the bundle exports for `EDGESOCKS_WS_TUNNELS`
 * (`durableObjectNamespaces = [(className = "EdgesocksTunnel", ...)]`).
 *
 * @example
 * ```ts ignore
 * // worker.js of your own: the worker and its tunnel class, re-exported
 * export { default, EdgesocksTunnel } from "@edgesocks/edgesocks/workerd/worker";
 * ```
 */
export const EdgesocksTunnel: ReturnType<typeof createTunnelObject> = createTunnelObject(() =>
  import(SOCKETS).then((m: { connect: WorkerdConnect }) => m.connect)
);
