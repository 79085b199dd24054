/**
 * SOCKS over WebSocket: one WebSocket carries one SOCKS connection's raw
 * bytes. Runtime-neutral: it knows the WHATWG `WebSocket` shape (and a
 * smaller {@linkcode WebSocketPeer} for servers that are not WHATWG-shaped,
 * such as Bun's) and nothing else, so Deno, Bun, Node, workerd and the
 * bridge all meet it the same way.
 *
 * The protocol, both ways:
 * - each binary message carries the next bytes of the stream (any size but 0);
 * - an empty binary message means "no more bytes this way" (a FIN);
 * - once both ways have ended, each side closes with 1000;
 * - a failure closes with 1011; a text message is a protocol error, closed
 *   with 1003; a peer that sends faster than we may queue is closed with 1008.
 *   A browser-like client cannot send close codes below 3000 other than
 *   1000, so it sends 4000 + (code − 1000) instead (4011, 4003, 4008); both
 *   sides read 40xx like 10xx.
 * - access: `Authorization: Bearer TOKEN`, or, for clients that cannot set
 *   headers, the subprotocols `edgesocks` and `edgesocks.token.B64URL` (the
 *   token's UTF-8 bytes in unpadded base64url); the server then selects
 *   `edgesocks` (never echoing the token).
 *
 * @module
 */
import type { ByteConnection, HostPort, WebSocketLike } from "../runtime.ts";

export type { WebSocketLike };

/**
 * Close codes of the protocol (RFC 6455 section 7.4.1).
 *
 * @example
 * ```ts
 * import { WebSocketClose } from "@edgesocks/edgesocks";
 * declare const ws: WebSocket;
 * ws.close(WebSocketClose.Normal); // both directions have ended
 * ```
 */
export const WebSocketClose = {
  /** Both directions have ended. */
  Normal: 1000,
  /** A text message arrived (unsupported data). */
  UnsupportedData: 1003,
  /** The peer broke the protocol: data after its FIN. */
  ProtocolError: 1002,
  /** The peer sent more than may be queued (it ignored backpressure, or the reader is too slow). */
  PolicyViolation: 1008,
  /** The tunnel failed. */
  InternalError: 1011,
} as const;

/**
 * The subprotocol a server selects when the client offers it.
 *
 * @example
 * ```ts
 * import { WEBSOCKET_PROTOCOL } from "@edgesocks/edgesocks";
 * const ws = new WebSocket("ws://127.0.0.1:8080/socks", [WEBSOCKET_PROTOCOL]);
 * ```
 */
export const WEBSOCKET_PROTOCOL = "edgesocks";
/**
 * The prefix of the subprotocol that carries the token.
 *
 * @example
 * ```ts
 * import { tokenProtocol, WEBSOCKET_TOKEN_PREFIX } from "@edgesocks/edgesocks";
 * console.log(tokenProtocol("s3cret").startsWith(WEBSOCKET_TOKEN_PREFIX)); // true
 * ```
 */
export const WEBSOCKET_TOKEN_PREFIX = "edgesocks.token.";

/**
 * Bytes queued for sending above which `write()` waits.
 *
 * @example
 * ```ts
 * import { DEFAULT_SEND_HIGH_WATER, type WebSocketConnectionOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectionOptions = { sendHighWater: 4 * DEFAULT_SEND_HIGH_WATER };
 * ```
 */
export const DEFAULT_SEND_HIGH_WATER = 1 << 20;
/**
 * Bytes received and not yet read above which reading from the socket pauses (where it can).
 *
 * @example
 * ```ts
 * import { DEFAULT_RECEIVE_PAUSE, type WebSocketConnectionOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectionOptions = { receivePause: DEFAULT_RECEIVE_PAUSE / 4 };
 * ```
 */
export const DEFAULT_RECEIVE_PAUSE = 1 << 20;
/**
 * Bytes received and not yet read above which the WebSocket is closed (1008).
 *
 * @example
 * ```ts
 * import { DEFAULT_RECEIVE_LIMIT, type WebSocketConnectionOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectionOptions = { receiveLimit: 2 * DEFAULT_RECEIVE_LIMIT };
 * ```
 */
