/**
 * SOCKS over WebSocket for `deno serve`, or any Deno host that only calls a
 * `fetch` handler: the default export `{ fetch, onListen }` takes the
 * upgrades of `edgesocks bridge` (or any client of the bridge protocol) with
 * `Deno.upgradeWebSocket` and serves each WebSocket as one SOCKS4 / SOCKS4A
 * / SOCKS5 connection, with the same ingress (token check, 401 / 404 / 426),
 * sessions, admission and rules as `--listen-ws`, dialling with the Deno
 * adapter (the destination policy checked after DNS).
 *
 * Configured from environment variables with the names and parsing of the
 * workerd worker's bindings ({@linkcode workerOptions}); `EDGESOCKS_WS_TOKEN`
 * is required here. Deno's server WebSocket cannot stop reading: an upload
 * faster than its target ends at the ingress's 8 MiB unread bound with
 * close 1008; downloads are paced by `bufferedAmount`.
 *
 * ```sh
 * EDGESOCKS_WS_TOKEN=s3cret EDGESOCKS_WS_PATH=/socks deno serve -A --port 8080 lib/cli/deno_serve.ts
 * ```
 *
 * @example
 * ```ts ignore
 * // main.ts of your own, for `deno serve -A main.ts`: the same edge, configured in code
 * import { createDenoServe } from "@edgesocks/edgesocks/deno/serve";
 * export default createDenoServe(() => ({ EDGESOCKS_WS_TOKEN: Deno.env.get("TOKEN"), EDGESOCKS_WS_PATH: "/socks" }));
 * ```
 *
 * @module
 */
import { denoAdapter } from "../adapters/deno.ts";
import { denoEnvironment, denoExit, upgradeWebSocketDeno } from "../adapters/_deno_serve.ts";
import { UNIX_CLIENT } from "../ingress/proxy_protocol.ts";
import { formatJson, formatText } from "../ops/log.ts";
import type { HostPort, RuntimeAdapter, WebSocketLike, WebSocketServeOptions } from "../runtime.ts";
import { serve, type SocksServer } from "../serve.ts";
import { dohResolver } from "../upstream/doh.ts";
import { VERSION } from "../version.ts";
import { workerOptions } from "./workerd.ts";

/** Variables by name (the process's environment, or what `createDenoServe`'s caller reads). */
type Env = Record<string, unknown>;

/**
 * The default export's shape: what `deno serve` calls (it meets `Deno.ServeDefaultExport`).
 *
 * @example
 * ```ts ignore
 * import { createDenoServe, type DenoServeHandler } from "@edgesocks/edgesocks/deno/serve";
 * const handler: DenoServeHandler = createDenoServe();
 * Deno.serve({ port: 8080, onListen: handler.onListen }, handler.fetch);
 * ```
 */
export interface DenoServeHandler {
  /** Answers one HTTP request: an upgrade on the path is a SOCKS connection; anything else an HTTP error. */
  fetch(
    request: Request,
    info?: { remoteAddr?: { transport?: string; hostname?: string; port?: number } },
  ): Promise<Response>;
  /**
   * Starts the server when the HTTP server listens, and prints the startup
   * line; a wrong variable is printed and ends the process with exit code 2.
   */
  onListen(address: { transport?: string; hostname?: string; port?: number }): void;
}

/** What {@linkcode createDenoServe} reads once, when it starts. */
interface Running {
  server: SocksServer;
  path: string | undefined;
  /** The upgrade's admission and the session's entry, as `serve()` handed them to the adapter. */
  ingress: () => Ingress | undefined;
  line: string;
}

interface Ingress {
  admit: WebSocketServeOptions["admit"];
  onSocket: (socket: WebSocketLike, client: HostPort) => void;
}

/** The variable's text, trimmed; unset or blank: undefined (as the workerd worker reads its bindings). */
function variable(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined || value === null) return undefined;
  const text = String(value).trim();
  return text === "" ? undefined : text;
}

/** The parsers name a workerd "binding"; here it is an environment variable. */
function asVariableError(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return new TypeError(message.replace(/^binding /, "environment variable "));
}

