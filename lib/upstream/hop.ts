/**
 * An upstream proxy ("hop"): its URL, parsed into plain data, and what every
 * kind of hop shares (reaching it, driving a handshake over it, the
 * credentials it is given).
 *
 * @module
 */
import { formatHostPort, type HostPort, parseIPv6 } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import type { ProxyRequest } from "../core/request.ts";
import { ReplyCode } from "../core/wire.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { UpstreamError } from "./upstream.ts";

/**
 * The protocols of an upstream URL: `socks5h` (names go to the upstream),
 * `socks5` (names are resolved here), `socks4a`, `socks4` (resolved here,
 * IPv4 only) and `http` (HTTP CONNECT).
 *
 * @example
 * ```ts
 * import type { HopProtocol } from "@edgesocks/edgesocks";
 * const remoteDns = (p: HopProtocol) => p === "socks5h" || p === "socks4a" || p === "http";
 * ```
 */
export type HopProtocol = "socks5h" | "socks5" | "socks4a" | "socks4" | "http";

/**
 * One upstream proxy, as `--upstream NAME=URL` gives it.
 *
 * @example
 * ```ts
 * import { type Hop, parseHop } from "@edgesocks/edgesocks";
 * const tor: Hop = parseHop("tor", "socks5h://127.0.0.1:9050?tor");
 * ```
 */
export interface Hop {
  /** The name routes use. */
  name: string;
  /** Its protocol. */
  protocol: HopProtocol;
  /** Its address: an IP literal or a host name (resolved when dialled). */
  address: HostPort;
  /** Credentials from the URL (percent-decoded bytes): RFC 1929, a SOCKS4 user id, or HTTP Basic. */
  user?: Uint8Array;
  /** The URL's password, percent-decoded. */
  password?: Uint8Array;
  /** `?tor`: a SOCKS5 upstream that speaks Tor's RESOLVE and RESOLVE_PTR. */
  tor: boolean;
  /** The URL without its password, for logs and errors. */
  display: string;
}

const DEFAULT_PORTS: Readonly<Record<HopProtocol, number>> = {
  socks5h: 1080,
  socks5: 1080,
  socks4a: 1080,
  socks4: 1080,
  http: 8080,
};

/** Percent-decodes to bytes (so `%FF` is the byte 0xFF, not UTF-8); the rest is taken as UTF-8. */
function percentBytes(text: string, what: string): Uint8Array {
  const out: number[] = [];
  const utf8 = new TextEncoder();
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "%") {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new TypeError(`bad percent escape in the ${what}`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else out.push(...utf8.encode(text[i]));
  }
  return Uint8Array.from(out);
}

/**
 * Parses `SCHEME://[USER[:PASS]@]HOST[:PORT][?tor]`. Throws a TypeError naming
 * the upstream on bad input (the message never holds the password).
 *
 * @example
 * ```ts
 * import { parseHop } from "@edgesocks/edgesocks";
 * parseHop("corp", "http://alice:s%40cret@proxy.corp.example:3128").address; // { host: "proxy.corp.example", port: 3128 }
 * parseHop("tor", "socks5h://127.0.0.1:9050?tor").tor; // true
 * ```
 */