export const DEFAULT_RECEIVE_LIMIT = 8 << 20;
/**
 * Bytes of queued messages one `read()` may hand over as one chunk.
 *
 * @example
 * ```ts
 * import { DEFAULT_READ_COALESCE, type WebSocketConnectionOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectionOptions = { readCoalesce: DEFAULT_READ_COALESCE / 4 };
 * ```
 */
export const DEFAULT_READ_COALESCE = 1 << 20;

/**
 * A WebSocket as a server that is not WHATWG-shaped offers it (Bun's
 * `ServerWebSocket`, Node's `ws`): the caller feeds its events into the
 * {@linkcode WebSocketConnection} that {@linkcode webSocketConnection} returns.
 *
 * @example
 * ```ts
 * import type { WebSocketPeer } from "@edgesocks/edgesocks";
 * declare const ws: { send(d: Uint8Array): number; getBufferedAmount(): number; close(c: number, r: string): void };
 * const peer: WebSocketPeer = {
 *   send: (data) => ws.send(data),
 *   bufferedAmount: () => ws.getBufferedAmount(),
 *   close: (code, reason) => ws.close(code, reason),
 * };
 * ```
 */
export interface WebSocketPeer {
  /**
   * Sends one binary message. A number is read as Bun's status: 0 the
   * message was dropped (the connection fails), −1 it was queued over the
   * limit (wait for `drained()`), more than 0 it was sent.
   */
  send(data: Uint8Array): number | void;
  /** Bytes queued and not yet sent. */
  bufferedAmount(): number;
  /** Closes with `code`; must not throw. */
  close(code: number, reason: string): void;
  /** Takes back a message's bytes once they are no longer used (see {@linkcode ByteConnection.recycle}). */
  recycle?(data: Uint8Array): void;
  /** Stops reading from the socket, where the runtime can. */
  pause?(): void;
  /** Reads again. */
  resume?(): void;
}

/**
 * Bounds of a {@linkcode WebSocketConnection}.
 *
 * @example
 * ```ts
 * import type { WebSocketConnectionOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectionOptions = { receiveLimit: 4 << 20, remoteAddress: { host: "127.0.0.1", port: 5000 } };
 * ```
 */
export interface WebSocketConnectionOptions {
  /** `write()` waits while more than this is queued for sending. Default 1 MiB. */
  sendHighWater?: number;
  /** Reading pauses while more than this waits to be read (only where the socket can pause). Default 1 MiB. */
  receivePause?: number;
  /**
   * More than this waiting to be read closes the WebSocket with 1008 (where
   * reading cannot pause, a reader slower than the peer ends here). Default 8 MiB.
   */
  receiveLimit?: number;
  /**
   * When more than one message waits, `read()` joins them into one chunk of up to this many bytes (one
   * message is never split), so a reader that fell behind catches up in fewer writes: on workerd, whose
   * WebSocket cannot pause, one write per message drains slower than the messages arrive. 0: one message
   * per read. Default 1 MiB.
   */
  readCoalesce?: number;
  /** Shown as the connection's remote end (the HTTP peer). */
  remoteAddress?: HostPort;
  /**
   * Milliseconds before the first look at `bufferedAmount` while a write waits (WHATWG has no drain
   * event); later looks come at most 4 ms apart (more would cap a tunnel's throughput). Default 1.
   */
  pollMs?: number;
}

/**
 * The events a {@linkcode WebSocketPeer}'s owner feeds in.
 *
 * @example
 * ```ts
 * import { webSocketConnection, type WebSocketPeer } from "@edgesocks/edgesocks";
 * declare const peer: WebSocketPeer;
 * const conn = webSocketConnection(peer);
 * conn.message(new Uint8Array([5, 1, 0])); // bytes arrive
 * conn.message(new Uint8Array(0)); // the peer's FIN
 * ```
 */
export interface WebSocketConnection extends ByteConnection {
  /** A message arrived (a string is a text message). */
  message(data: Uint8Array | string): void;
  /** The WebSocket has closed. */
  closed(code: number, reason: string): void;
  /** The WebSocket failed. */
  failed(error: unknown): void;
  /** The send queue has drained (Bun's `drain`); optional, `bufferedAmount` is polled too. */
  drained(): void;
  /** Set once it has ended: the close code this side sent or received, and why. */
  readonly closeInfo?: { code: number; reason: string; by: "local" | "peer" };
}