async function start(env: Env, local: HostPort | undefined): Promise<Running> {
  let options: ReturnType<typeof workerOptions>;
  try {
    options = workerOptions(env);
  } catch (error) {
    throw asVariableError(error);
  }
  const token = variable(env, "EDGESOCKS_WS_TOKEN");
  if (token === undefined) {
    throw new TypeError(
      "environment variable EDGESOCKS_WS_TOKEN is required: the bearer token every WebSocket upgrade must carry",
    );
  }
  if (/\s/.test(token)) {
    throw new TypeError("environment variable EDGESOCKS_WS_TOKEN: the token has a space in it");
  }
  const path = variable(env, "EDGESOCKS_WS_PATH");
  if (path !== undefined && !path.startsWith("/")) {
    throw new TypeError(
      `environment variable EDGESOCKS_WS_PATH: expected a path starting with /, got ${path}`,
    );
  }
  let ingress: Ingress | undefined;
  const resolver = options.doh ? dohResolver(options.doh) : undefined;
  // The Deno adapter, but the HTTP server is `deno serve`'s: serve() hands its WebSocket admission and
  // entry to this "listener", which the fetch handler calls.
  const adapter: RuntimeAdapter = {
    ...denoAdapter,
    name: `${denoAdapter.name} (deno serve)`,
    ...(resolver ? { resolver: () => resolver } : {}),
    serveWebSocket(address, wsOptions, onSocket) {
      const mine: Ingress = { admit: wsOptions.admit, onSocket };
      ingress = mine;
      return Promise.resolve({
        address,
        close() {
          if (ingress === mine) ingress = undefined;
          return Promise.resolve();
        },
      });
    },
  };
  const format = options.log === "json" ? formatJson : options.log === "text" ? formatText : undefined;
  // deno serve runs for long: the host's addresses are read again now and then (the worker reads them once).
  const { hostAddressRefresh: _, ...rest } = options.serve;
  const server = await serve(adapter, {
    ...rest,
    listen: [],
    webSocket: {
      listen: [{ host: local?.host ?? "0.0.0.0", port: local?.port ?? 0, path: path ?? "/" }],
      token,
    },
    ...(format ? { onLog: (entry) => console.log(format(entry)) } : {}),
  });
  const users = options.serve.users?.size ?? 0;
  const where = local
    ? `${local.host.includes(":") ? `[${local.host}]` : local.host}:${local.port}`
    : "deno serve";
  const line =
    `edgesocks ${VERSION} on ${adapter.name}: SOCKS over WebSocket at ${where}${path ?? " (any path)"}` +
    ` (auth: ${users > 0 ? `username/password (${users} user${users === 1 ? "" : "s"})` : "none"}` +
    `, WebSocket token required${
      options.serve.policy?.allowPrivate ? ", private destinations allowed" : ""
    })`;
  return { server, path, ingress: () => ingress, line };
}

const text = (body: string, status: number) =>
  new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });

/**
 * A `deno serve` handler reading its configuration from `readEnv()` (default:
 * the process's environment, which needs `--allow-env`) once, when the
 * server starts listening or at the first request.
 *
 * @example
 * ```ts ignore
 * import { createDenoServe } from "@edgesocks/edgesocks/deno/serve";
 * export default createDenoServe(() => ({ ...Deno.env.toObject(), EDGESOCKS_WS_PATH: "/socks" }));
 * ```
 */
export function createDenoServe(
  readEnv: () => Record<string, unknown> = denoEnvironment,
): DenoServeHandler {
  let running: Promise<Running> | undefined;
  const started = (local?: HostPort) => (running ??= Promise.resolve().then(() => start(readEnv(), local)));
  return {
    onListen(address) {
      const local =
        address.transport === "tcp" && address.hostname !== undefined && address.port !== undefined
          ? { host: address.hostname, port: address.port }
          : undefined;
      started(local).then((r) => console.log(r.line), (error) => {
        console.error(`edgesocks: ${(error as Error).message ?? error}`);
        denoExit(2);
      });
    },

    async fetch(request, info) {
      let r: Running;
      try {
        r = await started();
      } catch (error) {
        console.error(`edgesocks: ${(error as Error).message ?? error}`);
        return text("edgesocks is misconfigured\n", 500);
      }
      if (r.path !== undefined && new URL(request.url).pathname !== r.path) return text("not found\n", 404);
      const ingress = r.ingress();
      if (!ingress) return text("edgesocks is shutting down\n", 503);
      // A peer on a Unix socket (`Deno.serve({ path })`), or a host that passes no `info`: no address, so
      // the one client "unix" (as on a Unix listener) for rules, caps and logs.
      const peer = info?.remoteAddr;
      const client: HostPort = peer?.hostname === undefined ? UNIX_CLIENT : {
        host: peer.hostname.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, "$1"),
        port: peer.port ?? 0,
      };
      const answer = await ingress.admit((name) => request.headers.get(name), client);
      if (!answer.ok) return new Response(answer.body, { status: answer.status, headers: answer.headers });
      let upgraded: { socket: WebSocketLike; response: Response };
      try {
        upgraded = upgradeWebSocketDeno(request, answer.protocol);
      } catch {
        // No Sec-WebSocket-Key, a version other than 13, ...: Deno's upgrade says no.
        return text("bad WebSocket handshake\n", 400);
      }
      ingress.onSocket(upgraded.socket, client);
      return upgraded.response;
    },
  };
}

/**
 * The handler `deno serve` runs: configured from the environment (see the
 * module's documentation and the README's "An HTTP-only host").
 *
 * @example
 * ```ts ignore
 * // main.ts of your own: the same edge, re-exported
 * export { default } from "@edgesocks/edgesocks/deno/serve";
 * ```
 */
const handler: DenoServeHandler = createDenoServe();
export default handler;
