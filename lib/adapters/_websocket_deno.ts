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
import { encodeFrame, FrameDecoder, type FrameEvent, Opcode } from "../core/websocket_frames.ts";

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

/**
 * {@linkcode RuntimeAdapter.connectWebSocket} on Deno: a client of our own
 * over `Deno.connect` / `Deno.connectTls` (trusting `ca`), because Deno's
 * WHATWG `WebSocket` reads every message as fast as it arrives: measured,
 * a 100 MiB download through a Deno bridge to curl ran more than 8 MiB
 * ahead of the local socket within a second. This one stops reading the
 * socket while paused, so the edge sees TCP backpressure.
 */
export function connectWebSocketDeno(url: string, options: WebSocketConnectOptions): Promise<WebSocketLike> {
  return Promise.resolve(new DenoClientWebSocket(url, options));
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_RESPONSE_HEAD = 16 * 1024;
const CLOSE_WAIT_MS = 5_000;

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

type Listen = (event: Event) => void;

/** A WHATWG-shaped client WebSocket that can pause reading. */
class DenoClientWebSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 0;
  protocol = "";
  #conn: Deno.Conn | undefined;
  readonly #listeners = new Map<string, Listen[]>();
  readonly #decoder = new FrameDecoder();
  #paused = false;
  #reading = false;
  #buffered = 0;
  #writing: Promise<void> = Promise.resolve();
  #closeSent = false;
  #done = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: string, options: WebSocketConnectOptions) {
    this.#start(new URL(url), options).catch((error) => this.#fail(error));
  }

  get bufferedAmount(): number {
    return this.#buffered;
  }

  addEventListener(type: string, listener: Listen): void {
    const list = this.#listeners.get(type);
    if (list) list.push(listener);
    else this.#listeners.set(type, [listener]);
  }

  #emit(type: string, event: Record<string, unknown>): void {
    for (const listener of this.#listeners.get(type) ?? []) listener(event as unknown as Event);
  }

  async #start(url: URL, options: WebSocketConnectOptions): Promise<void> {
    const tls = url.protocol === "wss:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(url.port || (tls ? 443 : 80));
    const conn = tls
      ? await Deno.connectTls({ hostname, port, ...(options.ca ? { caCerts: [options.ca] } : {}) })
      : await Deno.connect({ hostname, port });
    this.#conn = conn;
    if (this.#done) return void conn.close();
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    const key = base64(crypto.getRandomValues(new Uint8Array(16)));
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
    await this.#writeAll(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    // The response head, then whatever frames came with it.
    let head = new Uint8Array(0);
    const buf = new Uint8Array(4096);
    let end = -1;
    while (end < 0) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("the server closed the connection before answering the upgrade");
      const next = new Uint8Array(head.length + n);
      next.set(head);
      next.set(buf.subarray(0, n), head.length);
      head = next;
      for (let i = Math.max(0, head.length - n - 3); i + 3 < head.length; i++) {
        if (head[i] === 13 && head[i + 1] === 10 && head[i + 2] === 13 && head[i + 3] === 10) {
          end = i;
          break;
        }
      }
      if (end < 0 && head.length > MAX_RESPONSE_HEAD) throw new Error("the upgrade response is too long");
    }
    const text = new TextDecoder().decode(head.subarray(0, end)).split("\r\n");
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(text[0])?.[1];
    if (status !== "101") throw new Error(`the server answered the upgrade with HTTP ${status ?? "?"}`);
    const headers = new Map<string, string>();
    for (const line of text.slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + GUID)),
    );
    if (headers.get("sec-websocket-accept") !== base64(digest)) {
      throw new Error("the server's Sec-WebSocket-Accept is wrong");
    }
    this.protocol = headers.get("sec-websocket-protocol") ?? "";
    if (this.protocol && !(options.protocols ?? []).includes(this.protocol)) {
      throw new Error(`the server chose a subprotocol not offered: ${this.protocol}`);
    }
    this.readyState = 1;
    this.#emit("open", {});
    if (head.length > end + 4) this.#handle(this.#decoder.feed(head.subarray(end + 4)));
    this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#reading || !this.#conn) return;
    this.#reading = true;
    const buf = new Uint8Array(64 * 1024);
    try {
      while (!this.#paused && !this.#done) {
        const n = await this.#conn.read(buf);
        if (n === null) return this.#fail(new Error("the connection ended without a close frame"));
        this.#handle(this.#decoder.feed(buf.subarray(0, n)));
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#reading = false;
    }
  }

  #handle(events: FrameEvent[]): void {
    for (const e of events) {
      if (this.#done) return;
      if (e.kind === "data") this.#emit("message", { data: e.bytes.buffer });
      else if (e.kind === "end") {
        if (e.empty) this.#emit("message", { data: new ArrayBuffer(0) });
      } else if (e.kind === "text") this.#emit("message", { data: "" });
      else if (e.kind === "ping") this.#queue(encodeFrame(Opcode.Pong, e.payload, mask()));
      else if (e.kind === "close") {
        if (!this.#closeSent) {
          this.#closeSent = true;
          this.#queue(encodeFrame(Opcode.Close, closePayload(e.code === 1005 ? 1000 : e.code, ""), mask()));
        }
        this.#finish(e.code, e.reason);
      } else if (e.kind === "error") {
        this.close(1002, e.reason);
        this.#fail(new Error(`bad frame from the server: ${e.reason}`));
      }
    }
  }

  #writeAll(bytes: Uint8Array): Promise<void> {
    const conn = this.#conn!;
    return (async () => {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    })();
  }

  #queue(frame: Uint8Array): void {
    this.#buffered += frame.length;
    this.#writing = this.#writing.then(() => this.#writeAll(frame)).then(
      () => void (this.#buffered -= frame.length),
      (error) => this.#fail(error),
    );
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("WebSocket is not open");
    this.#queue(encodeFrame(Opcode.Binary, data, mask()));
  }

  close(code = 1000, reason = ""): void {
    if (this.#closeSent || this.#done) return;
    this.#closeSent = true;
    if (this.readyState !== 1) return this.#fail(new Error("closed before it opened"));
    this.readyState = 2;
    this.#queue(encodeFrame(Opcode.Close, closePayload(code, reason), mask()));
    // Reading goes on (paused or not) until the server's close frame, or a while.
    this.#paused = false;
    this.#pump();
    this.#closeTimer = setTimeout(() => this.#finish(1006, "no close frame from the server"), CLOSE_WAIT_MS);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#pump();
  }

  #finish(code: number, reason: string): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#closeTimer);
    this.readyState = 3;
    // The close frame (ours or the echo) goes out before the socket closes.
    this.#writing.finally(() => {
      try {
        this.#conn?.close();
      } catch {
        // Already closed.
      }
    });
    this.#emit("close", { code, reason });
  }

  #fail(error: unknown): void {
    if (this.#done) return;
    this.#emit("error", { message: error instanceof Error ? error.message : String(error) });
    this.#finish(1006, "");
  }
}

function mask(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(4));
}

function closePayload(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const out = new Uint8Array(2 + text.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}
