/**
 * WebSockets on Deno: `Deno.serve` + `Deno.upgradeWebSocket` for the edge,
 * the global `WebSocket` (with an HTTP client trusting `--ca`) for the bridge.
 *
 * @module
 */
import type {
  HostPort,
  Listener,
  WebSocketConnectOptions,
  WebSocketLike,
  WebSocketServeOptions,
} from "../runtime.ts";

/** {@linkcode RuntimeAdapter.serveWebSocket} on Deno. */
export function serveWebSocketDeno(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<Listener> {
  return new Promise<Listener>((resolve, reject) => {
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = Deno.serve({
        hostname: address.host,
        port: address.port,
        ...(options.reusePort ? { reusePort: true } : {}),
        ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
        onListen: (addr) =>
          resolve({
            address: { host: address.host, port: (addr as Deno.NetAddr).port },
            close: () => server.shutdown(),
          }),
        onError: () => new Response("internal error\n", { status: 500 }),
      }, async (request, info) => {
        if (new URL(request.url).pathname !== options.path) {
          return new Response("not found\n", { status: 404 });
        }
        const client = { host: info.remoteAddr.hostname, port: info.remoteAddr.port };
        const answer = await options.admit((name) => request.headers.get(name), client);
        if (!answer.ok) return new Response(answer.body, { status: answer.status, headers: answer.headers });
        // No idle pings of Deno's own: the tunnel's idle timeout is the SOCKS server's.
        const { socket, response } = Deno.upgradeWebSocket(request, {
          ...(answer.protocol ? { protocol: answer.protocol } : {}),
          idleTimeout: 0,
        });
        onSocket(socket, client);
        return response;
      });
    } catch (error) {
      reject(error);
    }
  });
}

/** {@linkcode RuntimeAdapter.connectWebSocket} on Deno. */
export function connectWebSocketDeno(url: string, options: WebSocketConnectOptions): WebSocketLike {
  const init: Record<string, unknown> = {};
  if (options.protocols?.length) init.protocols = options.protocols;
  if (options.headers) init.headers = options.headers;
  if (options.ca) init.client = Deno.createHttpClient({ caCerts: [options.ca] });
  return new WebSocket(url, init as unknown as string[]);
}
