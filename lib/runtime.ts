/**
 * The small connection interface the relay and the driver are written
 * against. Each runtime adapter implements it over its native sockets; a Web
 * Streams pair is wrapped into it by `streams.ts`.
 *
 * @module
 */
import type { HostPort } from "./core/address.ts";

export type { HostPort };

/**
 * A bidirectional byte stream with half-close.
 *
 * Contract:
 * - `read()` resolves with the next chunk (owned by the caller from then on)
 *   or `null` once the peer has sent its FIN. At most one read is pending.
 *   The adapter reads at most one chunk ahead of the caller: while a chunk
 *   waits for a read() it stops reading from the socket (backpressure).
 * - `write()` resolves once the chunk is accepted and the connection's send
 *   buffer is below its high-water mark; the caller must not modify the chunk
 *   afterwards. It rejects if the connection is closed or reset.
 * - `closeWrite()` sends a FIN after pending writes; reading goes on.
 * - `close()` closes both directions at once, gracefully: data already
 *   handed to the kernel is still delivered, then a FIN. Idempotent; pending
 *   reads resolve `null` or reject.
 * - `abort()`, where present, closes with a reset (RST) so the peer learns
 *   the tunnel failed; the relay uses it when the other side fails and when
 *   the tunnel is cut by a shutdown.
 *
 * @example
 * ```ts
 * import type { ByteConnection } from "@edgesocks/edgesocks";
 * async function echo(conn: ByteConnection) {
 *   for (let c = await conn.read(); c; c = await conn.read()) await conn.write(c);
 *   await conn.closeWrite();
 * }
 * ```
 */
export interface ByteConnection {
  /** Next chunk, or `null` at the peer's FIN. */
  read(): Promise<Uint8Array | null>;
  /** Queues `chunk`; resolves when more may be written. */
  write(chunk: Uint8Array): Promise<void>;
  /** Sends a FIN (half-close) once queued data is flushed. */
  closeWrite(): Promise<void>;
  /** Closes both directions now, gracefully. */
  close(): void;
  /** Closes both directions now with a reset, where the runtime can. */
  abort?(): void;
  /**
   * Hands back a chunk that this connection's `read()` returned, once the caller is done with it: the
   * connection may read into its memory again or free it, and nothing may touch the chunk afterwards.
   * A connection that has it also promises that its own `write()` resolves only once it no longer needs
   * the chunk's memory (sent, or copied). The relay hands a chunk back only between two such connections,
   * once the other side's write of it has resolved. Optional.
   */
  recycle?(chunk: Uint8Array): void;
  /**
   * Calls `listener` once if the connection fails by itself, whether or not a read or write waits on it (a
   * WebSocket closed with an error by either end): a relay busy writing to the other side ends the tunnel
   * then, instead of waiting for a write that may never finish. One listener; called at once when it has
   * failed already.
   */
  onFailure?(listener: (error: Error) => void): void;
  /** Local end of the socket, when it is a socket. */
  readonly localAddress?: HostPort;
  /** Remote end of the socket, when it is a socket. */
  readonly remoteAddress?: HostPort;
}

/**
 * Forward and reverse DNS, as used by CONNECT by name, RESOLVE and RESOLVE_PTR.
 *
 * @example
 * ```ts
 * import { ReplyCode, type Resolver, SocksError } from "@edgesocks/edgesocks";
 * const none = (q: string) => Promise.reject(new SocksError(ReplyCode.HostUnreachable, `${q}: not found`));
 * const fixed: Resolver = {
 *   lookup: (name) => name === "example.test" ? Promise.resolve(["192.0.2.1"]) : none(name),
 *   reverse: (ip) => none(ip),
 * };
 * ```
 */
export interface Resolver {
  /**
   * Addresses of `name`, IPv4 first then IPv6. Rejects with a `SocksError`
   * (HostUnreachable) when the name does not exist or has no address.
   */
  lookup(name: string): Promise<string[]>;
  /** Host names of `ip` (PTR). Rejects with a `SocksError` (HostUnreachable) when there is none. */
  reverse(ip: string): Promise<string[]>;
}

/**
 * Options for an outbound connection.
 *
 * @example
 * ```ts
 * import type { DialOptions, RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const options: DialOptions = { host: "93.184.216.34", port: 443, signal: AbortSignal.timeout(10_000) };
 * const upstream = await adapter.dial(options);
 * ```
 */
