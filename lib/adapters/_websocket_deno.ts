/**
 * WebSockets on Deno, both ends over `Deno.listen` / `Deno.connect` (and
 * their TLS forms) with the framing of `core/websocket_frames.ts`: Deno's
 * own WebSockets (`Deno.upgradeWebSocket`, the global `WebSocket`) read
 * every message as it arrives and cannot pause, so they cannot hold a fast
 * peer back.
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
import { nextReadSize } from "../core/bytes.ts";
import { FramedWebSocket, webSocketKey } from "./_websocket_framed.ts";

/**
 * Bytes a framed socket reads at a time: from 4 KiB, doubling while reads fill the buffer (to 64 KiB) and
 * halving after one that used less than half, as the TCP adapter's reads do. A read stays pending for as
 * long as a tunnel is idle, so an idle one holds a small buffer, not 64 KiB.
 */
const READ_MIN = 4 * 1024;
const READ_MAX = 64 * 1024;

/** How long a new connection may take to send its upgrade request. */
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * {@linkcode RuntimeAdapter.serveWebSocket} on Deno: `Deno.listen` (or
 * `Deno.listenTls`) and the upgrade and framing of our own, not `Deno.serve`
 * + `Deno.upgradeWebSocket`: that socket reads every message as fast as it
 * arrives and cannot pause, so a client uploading faster than the
 * destination takes it filled the 8 MiB receive bound within 86 ms
 * (measured, Bun's bridge to a local sink). This one stops reading the
 * socket while the tunnel's queue is full.
 */
export function serveWebSocketDeno(
  address: HostPort,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<Listener> {
  if (options.reusePort && typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    return Promise.reject(new Error("sharing a port (SO_REUSEPORT) needs Deno's --unstable-net flag"));
  }
  let listener: Deno.Listener;
  try {
    const base = {
      hostname: address.host,
      port: address.port,
      ...(options.reusePort ? { reusePort: true } : {}),
    };
    listener = options.tls
      ? Deno.listenTls({ ...base, cert: options.tls.cert, key: options.tls.key })
      : Deno.listen({ ...base, transport: "tcp" });
  } catch (error) {
    return Promise.reject(error);
  }
  let closed = false;
  (async () => {
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (closed || error instanceof Deno.errors.BadResource) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      void accept(conn, options, onSocket).catch(() => {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      });
    }
  })();
  return Promise.resolve({
    address: { host: address.host, port: (listener.addr as Deno.NetAddr).port },
    close: () => {
      closed = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      return Promise.resolve();
    },
  });
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  426: "Upgrade Required",
};

/** One connection: the upgrade request, the answer, then frames. */
async function accept(
  conn: Deno.Conn,
  options: WebSocketServeOptions,
  onSocket: (socket: WebSocketLike, client: HostPort) => void,
): Promise<void> {
  const remote = conn.remoteAddr as Deno.NetAddr;
  const client = { host: remote.hostname, port: remote.port };
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  const timer = setTimeout(() => conn.close(), REQUEST_TIMEOUT_MS);
  let request: { head: string[]; rest: Uint8Array };
  try {
    request = await readHead(conn);
  } finally {
    clearTimeout(timer);
  }
  const [method, target, version] = request.head[0].split(" ");
  const headers = parseHeaders(request.head.slice(1));
  const refuse = async (status: number, extra: Record<string, string>, body: string) => {
    const bytes = new TextEncoder().encode(body);
    const lines = [`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}`, "connection: close"];
    for (const [name, value] of Object.entries(extra)) lines.push(`${name}: ${value}`);
    lines.push(`content-length: ${bytes.length}`);
    await writeAll(conn, concat(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"), bytes));
    conn.close();
  };
  if (method !== "GET" || !/^HTTP\/1\.1$/.test(version ?? "")) {
    return refuse(400, { "content-type": "text/plain; charset=utf-8" }, "bad request\n");
  }
  if (new URL(target ?? "/", "http://x").pathname !== options.path) {
    return refuse(404, { "content-type": "text/plain; charset=utf-8" }, "not found\n");
  }
  const answer = await options.admit((name) => headers.get(name), client);
  if (!answer.ok) return refuse(answer.status, answer.headers, answer.body);
  const key = headers.get("sec-websocket-key");
  if (!key || headers.get("sec-websocket-version") !== "13") {
    return refuse(400, { "content-type": "text/plain; charset=utf-8" }, "bad WebSocket handshake\n");
  }
  const lines = [
    "HTTP/1.1 101 Switching Protocols",
    "upgrade: websocket",
    "connection: Upgrade",
    `sec-websocket-accept: ${await acceptKey(key)}`,
  ];
  if (answer.protocol) lines.push(`sec-websocket-protocol: ${answer.protocol}`);
  await writeAll(conn, new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
  const socket = new DenoFramedWebSocket("server");
  socket.protocol = answer.protocol ?? "";
  socket.readyState = 1;
  onSocket(socket, client);
  socket.attach(conn, request.rest);
}

function parseHeaders(lines: string[]): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  return headers;
}

/** Reads an HTTP head (up to 16 KiB): its lines, and the bytes after it. */
async function readHead(conn: Deno.Conn): Promise<{ head: string[]; rest: Uint8Array }> {
  let head: Uint8Array = new Uint8Array(0);
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("the connection ended before the end of the HTTP head");
    const from = Math.max(0, head.length - 3);
    head = concat(head, buf.subarray(0, n));
    for (let i = from; i + 3 < head.length; i++) {
      if (head[i] === 13 && head[i + 1] === 10 && head[i + 2] === 13 && head[i + 3] === 10) {
        return {
          head: new TextDecoder().decode(head.subarray(0, i)).split("\r\n"),
          rest: head.slice(i + 4),
        };
      }
    }
    if (head.length > MAX_HEAD) throw new Error("the HTTP head is too long");
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function acceptKey(key: string): Promise<string> {
  return base64(new Uint8Array(await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + GUID))));
}

/**
 * {@linkcode RuntimeAdapter.connectWebSocket} on Deno: a client of our own
 * over `Deno.connect` / `Deno.connectTls` (trusting `ca`), because Deno's
 * WHATWG `WebSocket` reads every message as fast as it arrives: measured,
 * a 100 MiB download through a Deno bridge to curl ran more than 8 MiB
 * ahead of the local socket within a second. This one stops reading the
 * socket while paused, so the edge sees TCP backpressure.
 */
export function connectWebSocketDeno(url: string, options: WebSocketConnectOptions): Promise<WebSocketLike> {
  return Promise.resolve(DenoClientWebSocket.open(new URL(url), options));
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD = 16 * 1024;

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** A client's upgrade: the request, the answer checked; then the socket is framed. */
class DenoClientWebSocket {
  static open(url: URL, options: WebSocketConnectOptions): DenoFramedWebSocket {
    const socket = new DenoFramedWebSocket("client");
    DenoClientWebSocket.#handshake(socket, url, options).catch((error) => socket.fail(error));
    return socket;
  }

  static async #handshake(socket: DenoFramedWebSocket, url: URL, options: WebSocketConnectOptions) {
    const tls = url.protocol === "wss:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(url.port || (tls ? 443 : 80));
    const conn = tls
      ? await Deno.connectTls({ hostname, port, ...(options.ca ? { caCerts: [options.ca] } : {}) })
      : await Deno.connect({ hostname, port });
    if (socket.readyState === 3) return void conn.close();
    socket.conn = conn;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    const key = webSocketKey();
    const lines = [
      `GET ${url.pathname}${url.search} HTTP/1.1`,
      `host: ${url.host}`,
      "upgrade: websocket",
      "connection: Upgrade",
      `sec-websocket-key: ${key}`,
      "sec-websocket-version: 13",
    ];
    if (options.protocols?.length) lines.push(`sec-websocket-protocol: ${options.protocols.join(", ")}`);
    for (const [name, value] of Object.entries(options.headers ?? {})) lines.push(`${name}: ${value}`);
    await writeAll(conn, new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    const { head, rest } = await readHead(conn);
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head[0])?.[1];
    if (status !== "101") throw new Error(`the server answered the upgrade with HTTP ${status ?? "?"}`);
    const headers = parseHeaders(head.slice(1));
    if (headers.get("sec-websocket-accept") !== await acceptKey(key)) {
      throw new Error("the server's Sec-WebSocket-Accept is wrong");
    }
    const protocol = headers.get("sec-websocket-protocol") ?? "";
    if (protocol && !(options.protocols ?? []).includes(protocol)) {
      throw new Error(`the server chose a subprotocol not offered: ${protocol}`);
    }
    socket.protocol = protocol;
    socket.readyState = 1;
    socket.attach(conn, rest);
  }
}

/**
 * A framed WebSocket over a `Deno.Conn` after the upgrade, that can pause reading. (Exported for the
 * tests, which give it a stand-in connection.)
 */
export class DenoFramedWebSocket extends FramedWebSocket {
  conn: Deno.Conn | undefined;
  #paused = false;
  #reading = false;
  #buffered = 0;
  #writing: Promise<void> = Promise.resolve();
  #spare: Uint8Array<ArrayBuffer> | undefined;
  #readSize = READ_MIN;

  override get bufferedAmount(): number {
    return this.#buffered;
  }

  protected override get attached(): boolean {
    return this.conn !== undefined;
  }

  /** Starts framing on `conn` (upgraded), `rest` being the bytes that came after the HTTP head. */
  attach(conn: Deno.Conn, rest: Uint8Array): void {
    this.conn = conn;
    if (this.isClient) this.emit("open", {});
    if (rest.length > 0) this.received(rest);
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#reading || !this.conn) return;
    this.#reading = true;
    let buf = this.#buffer();
    try {
      while (!this.#paused && !this.done) {
        const n = await this.conn.read(buf);
        if (n === null) return this.fail("the connection ended without a close frame");
        const size = buf.length;
        this.#readSize = nextReadSize(size, n, READ_MIN, READ_MAX);
        // A big read is handed over whole (its messages are views of it) and the next goes into another
        // buffer; a small one is copied from, so that a trickle of small messages holds no big buffers.
        if (n >= size / 4) {
          const chunk = buf.subarray(0, n);
          buf = this.#buffer();
          this.received(chunk, true);
        } else {
          this.received(buf.subarray(0, n));
          if (this.#readSize !== size) buf = this.#buffer();
        }
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.#reading = false;
    }
  }

  protected override writeFrame(frame: Uint8Array, written?: () => void): void {
    const conn = this.conn!;
    this.#buffered += frame.length;
    this.#writing = this.#writing.then(() => writeAll(conn, frame)).then(
      () => {
        this.#buffered -= frame.length;
        written?.();
        this.emit("drain", {});
      },
      (error) => this.fail(error),
    );
  }

  /** A buffer of the read size: the spare one if it has that size, else a new one. */
  #buffer(): Uint8Array<ArrayBuffer> {
    const spare = this.#spare;
    this.#spare = undefined;
    return spare?.length === this.#readSize ? spare : new Uint8Array(this.#readSize);
  }

  /** A read no message uses any more: the next big read goes into it (a new buffer per read is an allocation and a first touch). */
  protected override reclaim(buffer: ArrayBufferLike): void {
    if (buffer.byteLength === this.#readSize) this.#spare = new Uint8Array(buffer as ArrayBuffer);
  }

  protected override readOn(): void {
    this.#paused = false;
    void this.#pump();
  }

  protected override shut(): void {
    const conn = this.conn;
    this.#writing.finally(() => {
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
    });
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    void this.#pump();
  }
}
