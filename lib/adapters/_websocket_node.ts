/**
 * WebSockets on Node: a `node:http` (or `node:https`) server whose
 * `upgrade` requests are checked here and completed by the `ws` package,
 * an optional dependency loaded only when a WebSocket listener starts; the
 * global `WebSocket` (Node ≥ 22) for the bridge.
 *
 * Why `ws` and not a server of our own: Node has no WebSocket server, `ws`
 * is the one every Node user already trusts, and its sockets can
 * `pause()`/`resume()` (real TCP backpressure, which Deno's server and
 * every runtime's WHATWG client lack). A built-in server would be some 400
 * lines of framing, masking, fragmentation and close handshake to keep
 * correct, for the one runtime where a mature one is a package away.
 *
 * @module
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import process from "node:process";
import type { Duplex } from "node:stream";
import * as nodeTls from "node:tls";
import type {
  HostPort,
  Listener,
  WebSocketConnectOptions,
  WebSocketLike,
  WebSocketServeOptions,
} from "../runtime.ts";

/** The part of `ws`'s `WebSocketServer` used here. */
interface WsServer {
  handleUpgrade(
    request: IncomingMessage,
    socket: Duplex,
    head: Uint8Array,
    done: (ws: WebSocketLike) => void,
  ): void;
  close(): void;
}
type WsModule = {
  WebSocketServer: new (options: Record<string, unknown>) => WsServer;
  WebSocket?: new (url: string, protocols: string[], options: Record<string, unknown>) => WebSocketLike;
};

/** The message when `ws` is missing: one line, saying what to do. */
export const WS_MISSING = "serving WebSockets on Node needs the optional package ws: npm install ws";

async function loadWs(): Promise<WsModule> {
  try {
    const name = "ws";
    const mod = await import(name) as WsModule & { default?: WsModule };
    const found = mod.WebSocketServer ?? mod.default?.WebSocketServer;
    if (!found) throw new Error("no WebSocketServer in it");
    return { WebSocketServer: found, WebSocket: mod.WebSocket ?? mod.default?.WebSocket };
  } catch (error) {
    throw new Error(`${WS_MISSING} (${error instanceof Error ? error.message : error})`);
  }
}

function refuse(socket: Duplex, status: number, headers: Record<string, string>, body: string): void {
  const reason = status === 401
    ? "Unauthorized"
    : status === 404
    ? "Not Found"
    : status === 426
    ? "Upgrade Required"
    : "Bad Request";
  const lines = [`HTTP/1.1 ${status} ${reason}`, "connection: close", `content-length: ${body.length}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  socket.end(lines.join("\r\n") + "\r\n\r\n" + body);
}

/** {@linkcode RuntimeAdapter.serveWebSocket} on Node. */
export async function serveWebSocketNode(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<Listener> {
  const { WebSocketServer } = await loadWs();
  const selected = new WeakMap<IncomingMessage, string | undefined>();
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: 16 << 20,
    // The subprotocol admit() chose; none when the client offered no `edgesocks`.
    handleProtocols: (_offered: Set<string>, request: IncomingMessage) => selected.get(request) ?? false,
  });
  const plain = (_request: IncomingMessage, response: ServerResponse) => {
    response.writeHead(426, { "content-type": "text/plain; charset=utf-8", upgrade: "websocket" });
    response.end("a WebSocket upgrade is required\n");
  };
  const server: Server = options.tls
    ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, plain)
    : createHttpServer(plain);
  server.on("upgrade", async (request: IncomingMessage, socket: Duplex, head: Uint8Array) => {
    socket.on("error", () => {});
    const path = new URL(request.url ?? "/", "http://x").pathname;
    if (path !== options.path) return refuse(socket, 404, {}, "not found\n");
    const peer = request.socket;
    const client = { host: (peer.remoteAddress ?? "").replace(/^::ffff:/, ""), port: peer.remotePort ?? 0 };
    const answer = await options.admit((name) => {
      const value = request.headers[name];
      return Array.isArray(value) ? value.join(", ") : value;
    }, client);
    if (!answer.ok) return refuse(socket, answer.status, answer.headers, answer.body);
    selected.set(request, answer.protocol);
    wss.handleUpgrade(request, socket, head, (ws) => onSocket(ws, client));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({
      host: address.host,
      port: address.port,
      ...(options.reusePort ? { reusePort: true } : {}),
    }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address();
  return {
    address: { host: address.host, port: typeof bound === "object" && bound ? bound.port : address.port },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * {@linkcode RuntimeAdapter.connectWebSocket} on Node: `ws`'s client where
 * that package is installed (it can pause reading, so a slow local reader
 * holds the edge back instead of being cut off; it takes `ca` per socket),
 * else the global `WebSocket` (Node ≥ 22).
 */
export async function connectWebSocketNode(
  url: string,
  options: WebSocketConnectOptions,
): Promise<WebSocketLike> {
  const ws = await (wsClient ??= loadWs().then((m) => m.WebSocket, () => undefined));
  if (ws) {
    return new ws(url, options.protocols ?? [], {
      headers: options.headers ?? {},
      perMessageDeflate: false,
      maxPayload: 16 << 20,
      ...(options.ca ? { ca: options.ca } : {}),
    });
  }
  const WS =
    (globalThis as unknown as { WebSocket?: new (url: string, init: unknown) => WebSocketLike }).WebSocket;
  if (!WS) {
    throw new TypeError(
      `the bridge needs Node 22 or later (its built-in WebSocket client), or the package ws; this is ${process.version}`,
    );
  }
  if (options.ca) trust(options.ca);
  return new WS(url, {
    ...(options.protocols?.length ? { protocols: options.protocols } : {}),
    ...(options.headers ? { headers: options.headers } : {}),
  });
}

let wsClient: Promise<WsModule["WebSocket"]> | undefined;

let trusted: string | undefined;
function trust(ca: string): void {
  if (trusted === ca) return;
  const tls = nodeTls as unknown as {
    setDefaultCACertificates?(certs: string[]): void;
    getCACertificates?(kind: string): string[];
  };
  if (!tls.setDefaultCACertificates || !tls.getCACertificates) {
    throw new TypeError(
      `--ca needs Node 22.19 / 24.5 or later (tls.setDefaultCACertificates); on ${process.version} ` +
        "start Node with NODE_EXTRA_CA_CERTS=FILE instead",
    );
  }
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), ca]);
  trusted = ca;
}