export function parseHop(name: string, url: string): Hop {
  const bad = (why: string) => new TypeError(`upstream ${JSON.stringify(name)}: ${why}`);
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw bad("a name is letters, digits, '_', '.', '-'");
  if (name === "direct") throw bad("'direct' is the built-in name of no upstream");
  const m = /^([a-z0-9]+):\/\/(?:([^@/?#]*)@)?([^/?#@]+)\/?(?:\?([^#]*))?$/i.exec(url);
  if (!m) throw bad("expected SCHEME://[USER:PASS@]HOST[:PORT], e.g. socks5h://127.0.0.1:9050");
  const scheme = m[1].toLowerCase();
  if (!(scheme in DEFAULT_PORTS)) {
    throw bad(`unknown scheme ${JSON.stringify(scheme)} (socks5h, socks5, socks4a, socks4 or http)`);
  }
  const protocol = scheme as HopProtocol;
  let host: string, portText: string | undefined;
  const hostPart = m[3];
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(hostPart);
  if (bracket) {
    [host, portText] = [bracket[1], bracket[2]];
    if (!parseIPv6(host)) throw bad(`bad IPv6 address ${JSON.stringify(host)}`);
  } else {
    const colon = hostPart.lastIndexOf(":");
    [host, portText] = colon < 0
      ? [hostPart, undefined]
      : [hostPart.slice(0, colon), hostPart.slice(colon + 1)];
    if (!/^[A-Za-z0-9_.-]+$/.test(host)) {
      throw bad(`bad host ${JSON.stringify(host)} (IPv6 goes in brackets)`);
    }
  }
  let port = DEFAULT_PORTS[protocol];
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw bad(`bad port ${JSON.stringify(portText)} (1-65535)`);
    }
    port = Number(portText);
  }
  const hop: Hop = { name, protocol, address: { host, port }, tor: false, display: "" };
  if (m[2] !== undefined) {
    const colon = m[2].indexOf(":");
    const userText = colon < 0 ? m[2] : m[2].slice(0, colon);
    hop.user = percentBytes(userText, "user name");
    if (colon >= 0) hop.password = percentBytes(m[2].slice(colon + 1), "password");
    const socks5 = protocol === "socks5" || protocol === "socks5h";
    if (hop.user.length === 0 || hop.user.length > 255) throw bad("the user name must be 1-255 bytes");
    if (socks5 && (hop.password === undefined || hop.password.length === 0 || hop.password.length > 255)) {
      throw bad("SOCKS5 (RFC 1929) needs a password of 1-255 bytes after the user name");
    }
    if (protocol.startsWith("socks4") && hop.password !== undefined) {
      throw bad("SOCKS4 has a user id but no password");
    }
    if (protocol.startsWith("socks4") && hop.user.includes(0)) throw bad("a SOCKS4 user id cannot hold %00");
  }
  for (const param of (m[4] ?? "").split("&").filter((p) => p !== "")) {
    if (param === "tor" || param === "tor=1") {
      if (protocol !== "socks5" && protocol !== "socks5h") throw bad("?tor is for socks5h:// and socks5://");
      hop.tor = true;
    } else throw bad(`unknown parameter ${JSON.stringify(param)} (only ?tor)`);
  }
  const who = m[2] === undefined ? "" : `${m[2].split(":")[0]}${m[2].includes(":") ? ":***" : ""}@`;
  hop.display = `${protocol}://${who}${formatHostPort({ host, port })}${hop.tor ? "?tor" : ""}`;
  return hop;
}

/** A failure to reach the hop itself (refused, timed out, its name unknown): the next hop may be tried. */
export class HopUnreachable extends UpstreamError {}

/**
 * Opens a TCP connection to the hop. `dialTimeout` (ms, 0: none) bounds this
 * connect only, so that the next hop of a route still has time.
 */
export async function dialHop(
  hop: Hop,
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver: Resolver,
  signal: AbortSignal,
  dialTimeout: number,
): Promise<ByteConnection> {
  const where = `${hop.name}/${formatHostPort(hop.address)}`;
  const unreachable = (error: unknown, what: string) =>
    new HopUnreachable(
      error instanceof SocksError ? error.reply : ReplyCode.GeneralFailure,
      `upstream ${hop.name} (${formatHostPort(hop.address)}) ${what}: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error, code: "upstream_failed", dialed: where },
    );
  let host = hop.address.host;
  if (!/^[0-9.]+$/.test(host) && !host.includes(":")) {
    try {
      host = (await resolver.lookup(host))[0];
    } catch (error) {
      throw unreachable(error, "has no address");
    }
  }
  const attempt = new AbortController();
  const stop = () => attempt.abort(signal.reason);
  if (signal.aborted) stop();
  else signal.addEventListener("abort", stop, { once: true });
  const timer = dialTimeout > 0
    ? setTimeout(
      () =>
        attempt.abort(new SocksError(ReplyCode.TtlExpired, "connect timed out", { code: "connect_timeout" })),
      dialTimeout,
    )
    : undefined;
  try {
    return await dial({ host, port: hop.address.port, signal: attempt.signal });
  } catch (error) {
    throw unreachable(error, "cannot be reached");
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", stop);
  }
}

/** A handshake driven over a connection: first bytes, then each chunk in until a result. */
export interface Handshake<T> {
  /** The first bytes to send. */
  start(): { write: Uint8Array[]; result?: T };
  /** The next chunk from the hop. */
  receive(chunk: Uint8Array): { write: Uint8Array[]; result?: T };
  /** The hop closed first. */
  closed(): T;
}

/** Runs `handshake` over `conn`; `signal` closes the connection (and rejects with its reason). */
export async function drive<T>(
  conn: ByteConnection,
  handshake: Handshake<T>,
  signal: AbortSignal,
): Promise<T> {
  const stop = () => conn.close();
  if (signal.aborted) stop();
  else signal.addEventListener("abort", stop, { once: true });
  try {
    let step = handshake.start();
    for (;;) {
      for (const bytes of step.write) await conn.write(bytes);
      if (step.result !== undefined) return step.result;
      const chunk = await conn.read();
      if (signal.aborted) throw signal.reason;
      if (chunk === null) return handshake.closed();
      step = handshake.receive(chunk);
    }
  } catch (error) {
    conn.close();
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    signal.removeEventListener("abort", stop);
  }
}

/** Latin-1 text (how the machine hands out user names and user ids) back to its bytes. */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/**
 * The credentials a hop is given for `request`. Under passthrough the
 * client's own go first (RFC 1929 to SOCKS5 and as HTTP Basic, the SOCKS4
 * user id or the SOCKS5 user name as a SOCKS4 user id); a client that gave
 * none gets the URL's; without passthrough, always the URL's.
 */
export function credentialsFor(
  hop: Hop,
  request: ProxyRequest,
  passthrough: boolean,
): { user: Uint8Array; password?: Uint8Array } | undefined {
  if (hop.protocol === "socks4" || hop.protocol === "socks4a") {
    if (passthrough && request.user !== undefined) {
      const id = latin1Bytes(request.user);
      if (!id.includes(0)) return { user: id };
    }
    return hop.user ? { user: hop.user } : undefined;
  }
  if (passthrough && request.login) return request.login;
  if (hop.user === undefined) return undefined;
  return { user: hop.user, ...(hop.password ? { password: hop.password } : {}) };
}

/** Wraps a connection whose first bytes (sent by the target right after the hop's reply) were read already. */
export function withEarly(conn: ByteConnection, early: Uint8Array): ByteConnection {
  if (early.length === 0) return conn;
  let pending: Uint8Array | undefined = early;
  return {
    read: () => {
      if (pending) {
        const chunk = pending;
        pending = undefined;
        return Promise.resolve(chunk);
      }
      return conn.read();
    },
    write: (chunk) => conn.write(chunk),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
    ...(conn.abort ? { abort: () => conn.abort!() } : {}),
    ...(conn.localAddress ? { localAddress: conn.localAddress } : {}),
    ...(conn.remoteAddress ? { remoteAddress: conn.remoteAddress } : {}),
  };
}