export interface DialOptions {
  /** An IP literal: names are resolved (and checked by policy) before dialing. */
  host: string;
  /** TCP port. */
  port: number;
  /** Aborts the attempt (connect timeout). */
  signal?: AbortSignal;
}

/**
 * A listening socket.
 *
 * @example
 * ```ts
 * import type { Listener, RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const listener: Listener = await adapter.listen({ host: "127.0.0.1", port: 0 }, (conn) => conn.close());
 * console.log(listener.address.port); // the port the system picked
 * await listener.close();
 * ```
 */
export interface Listener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  /** Stops accepting; open connections are left alone. */
  close(): Promise<void>;
}

/**
 * A listening Unix domain socket.
 *
 * @example
 * ```ts
 * import type { RuntimeAdapter, UnixListener } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const listener: UnixListener = await adapter.listenUnix!("/run/edgesocks.sock", (conn) => conn.close());
 * await listener.close(); // removes the socket file
 * ```
 */
export interface UnixListener {
  /** The socket file's path. */
  readonly path: string;
  /** Stops accepting and removes the socket file; open connections are left alone. */
  close(): Promise<void>;
}

/**
 * Options for {@linkcode RuntimeAdapter.listen}.
 *
 * @example
 * ```ts
 * import type { ListenOptions, RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const options: ListenOptions = { reusePort: true }; // several processes share the port
 * await adapter.listen({ host: "127.0.0.1", port: 1080 }, (conn) => conn.close(), undefined, options);
 * ```
 */
export interface ListenOptions {
  /**
   * Sets SO_REUSEPORT, so that several processes can listen on the same
   * address and the kernel spreads new connections between them (Linux).
   * Rejects where the runtime cannot (Node before 22.12; Deno without
   * `--unstable-net`).
   */
  reusePort?: boolean;
}

/**
 * What a runtime adapter provides: listen, connect, DNS. Nothing outside an
 * adapter touches `Deno.`, `Bun.` or `node:net`.
 *
 * @example
 * ```ts
 * import { createHandler, type RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter; // denoAdapter, bunAdapter or nodeAdapter
 * const handle = createHandler({ dial: adapter.dial, resolver: adapter.resolver(), relay: adapter.relay });
 * await adapter.listen({ host: "127.0.0.1", port: 1080 }, (conn) => void handle(conn));
 * ```
 */
export interface RuntimeAdapter {
  /** Runtime name and version, e.g. `"deno 2.9.6"`. */
  readonly name: string;
  /** Opens an outbound TCP connection; rejects with a `SocksError` carrying the right reply code. */
  dial(options: DialOptions): Promise<ByteConnection>;
  /**
   * Listens on `address`, calling `onConnection` for each accepted socket.
   * Accept failures (out of descriptors, above all) go to `onAcceptError`;
   * the listener keeps going. Where the runtime does not report them (Node
   * closes such connections, Bun leaves them queued, both silently), the
   * adapter probes for running out of descriptors and reports that instead.
   */
  listen(
    address: HostPort,
    onConnection: (conn: ByteConnection) => void,
    onAcceptError?: (error: unknown) => void,
    options?: ListenOptions,
  ): Promise<Listener>;
  /**
   * Listens on a Unix domain socket at `path` (which must not exist yet),
   * where the runtime can; its connections have no `remoteAddress`. The
   * socket file is removed on close.
   */
  listenUnix?(
    path: string,
    onConnection: (conn: ByteConnection) => void,
    onAcceptError?: (error: unknown) => void,
  ): Promise<UnixListener>;
  /** A resolver using `nameServer`, or the system's resolver when it is absent. */
  resolver(nameServer?: HostPort): Resolver;
  /**
   * A faster relay over the runtime's own sockets, for two connections this
   * adapter made; returns undefined when it cannot take them (then the
   * runtime-neutral `relay()` runs). Same contract as `relay()`.
   */
  relay?: NativeRelay;
  /**
   * The addresses of this host's network interfaces, where the runtime can
   * list them (and may: Deno asks for `--allow-sys`); undefined where it
   * cannot. The default policy refuses them as destinations.
   */
  interfaceAddresses?(): string[] | undefined;
  /**
   * True where the runtime ties each timer to the connection that set it, so
   * that one connection's timer cannot serve another's (workerd cancels a
   * request's timers when it ends, and a callback may not touch another
   * request's sockets): each session then times its own handshake and connect
   * instead of sharing one timer per timeout with the other sessions.
   */
  readonly timersPerConnection?: boolean;
  /**
   * Serves WebSocket upgrades on `address` at `options.path`, handing each
   * admitted socket to `onSocket` with the HTTP peer's address. Absent where
   * the runtime cannot (then `--listen-ws` is a startup error). An HTTP
   * server, not a generic `serveHttp`: the upgrade is where the runtimes
   * differ (Deno's `upgradeWebSocket`, Bun's `server.upgrade` and handlers,
   * Node's `upgrade` event), and it is all the SOCKS ingress needs.
   */
  serveWebSocket?(
    address: HostPort,
    options: WebSocketServeOptions,
    onSocket: (socket: WebSocketLike, client: HostPort) => void,
  ): Promise<Listener>;
  /**
   * Opens a client WebSocket to `url` (ws: or wss:), with `headers` and
   * `protocols`, trusting `ca` (PEM) besides the system's roots when given.
   * Rejects with a TypeError where the runtime cannot (Node before 22 without `ws`).
   */
  connectWebSocket?(url: string, options: WebSocketConnectOptions): Promise<WebSocketLike>;
  /**
   * Binds a UDP socket (UDP ASSOCIATE's relay); absent where the runtime has
   * no UDP (Deno without `--unstable-net`): then UDP ASSOCIATE is answered
   * "command not supported" and {@linkcode RuntimeAdapter.udpUnavailable}
   * says why.
   */
  udp?(options: UdpBindOptions): Promise<UdpSocket>;
  /** Why `udp` is absent, in words for the startup line (e.g. "Deno needs --unstable-net"). */
  readonly udpUnavailable?: string;
}