/**
 * A close code as the protocol reads it: 40xx is 10xx sent by a browser-like client.
 *
 * @example
 * ```ts
 * import { normalCloseCode } from "@edgesocks/edgesocks";
 * normalCloseCode(4011); // 1011
 * ```
 */
export function normalCloseCode(code: number): number {
  return code >= 4000 && code < 4100 ? code - 3000 : code;
}

/**
 * An error of a WebSocket tunnel, with the close code it ended with.
 *
 * @example
 * ```ts
 * import { type ByteConnection, WebSocketClosedError } from "@edgesocks/edgesocks";
 * declare const conn: ByteConnection;
 * await conn.read().catch((e) => e instanceof WebSocketClosedError && console.log(e.code));
 * ```
 */
export class WebSocketClosedError extends Error {
  /** The close code (normalized: 40xx read as 10xx). */
  readonly code: number;
  /** Builds one. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "WebSocketClosedError";
    this.code = code;
  }
}

/**
 * A {@linkcode ByteConnection} over a WebSocket whose events the caller
 * feeds in. Memory stays bounded whatever the peer does: `write()` waits
 * while more than `sendHighWater` is queued, reading pauses above
 * `receivePause` where the peer can pause, and more than `receiveLimit`
 * unread closes the WebSocket (1008).
 *
 * @example
 * ```ts
 * import { webSocketConnection } from "@edgesocks/edgesocks";
 * declare const ws: { send(d: Uint8Array): number; getBufferedAmount(): number; close(c: number, r: string): void };
 * const conn = webSocketConnection({
 *   send: (d) => ws.send(d),
 *   bufferedAmount: () => ws.getBufferedAmount(),
 *   close: (c, r) => ws.close(c, r),
 * });
 * // in the server's handlers: message → conn.message(data), close → conn.closed(code, reason), drain → conn.drained()
 * ```
 */
export function webSocketConnection(
  peer: WebSocketPeer,
  options: WebSocketConnectionOptions = {},
): WebSocketConnection {
  const highWater = options.sendHighWater ?? DEFAULT_SEND_HIGH_WATER;
  const pauseAt = options.receivePause ?? DEFAULT_RECEIVE_PAUSE;
  const limit = options.receiveLimit ?? DEFAULT_RECEIVE_LIMIT;
  const coalesce = options.readCoalesce ?? DEFAULT_READ_COALESCE;
  const pollMs = options.pollMs ?? 1;
  const queue: Uint8Array[] = [];
  let head = 0;
  let queued = 0;
  let paused = false;
  let peerEnded = false; // its FIN arrived
  let writeEnded = false; // our FIN went out
  let ended = false; // closed, either way
  let failure: Error | undefined;
  let reader: { resolve(c: Uint8Array | null): void; reject(e: unknown): void } | undefined;
  let waiter:
    | { resolve(): void; reject(e: unknown): void; timer?: ReturnType<typeof setTimeout> }
    | undefined;
  let info: { code: number; reason: string; by: "local" | "peer" } | undefined;
  let onFailure: ((error: Error) => void) | undefined;
  /** Tells the relay the tunnel cannot go on: it may be stuck writing to the other side. */
  const failNow = () => {
    const f = onFailure;
    onFailure = undefined;
    if (f && failure) f(failure);
  };

  const settleReader = () => {
    if (!reader) return;
    const r = reader;
    if (head < queue.length) {
      reader = undefined;
      return r.resolve(take());
    }
    if (failure) {
      reader = undefined;
      return r.reject(failure);
    }
    if (peerEnded || ended) {
      reader = undefined;
      r.resolve(null);
    }
  };
  const take = (): Uint8Array => {
    let chunk = queue[head];
    // Messages that wait behind the first one go out with it, up to `coalesce` bytes.
    let end = head + 1, size = chunk.length;
    while (end < queue.length && size + queue[end].length <= coalesce) size += queue[end++].length;
    if (end > head + 1) {
      // Joined into one copy, each message goes back to the socket (recycle) as it is copied.
      chunk = new Uint8Array(size);
      for (let at = 0; head < end; head++) {
        chunk.set(queue[head], at);
        at += queue[head].length;
        peer.recycle?.(queue[head]);
        queue[head] = undefined as unknown as Uint8Array;
      }
    } else queue[head++] = undefined as unknown as Uint8Array;
    if (head === queue.length) queue.length = head = 0;
    else if (head > 1024) queue.splice(0, head), head = 0;
    queued -= chunk.length;
    if (paused && queued <= pauseAt / 2) {
      paused = false;
      peer.resume?.();
    }
    return chunk;
  };
  const wake = (error?: unknown) => {
    if (!waiter) return;
    const w = waiter;
    waiter = undefined;
    clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve();
  };
  /** Ends it here: `code` goes to the peer; reads and writes after the queue fail with `error` (if any). */
  const finish = (code: number, reason: string, error?: Error) => {
    if (ended) return;
    ended = true;
    if (error) failure = error;
    info = { code, reason, by: "local" };
    try {
      peer.close(code, reason);
    } catch {
      // Closing an already closed socket: nothing to tell.
    }
    // (An Error costs its stack trace: made only when a write waits to be told.)
    if (waiter) wake(failure ?? new Error("WebSocket closed"));
    settleReader();
    failNow();
  };
  const bothEnded = () => {
    if (peerEnded && writeEnded) finish(WebSocketClose.Normal, "");
  };
  const waitWritable = (): Promise<void> => {
    if (ended) return Promise.reject(failure ?? new Error("WebSocket closed"));
    if (peer.bufferedAmount() <= highWater) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: NonNullable<typeof waiter> = { resolve, reject };
      waiter = w;
      let delay = pollMs;
      const poll = () => {
        if (waiter !== w) return;
        if (peer.bufferedAmount() <= highWater) return wake();
        delay = Math.min(delay * 2, 4);
        w.timer = setTimeout(poll, delay);
      };
      w.timer = setTimeout(poll, delay);
    });
  };
  const sendOne = (data: Uint8Array): boolean => {
    let status: number | void;
    try {
      status = peer.send(data);
    } catch (error) {
      finish(WebSocketClose.InternalError, "send failed", asError(error));
      return false;
    }
    if (status === 0 && data.length > 0) {
      // Bun dropped it: bytes are lost, so the tunnel cannot go on.
      finish(WebSocketClose.InternalError, "send dropped", new Error("WebSocket send dropped the message"));
      return false;
    }
    return true;
  };

  const conn: WebSocketConnection = {
    remoteAddress: options.remoteAddress,
    get closeInfo() {
      return info;
    },
    message(data) {
      if (ended) return;
      if (typeof data === "string") {
        return finish(
          WebSocketClose.UnsupportedData,
          "text messages are not part of the protocol",
          new WebSocketClosedError(WebSocketClose.UnsupportedData, "the peer sent a text message"),
        );
      }
      if (peerEnded) {
        return finish(
          WebSocketClose.ProtocolError,
          "data after the end of the stream",
          new WebSocketClosedError(WebSocketClose.ProtocolError, "the peer sent data after its FIN"),
        );
      }
      if (data.length === 0) {
        peerEnded = true;
        settleReader();
        return bothEnded();
      }
      if (reader && head === queue.length) {
        const r = reader;
        reader = undefined;
        return r.resolve(data);
      }
      if (queued + data.length > limit) {
        return finish(
          WebSocketClose.PolicyViolation,
          `more than ${limit} bytes unread`,
          new WebSocketClosedError(
            WebSocketClose.PolicyViolation,
            `more than ${limit} bytes received and not yet read (the reader is slower than the peer)`,
          ),
        );
      }
      queue.push(data);
      queued += data.length;
      if (!paused && queued > pauseAt && peer.pause) {
        paused = true;
        peer.pause();
      }
    },
    closed(code, reason) {
      if (ended) return;
      ended = true;
      info = { code, reason, by: "peer" };
      const normal = normalCloseCode(code);
      // 1000 means both ways have ended; anything else before our reads are done is a failure.
      if (normal !== WebSocketClose.Normal && !(peerEnded && writeEnded)) {
        failure = new WebSocketClosedError(
          normal,
          `WebSocket closed by the peer with ${code}${reason ? ` (${reason})` : ""}`,
        );
      } else if (!peerEnded) peerEnded = true;
      if (waiter) wake(failure ?? new Error("WebSocket closed by the peer"));
      settleReader();
      failNow();
    },
    failed(error) {
      finish(WebSocketClose.InternalError, "", asError(error));
    },
    onFailure(listener) {
      onFailure = listener;
      if (failure) failNow();
    },
    drained() {
      if (waiter && peer.bufferedAmount() <= highWater) wake();
    },
    recycle: peer.recycle ? (chunk) => peer.recycle!(chunk) : undefined,
    read() {
      if (reader) return Promise.reject(new TypeError("a read is already pending"));
      if (head < queue.length) return Promise.resolve(take());
      if (failure) return Promise.reject(failure);
      if (peerEnded || ended) return Promise.resolve(null);
      return new Promise((resolve, reject) => (reader = { resolve, reject }));
    },
    async write(chunk) {
      if (writeEnded) throw new TypeError("write after closeWrite");
      if (ended) throw failure ?? new Error("WebSocket closed");
      if (chunk.length === 0) return; // an empty message would be a FIN
      if (!sendOne(chunk)) throw failure;
      await waitWritable();
    },
    closeWrite() {
      if (writeEnded || ended) return Promise.resolve();
      writeEnded = true;
      sendOne(new Uint8Array(0));
      bothEnded();
      return Promise.resolve();
    },
    close() {
      if (ended) return;
      if (!writeEnded) {
        writeEnded = true;
        sendOne(new Uint8Array(0));
      }
      finish(WebSocketClose.Normal, "");
    },
    abort() {
      finish(WebSocketClose.InternalError, "tunnel failed");
    },
  };
  return conn;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * A {@linkcode ByteConnection} over a WHATWG-shaped WebSocket, open or still
 * connecting (writes then wait for `open`: one chunk at most, the relay
 * reads no further meanwhile). Close codes a browser-like socket refuses
 * (below 3000 but 1000) go out as 4000 + (code − 1000).
 *
 * @example
 * ```ts
 * import { fromWebSocket } from "@edgesocks/edgesocks";
 * const ws = new WebSocket("ws://127.0.0.1:8080/socks", ["edgesocks", "edgesocks.token.c2VjcmV0"]);
 * const conn = fromWebSocket(ws);
 * await conn.write(new Uint8Array([5, 1, 0]));
 * ```
 */
