/**
 * WebSockets on Node, both ends our own: a `node:http` (or `node:https`)
 * server whose `upgrade` requests are checked and answered here, a client
 * through `http.request`'s upgrade (`https` with `ca` for wss://), and the
 * framing of `core/websocket_frames.ts` on the socket.
 *
 * Why not the `ws` package: it was the first choice, and measured (Node 24,
 * loopback, bridge and edge both on Node) it moved 68 MiB/s up at 1.4 + 2.0
 * CPU seconds per 256 MiB, most of it masking and unmasking a byte at a time
 * in JavaScript (its native `bufferutil` is another optional package); this
 * framing masks a 32-bit word at a time. Its sockets pause as `ws`'s do
 * (`socket.pause()`), so a slow reader holds the peer back, and there is no
 * dependency to install. Node's built-in `WebSocket` client cannot pause.
 *
 * @module
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, request as httpsRequest } from "node:https";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type {
  HostPort,
  Listener,
  WebSocketConnectOptions,
  WebSocketLike,
  WebSocketServeOptions,
} from "../runtime.ts";
import { freeBuffer, spansBuffer } from "../core/bytes.ts";
import { CLOSE_WAIT_MS, FramedWebSocket, webSocketKey } from "./_websocket_framed.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const acceptKey = (key: string) => createHash("sha1").update(key + GUID).digest("base64");

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  426: "Upgrade Required",
};

function refuse(socket: Duplex, status: number, headers: Record<string, string>, body: string): void {
  const bytes = Buffer.from(body);
  const lines = [`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}`, "connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  lines.push(`content-length: ${bytes.length}`);
  socket.end(Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n"), bytes]));
}

const text = { "content-type": "text/plain; charset=utf-8" };

/** {@linkcode RuntimeAdapter.serveWebSocket} on Node. */
export async function serveWebSocketNode(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<Listener> {
  const plain = (_request: IncomingMessage, response: ServerResponse) => {
    response.writeHead(426, { ...text, upgrade: "websocket" });
    response.end("a WebSocket upgrade is required\n");
  };
  const server: Server = options.tls
    ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, plain)
    : createHttpServer(plain);
  server.on("upgrade", async (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => {});
    const path = new URL(request.url ?? "/", "http://x").pathname;
    if (path !== options.path) return refuse(socket, 404, text, "not found\n");
    const peer = request.socket;
    const client = { host: (peer.remoteAddress ?? "").replace(/^::ffff:/, ""), port: peer.remotePort ?? 0 };
    const answer = await options.admit((name) => {
      const value = request.headers[name];
      return Array.isArray(value) ? value.join(", ") : value;
    }, client);
    if (!answer.ok) return refuse(socket, answer.status, answer.headers, answer.body);
    const key = request.headers["sec-websocket-key"];
    if (typeof key !== "string" || request.headers["sec-websocket-version"] !== "13") {
      return refuse(socket, 400, text, "bad WebSocket handshake\n");
    }
    const lines = [
      "HTTP/1.1 101 Switching Protocols",
      "upgrade: websocket",
      "connection: Upgrade",
      `sec-websocket-accept: ${acceptKey(key)}`,
    ];
    if (answer.protocol) lines.push(`sec-websocket-protocol: ${answer.protocol}`);
    socket.write(lines.join("\r\n") + "\r\n\r\n");
    const ws = new NodeFramedWebSocket(socket as Socket, "server", answer.protocol ?? "");
    onSocket(ws, client);
    ws.attach(head);
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

/** {@linkcode RuntimeAdapter.connectWebSocket} on Node: an `http(s).request` upgrade, then our framing. */
export function connectWebSocketNode(url: string, options: WebSocketConnectOptions): Promise<WebSocketLike> {
  const target = new URL(url);
  const ws = new NodeFramedWebSocket(undefined, "client", "");
  const key = webSocketKey();
  const tls = target.protocol === "wss:";
  const request = (tls ? httpsRequest : httpRequest)({
    host: target.hostname.replace(/^\[|\]$/g, ""),
    port: Number(target.port || (tls ? 443 : 80)),
    path: target.pathname + target.search,
    headers: {
      ...options.headers,
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-key": key,
      "sec-websocket-version": "13",
      ...(options.protocols?.length ? { "sec-websocket-protocol": options.protocols.join(", ") } : {}),
    },
    ...(tls && options.ca ? { ca: options.ca } : {}),
  });
  request.on("upgrade", (response: IncomingMessage, socket: Socket, head: Buffer) => {
    const protocol = response.headers["sec-websocket-protocol"] ?? "";
    if (response.headers["sec-websocket-accept"] !== acceptKey(key)) {
      socket.destroy();
      return ws.fail(new Error("the server's Sec-WebSocket-Accept is wrong"));
    }
    if (protocol && !(options.protocols ?? []).includes(protocol)) {
      socket.destroy();
      return ws.fail(new Error(`the server chose a subprotocol not offered: ${protocol}`));
    }
    ws.protocol = protocol;
    ws.connect(socket, head);
  });
  request.on("response", (response: IncomingMessage) => {
    response.resume();
    ws.fail(new Error(`the server answered the upgrade with HTTP ${response.statusCode}`));
  });
  request.on("error", (error) => ws.fail(error));
  request.end();
  ws.onAbort = () => request.destroy();
  return Promise.resolve(ws);
}

/** A framed WebSocket over an upgraded Node socket, either end, that can pause reading. */
class NodeFramedWebSocket extends FramedWebSocket {
  onAbort: (() => void) | undefined;
  #socket: Socket | undefined;

  constructor(socket: Socket | undefined, role: "client" | "server", protocol: string) {
    super(role);
    this.protocol = protocol;
    if (socket) {
      this.#socket = socket;
      this.readyState = 1;
    }
  }

  override get bufferedAmount(): number {
    return this.#socket?.writableLength ?? 0;
  }

  protected override get attached(): boolean {
    return this.#socket !== undefined;
  }

  /** A client's socket, once upgraded. */
  connect(socket: Socket, head: Buffer): void {
    if (this.done) return void socket.destroy();
    this.#socket = socket;
    this.readyState = 1;
    this.emit("open", {});
    this.attach(head);
  }

  /** Starts framing, `head` being the bytes that came with the upgrade. */
  attach(head: Uint8Array): void {
    const socket = this.#socket!;
    socket.setNoDelay?.(true);
    // Node reads every chunk into an ArrayBuffer of its own, its size: such a chunk is the decoder's to keep.
    socket.on("data", (chunk: Buffer) => this.received(chunk, spansBuffer(chunk)));
    socket.on("drain", () => this.emit("drain", {}));
    socket.on("end", () => this.fail("the connection ended without a close frame"));
    socket.on("error", (error) => this.fail(error));
    socket.on("close", () => this.fail("the connection closed without a close frame"));
    if (head.length > 0) this.received(head);
  }

  protected override writeFrame(frame: Uint8Array, written?: () => void): void {
    const socket = this.#socket!;
    // Node writes from the frame's memory until its callback; then the writer may go on (drain: Node's own
    // 'drain' comes only after a write() that returned false).
    socket.write(frame, (error) => {
      if (error) return;
      written?.();
      if (socket.writableLength === 0) this.emit("drain", {});
    });
  }

  /**
   * A read no message uses any more is freed now, not at a collection: Node gives every read an
   * ArrayBuffer of its own, and V8 counts them as external memory until then (measured, a 1 GiB upload
   * through a Node edge: 0.33 s of collections).
   */
  protected override reclaim(buffer: ArrayBufferLike): void {
    freeBuffer(buffer);
  }

  protected override readOn(): void {
    this.#socket?.resume();
  }

  protected override shut(): void {
    const socket = this.#socket;
    if (socket) {
      // The close frame (ours or the echo) goes out before the FIN; a peer that never closes is cut.
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_WAIT_MS).unref?.();
    } else this.onAbort?.();
  }

  pause(): void {
    this.#socket?.pause();
  }

  resume(): void {
    this.#socket?.resume();
  }
}