/**
 * The WHATWG `WebSocket` members the SOCKS-over-WebSocket ingress uses: the
 * global `WebSocket` of every runtime, `Deno.upgradeWebSocket`'s socket,
 * workerd's `WebSocketPair` end, Node's `ws`, an adapter's shim of Bun's
 * `ServerWebSocket`. `send()` may return Bun's status (0: dropped, −1:
 * queued over the limit); `pause()`/`resume()`, where present, stop and
 * restart reading from the socket (TCP backpressure).
 *
 * @example
 * ```ts
 * import type { WebSocketLike } from "@edgesocks/edgesocks";
 * const ws: WebSocketLike = new WebSocket("ws://127.0.0.1:8080/socks", ["edgesocks"]);
 * ```
 */
export interface WebSocketLike {
  /** Set to `"arraybuffer"` by the ingress. */
  binaryType: string;
  /** Bytes queued by `send()` and not yet handed to the network. */
  readonly bufferedAmount: number;
  /**
   * Where present, the `bufferedAmount` above which a writer should wait instead of the ingress's default
   * (1 MiB): edgesocks' own framed sockets say 0, each waiting write then reusing one frame buffer.
   */
  readonly writeHighWater?: number;
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** Sends one binary message. */
  send(data: Uint8Array<ArrayBuffer>): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
  /** Listens for `open`, `message`, `close`, `error` (and `drain`, where there is one). */
  addEventListener(type: string, listener: (event: Event) => void): void;
  /**
   * Hands back the bytes of a message (the very `data` a `message` event gave) once they are no longer
   * used, so the socket may read into or free their memory. Optional.
   */
  recycle?(data: Uint8Array): void;
  /** Stops reading from the socket. */
  pause?(): unknown;
  /** Reads from the socket again. */
  resume?(): unknown;
}

/**
 * Options for {@linkcode RuntimeAdapter.serveWebSocket}.
 *
 * @example
 * ```ts
 * import type { WebSocketServeOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketServeOptions = {
 *   path: "/socks",
 *   admit: () => Promise.resolve({ ok: true, protocol: "edgesocks" }),
 * };
 * ```
 */
export interface WebSocketServeOptions {
  /** The one path served; other paths get 404. */
  path: string;
  /** SO_REUSEPORT (several processes on one address), where the runtime can. */
  reusePort?: boolean;
  /** Serve HTTPS/WSS with this certificate chain and key (PEM text). */
  tls?: { cert: string; key: string };
  /**
   * Decides an upgrade request from its headers (`header(name)`, lower case
   * names): go on, selecting `protocol`; or refuse with an HTTP response.
   */
  admit(
    header: (name: string) => string | null | undefined,
    client: HostPort,
  ): Promise<
    { ok: true; protocol?: string } | {
      ok: false;
      status: number;
      headers: Record<string, string>;
      body: string;
    }
  >;
}