export function fromWebSocket(
  ws: WebSocketLike,
  options: WebSocketConnectionOptions = {},
): ByteConnection {
  ws.binaryType = "arraybuffer";
  let open = ws.readyState === 1;
  if (options.sendHighWater === undefined && ws.writeHighWater !== undefined) {
    options = { ...options, sendHighWater: ws.writeHighWater };
  }
  const conn = webSocketConnection({
    send: (data) => ws.send(data as Uint8Array<ArrayBuffer>),
    bufferedAmount: () => ws.bufferedAmount,
    close: (code, reason) => {
      if (ws.readyState >= 2) return;
      try {
        ws.close(code, reason);
      } catch {
        ws.close(code === 1000 ? 1000 : code + 3000, reason);
      }
    },
    recycle: ws.recycle ? (data) => ws.recycle!(data) : undefined,
    pause: ws.pause ? () => void ws.pause!() : undefined,
    resume: ws.resume ? () => void ws.resume!() : undefined,
  }, options);
  ws.addEventListener("message", (event) => {
    const data = (event as MessageEvent).data;
    conn.message(
      typeof data === "string" ? data : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        // Our framed sockets give the message's own Uint8Array, which recycle() must see again.
        : data instanceof Uint8Array
        ? data
        : toBytes(data),
    );
  });
  ws.addEventListener(
    "close",
    (event) => conn.closed((event as CloseEvent).code, (event as CloseEvent).reason),
  );
  ws.addEventListener("drain", () => conn.drained());
  ws.addEventListener("error", (event) => {
    const message = (event as ErrorEvent).message;
    conn.failed(new Error(`WebSocket error${message ? `: ${message}` : ""}`));
  });
  if (open) return conn;
  const opened = new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => {
      open = true;
      resolve();
    });
    ws.addEventListener("close", (event) => {
      // Every socket closes in the end; only one that never opened failed to open (and gets the Error).
      if (open) return;
      const code = (event as CloseEvent).code;
      reject(new WebSocketClosedError(code, `WebSocket failed to open (close code ${code})`));
    });
  });
  opened.catch(() => {});
  return {
    ...conn,
    read: () => conn.read(),
    async write(chunk) {
      if (!open) await opened;
      return conn.write(chunk);
    },
    async closeWrite() {
      if (!open) await opened;
      return conn.closeWrite();
    },
    close: () => conn.close(),
    abort: () => conn.abort!(),
    remoteAddress: options.remoteAddress,
  };
}

