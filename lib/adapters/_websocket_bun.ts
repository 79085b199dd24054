/**
 * WebSockets on Bun: `Bun.serve` with websocket handlers for the edge (its
 * `ServerWebSocket` wrapped in a small WHATWG-shaped shim, keeping `send()`'s
 * status and `pause()`/`resume()`), the global `WebSocket` for the bridge.
 *
 * Measured on Bun 1.4: `ws.send` returns −1 once more than the
 * backpressure limit is queued (the message is still kept) and 0 once it
 * drops one (~16 MiB queued by default); the ingress waits while
 * `getBufferedAmount()` is above its high-water mark, so it never gets there.
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

/** The part of Bun's `ServerWebSocket` used here. */
interface BunServerWebSocket {
  data: { client: HostPort; shim?: BunSocketShim };
  binaryType?: string;
  readonly readyState: number;
  send(data: Uint8Array): number;
  getBufferedAmount(): number;
  close(code?: number, reason?: string): void;
  pause?(): void;
  resume?(): void;
}

interface BunServer {
  readonly port: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
  upgrade(request: Request, options: { headers?: Record<string, string>; data: unknown }): boolean;
  requestIP(request: Request): { address: string; port: number } | null;
}

const bun = () =>
  (globalThis as unknown as { Bun: { serve(options: Record<string, unknown>): BunServer } }).Bun;

type Listen = (event: Event) => void;

/** A `ServerWebSocket` as the WHATWG shape the ingress reads. */
class BunSocketShim implements WebSocketLike {
  binaryType = "arraybuffer";
  readonly #ws: BunServerWebSocket;
  readonly #listeners = new Map<string, Listen[]>();
  constructor(ws: BunServerWebSocket) {
    this.#ws = ws;
    ws.binaryType = "uint8array";
  }
  get bufferedAmount(): number {
    return this.#ws.getBufferedAmount();
  }
  get readyState(): number {
    return this.#ws.readyState;
  }
  send(data: Uint8Array): number {
    return this.#ws.send(data);
  }
  close(code?: number, reason?: string): void {
    this.#ws.close(code, reason);
  }
  pause(): void {
    this.#ws.pause?.();
  }
  resume(): void {
    this.#ws.resume?.();
  }
  addEventListener(type: string, listener: Listen): void {
    const list = this.#listeners.get(type);
    if (list) list.push(listener);
    else this.#listeners.set(type, [listener]);
  }
  emit(type: string, event: Record<string, unknown>): void {
    for (const listener of this.#listeners.get(type) ?? []) listener(event as unknown as Event);
  }
}

/** {@linkcode RuntimeAdapter.serveWebSocket} on Bun. */
export function serveWebSocketBun(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<Listener> {
  let server: BunServer;
  try {
    server = serve(address, options, onSocket);
  } catch (error) {
    return Promise.reject(error);
  }
  return Promise.resolve({
    address: { host: address.host, port: server.port },
    close: async () => void await server.stop(false),
  });
}

function serve(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): BunServer {
  return bun().serve({
    hostname: address.host,
    port: address.port,
    ...(options.reusePort ? { reusePort: true } : {}),
    ...(options.tls ? { tls: { cert: options.tls.cert, key: options.tls.key } } : {}),
    async fetch(request: Request, server: BunServer) {
      if (new URL(request.url).pathname !== options.path) return new Response("not found\n", { status: 404 });
      const ip = server.requestIP(request);
      const client = { host: ip?.address ?? "", port: ip?.port ?? 0 };
      const answer = await options.admit((name) => request.headers.get(name), client);
      if (!answer.ok) return new Response(answer.body, { status: answer.status, headers: answer.headers });
      const upgraded = server.upgrade(request, {
        headers: answer.protocol ? { "Sec-WebSocket-Protocol": answer.protocol } : {},
        data: { client },
      });
      return upgraded ? undefined : new Response("upgrade failed\n", { status: 400 });
    },
    websocket: {
      // No pings or idle limit of Bun's own: the tunnel's idle timeout is the SOCKS server's.
      idleTimeout: 0,
      sendPings: false,
      perMessageDeflate: false,
      maxPayloadLength: 16 << 20,
      open(ws: BunServerWebSocket) {
        const shim = new BunSocketShim(ws);
        ws.data.shim = shim;
        onSocket(shim, ws.data.client);
      },
      message(ws: BunServerWebSocket, message: Uint8Array | string) {
        ws.data.shim?.emit("message", { data: message });
      },
      drain(ws: BunServerWebSocket) {
        ws.data.shim?.emit("drain", {});
      },
      close(ws: BunServerWebSocket, code: number, reason: string) {
        ws.data.shim?.emit("close", { code, reason });
      },
    },
  });
}

/** {@linkcode RuntimeAdapter.connectWebSocket} on Bun: its client can pause reading. */
export function connectWebSocketBun(url: string, options: WebSocketConnectOptions): Promise<WebSocketLike> {
  // No permessage-deflate offer (Bun's client makes one by default, workerd accepts it): the bytes of a
  // tunnel are mostly compressed or encrypted already (measured: a 100 MiB upload through a Bun bridge into
  // the workerd edge went 14-25 MiB/s compressed, 230-296 MiB/s without).
  const init: Record<string, unknown> = { perMessageDeflate: false };
  if (options.protocols?.length) init.protocols = options.protocols;
  if (options.headers) init.headers = options.headers;
  if (options.ca) init.tls = { ca: options.ca };
  return Promise.resolve(new WebSocket(url, init as unknown as string[]) as unknown as WebSocketLike);
}