/**
 * Options for {@linkcode RuntimeAdapter.connectWebSocket}.
 *
 * @example
 * ```ts
 * import type { WebSocketConnectOptions } from "@edgesocks/edgesocks";
 * const options: WebSocketConnectOptions = { headers: { authorization: "Bearer s3cret" }, protocols: ["edgesocks"] };
 * ```
 */
export interface WebSocketConnectOptions {
  /** Request headers (the token, above all). */
  headers?: Record<string, string>;
  /** Subprotocols to offer. */
  protocols?: string[];
  /** PEM certificates to trust besides the system's (a private CA). */
  ca?: string;
}

/**
 * What {@linkcode RuntimeAdapter.udp} binds, and where its datagrams go.
 *
 * @example
 * ```ts
 * import type { UdpBindOptions } from "@edgesocks/edgesocks";
 * const options: UdpBindOptions = {
 *   host: "127.0.0.1",
 *   port: 0,
 *   onDatagram: (data, from) => console.log(`${data.length} bytes from ${from.host}:${from.port}`),
 * };
 * ```
 */
export interface UdpBindOptions {
  /** An IP literal to bind to. */
  host: string;
  /** The port; 0 picks a free one. */
  port: number;
  /**
   * Called once per datagram received, with its source (an IPv4-mapped
   * source is given as IPv4). `data` is the caller's to keep.
   */
  onDatagram(data: Uint8Array, from: HostPort): void;
}

/**
 * A bound UDP socket.
 *
 * Contract: `send()` never throws and never waits: it returns false when the
 * datagram was not taken (the socket is closed, the destination is not an IP
 * literal of a family the socket can reach, the datagram is too large, the
 * runtime's queue is full); `pending` counts the bytes handed to the runtime
 * that it has not sent yet. `close()` is idempotent; nothing is delivered
 * after it.
 *
 * @example
 * ```ts
 * import type { RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const socket = await adapter.udp!({ host: "127.0.0.1", port: 0, onDatagram: () => {} });
 * socket.send(Uint8Array.of(1, 2, 3), "127.0.0.1", 9);
 * socket.close();
 * ```
 */
export interface UdpSocket {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  /** Bytes handed to the runtime and not yet sent. */
  readonly pending: number;
  /** Sends one datagram to an IP literal; false when it was not taken. */
  send(data: Uint8Array, host: string, port: number): boolean;
  /** Closes the socket. */
  close(): void;
}

/**
 * The signature of {@linkcode RuntimeAdapter.relay}.
 *
 * @example
 * ```ts
 * import { relay, type NativeRelay } from "@edgesocks/edgesocks";
 * // An adapter without a faster path can still offer one that defers to the generic relay.
 * const passThrough: NativeRelay = (client, upstream, options) => relay(client, upstream, options);
 * ```
 */
export type NativeRelay = (
  client: ByteConnection,
  upstream: ByteConnection,
  options: RelayOptions,
) => Promise<RelayResult> | undefined;

/**
 * How a relay ended.
 *
 * @example
 * ```ts
 * import { type ByteConnection, relay, type RelayResult } from "@edgesocks/edgesocks";
 * declare const client: ByteConnection, upstream: ByteConnection;
 * const result: RelayResult = await relay(client, upstream);
 * if (result.end === "error") console.error("tunnel failed:", result.error);
 * ```
 */
export interface RelayResult {
  /** Bytes copied from `client` to `upstream`. */
  up: number;
  /** Bytes copied from `upstream` to `client`. */
  down: number;
  /**
   * `"done"`: both sides sent their FIN; `"idle"`: the idle timeout fired;
   * `"error"`: a side failed (both were closed); `"aborted"`: the signal fired.
   */
  end: "done" | "idle" | "error" | "aborted";
  /** The failure, when `end` is `"error"`. */
  error?: unknown;
}

/**
 * Relay options.
 *
 * @example
 * ```ts
 * import { type ByteConnection, relay, type RelayOptions } from "@edgesocks/edgesocks";
 * declare const client: ByteConnection, upstream: ByteConnection;
 * const shutdown = new AbortController(); // abort() closes the tunnel
 * const options: RelayOptions = { idleTimeout: 300_000, signal: shutdown.signal };
 * await relay(client, upstream, options);
 * ```
 */
export interface RelayOptions {
  /** Close both sides after this many milliseconds without a byte either way; 0 or absent: never. */
  idleTimeout?: number;
  /** Closes both sides when it aborts (server shutdown), with a reset where the runtime can. */
  signal?: AbortSignal;
}