function toBytes(data: unknown): Uint8Array {
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("unexpected WebSocket message data (set binaryType to arraybuffer)");
}

/**
 * The token as the `Sec-WebSocket-Protocol` value that carries it:
 * `edgesocks.token.` and the token's UTF-8 bytes in unpadded base64url.
 *
 * @example
 * ```ts
 * import { tokenProtocol } from "@edgesocks/edgesocks";
 * const ws = new WebSocket("wss://edge.example/socks", ["edgesocks", tokenProtocol("s3cret")]);
 * ```
 */
export function tokenProtocol(token: string): string {
  const bytes = new TextEncoder().encode(token);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return WEBSOCKET_TOKEN_PREFIX + btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return undefined;
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/**
 * What the server answers an upgrade request: go on (selecting `protocol`
 * when the client offered `edgesocks`), or refuse with `status`.
 *
 * @example
 * ```ts
 * import { admitWebSocket, type WebSocketAdmission } from "@edgesocks/edgesocks";
 * const answer: WebSocketAdmission = await admitWebSocket(() => null, "s3cret");
 * console.log(answer.ok ? "upgrade" : answer.status); // 426: no Upgrade header
 * ```
 */
export type WebSocketAdmission =
  | { ok: true; protocol?: string }
  | { ok: false; status: 401 | 426; reason: string };

async function digest(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

/**
 * Checks an upgrade request's token (when `token` is set) in constant time:
 * both sides are hashed (SHA-256) and the digests compared byte by byte
 * without an early exit, so neither the token's length nor its prefix leaks.
 * The token comes from `Authorization: Bearer TOKEN`, else from an
 * `edgesocks.token.B64URL` subprotocol. `header(name)` reads a request header.
 *
 * @example
 * ```ts
 * import { admitWebSocket } from "@edgesocks/edgesocks";
 * const request = new Request("http://edge/socks", { headers: { authorization: "Bearer s3cret", upgrade: "websocket" } });
 * const answer = await admitWebSocket((name) => request.headers.get(name), "s3cret");
 * if (!answer.ok) console.log(answer.status); // 401 for a wrong or missing token
 * ```
 */
export async function admitWebSocket(
  header: (name: string) => string | null | undefined,
  token: string | undefined,
): Promise<WebSocketAdmission> {
  if (!/\bwebsocket\b/i.test(header("upgrade") ?? "")) {
    return { ok: false, status: 426, reason: "a WebSocket upgrade is required" };
  }
  const offered = (header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  const protocol = offered.includes(WEBSOCKET_PROTOCOL) ? WEBSOCKET_PROTOCOL : undefined;
  if (token === undefined) return { ok: true, protocol };
  let given: Uint8Array | undefined;
  const bearer = /^\s*bearer\s+(\S+)\s*$/i.exec(header("authorization") ?? "");
  if (bearer) given = new TextEncoder().encode(bearer[1]);
  else {
    const carried = offered.find((p) => p.startsWith(WEBSOCKET_TOKEN_PREFIX));
    if (carried) given = fromBase64Url(carried.slice(WEBSOCKET_TOKEN_PREFIX.length));
  }
  if (!given) return { ok: false, status: 401, reason: "missing token" };
  const [a, b] = await Promise.all([digest(given), digest(new TextEncoder().encode(token))]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0 ? { ok: true, protocol } : { ok: false, status: 401, reason: "wrong token" };
}

/**
 * The HTTP response that refuses an upgrade: the status, a plain-text body,
 * and for 401 `WWW-Authenticate: Bearer`; never a SOCKS byte.
 *
 * @example
 * ```ts
 * import { refusalResponse } from "@edgesocks/edgesocks";
 * const r = refusalResponse({ status: 401, reason: "wrong token" });
 * console.log(r.status, r.headers["www-authenticate"]); // 401 Bearer
 * ```
 */
export function refusalResponse(
  answer: { status: number; reason: string },
): { status: number; headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
  if (answer.status === 401) headers["www-authenticate"] = `Bearer realm="edgesocks"`;
  if (answer.status === 426) headers["upgrade"] = "websocket";
  return { status: answer.status, headers, body: `${answer.reason}\n` };
}
