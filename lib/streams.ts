/**
 * Wraps a Web Streams byte pair into a {@linkcode ByteConnection}, so any
 * byte stream (a WebSocket, an in-memory pair, a TLS stream) can be served.
 *
 * @module
 */
import type { ByteConnection, HostPort } from "./runtime.ts";

/**
 * A readable/writable byte pair, as `Deno.Conn`, `WebSocketStream` or `TransformStream` pairs provide.
 *
 * @example
 * ```ts
 * import { type ByteStreamPair, fromWebStreams } from "@edgesocks/edgesocks";
 * const toServer = new TransformStream<Uint8Array, Uint8Array>();
 * const toClient = new TransformStream<Uint8Array, Uint8Array>();
 * const serverSide: ByteStreamPair = { readable: toServer.readable, writable: toClient.writable };
 * const conn = fromWebStreams(serverSide); // the client writes to toServer and reads from toClient
 * ```
 */
export interface ByteStreamPair {
  /** Bytes from the peer. */
  readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. Closing it is this side's half-close. */
  writable: WritableStream<Uint8Array>;
  /** Shown in logs as the client. */
  remoteAddress?: HostPort;
}

/**
 * Adapts `pair` to the connection interface. `closeWrite()` closes the
 * writable (for a stream that means "no more data", its half-close);
 * `close()` cancels the readable and closes the writable; `abort()` aborts it.
 *
 * @example
 * ```ts
 * import { fromWebStreams } from "@edgesocks/edgesocks";
 * const a = new TransformStream<Uint8Array, Uint8Array>();
 * const b = new TransformStream<Uint8Array, Uint8Array>();
 * const conn = fromWebStreams({ readable: a.readable, writable: b.writable });
 * ```
 */
export function fromWebStreams(pair: ByteStreamPair): ByteConnection {
  const reader = pair.readable.getReader();
  const writer = pair.writable.getWriter();
  let writeClosed = false;
  let closed = false;
  const ignore = () => {};
  const endWrite = (abort: boolean) => {
    if (writeClosed) return;
    writeClosed = true;
    (abort ? writer.abort() : writer.close()).catch(ignore);
  };
  const shut = (abort: boolean) => {
    if (closed) return;
    closed = true;
    reader.cancel().catch(ignore);
    endWrite(abort);
  };
  return {
    remoteAddress: pair.remoteAddress,
    async read() {
      if (closed) return null;
      const { value, done } = await reader.read();
      return done ? null : value;
    },
    async write(chunk) {
      if (writeClosed) throw new Error("write after close");
      // Waiting for the sink keeps at most one chunk in flight per direction.
      await writer.ready;
      await writer.write(chunk);
    },
    async closeWrite() {
      if (writeClosed) return;
      writeClosed = true;
      await writer.close();
    },
    close: () => shut(false),
    abort: () => shut(true),
  };
}
