/**
 * The front machine of the SOCKS port: the first byte picks the protocol
 * (0x04 SOCKS4, 0x05 SOCKS5, `C` an HTTP CONNECT when that is served), and
 * every later call goes to that protocol's machine. It meets the same
 * {@linkcode RequestMachine} contract, so the session does not care which
 * protocol it serves.
 *
 * @module
 */
import { HttpConnectMachine } from "./http_connect.ts";
import type { Answer, Protocol, RequestKind, RequestMachine, Step } from "./request.ts";
import { type MachineOptions, SocksServerMachine } from "./socks_server.ts";
import { HttpFirstBytes, SocksVersion } from "./wire.ts";

/**
 * Options of a {@linkcode SniffingMachine}: the SOCKS machine's, and whether
 * an HTTP CONNECT is served (with the same `authenticate`).
 *
 * @example
 * ```ts
 * import type { SniffingOptions } from "@edgesocks/edgesocks";
 * const options: SniffingOptions = { httpConnect: true };
 * ```
 */
export interface SniffingOptions<K extends RequestKind = RequestKind> extends MachineOptions<K> {
  /** Serve `CONNECT host:port HTTP/1.1` on the SOCKS port. Default false: every HTTP request gets the 501 page. */
  httpConnect?: boolean;
}

/** The first byte of an HTTP CONNECT. */
const HTTP_CONNECT_FIRST = 0x43;

/**
 * The SOCKS port's machine: SOCKS4, SOCKS5 and, when `httpConnect`, HTTP
 * CONNECT, picked by the first byte.
 *
 * @example
 * ```ts
 * import { SniffingMachine } from "@edgesocks/edgesocks";
 * const m = new SniffingMachine({ httpConnect: true });
 * m.receive(new TextEncoder().encode("CONNECT 192.0.2.1:443 HTTP/1.1\r\n\r\n")).action.type; // "request"
 * m.protocol; // "http"
 * ```
 */
export class SniffingMachine<K extends RequestKind = RequestKind> implements RequestMachine<K> {
  #options: SniffingOptions<K>;
  #inner?: RequestMachine<K>;
  #protocol?: Protocol;

  /** Creates a machine for one connection; an unknown kind in `commands` throws a `TypeError`. */
  constructor(options: SniffingOptions<K> = {}) {
    this.#options = options;
    // Checks `commands` now, as the SOCKS machine does.
    if (options.commands) new SocksServerMachine(options);
  }

  /** The protocol of the connection, once its first byte is in (undefined for an unknown first byte). */
  get protocol(): Protocol | undefined {
    return this.#protocol;
  }

  /** Bytes held while waiting for the rest of a message. */
  get buffered(): number {
    return this.#inner?.buffered ?? 0;
  }

  /** Feeds bytes from the client (see {@linkcode RequestMachine.receive}). */
  receive(chunk: Uint8Array): Step<K> {
    if (!this.#inner) {
      if (chunk.length === 0) return { write: [], action: { type: "need_more" } };
      const first = chunk[0];
      if (this.#options.httpConnect && first === HTTP_CONNECT_FIRST) {
        this.#inner = new HttpConnectMachine(this.#options) as unknown as RequestMachine<K>;
      } else {
        this.#inner = new SocksServerMachine<K>(this.#options);
      }
      this.#protocol = first === SocksVersion.Socks5
        ? "socks5"
        : first === SocksVersion.Socks4
        ? "socks4"
        : HttpFirstBytes.has(first)
        ? "http"
        : undefined;
    }
    return this.#inner.receive(chunk);
  }

  /** Answers the pending request (see {@linkcode RequestMachine.answer}). */
  answer(answer: Answer): Step<K> {
    if (!this.#inner) throw new TypeError(`${answer.type}() without a pending request (state start)`);
    return this.#inner.answer(answer);
  }
}
