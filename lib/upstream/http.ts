/**
 * An HTTP CONNECT upstream (`http://`): the tunnel goes on through an HTTP
 * proxy. The name is sent as it is (the proxy resolves: only name rules
 * apply here, as for `socks5h`); credentials go as `Proxy-Authorization:
 * Basic`. RESOLVE and RESOLVE_PTR cannot go through HTTP.
 *
 * @module
 */
import { canonicalIP, formatHostPort } from "../core/address.ts";
import { concatBytes } from "../core/bytes.ts";
import type { ProxyRequest } from "../core/request.ts";
import { ReplyCode } from "../core/wire.ts";
import type { DestinationPolicy } from "../policy.ts";
import type { ByteConnection, DialOptions, Resolver } from "../runtime.ts";
import { allowedAddresses } from "./direct.ts";
import { credentialsFor, dialHop, drive, type Handshake, type Hop, withEarly } from "./hop.ts";
import { checkRemoteName, type HopOptions, type HopUpstream } from "./socks5.ts";
import { type Opened, UpstreamError } from "./upstream.ts";

/** Longest response head read from the proxy (status line and headers). */
const MAX_HEAD = 16 * 1024;

/**
 * The SOCKS5 reply an HTTP proxy's refusal of CONNECT stands for: 403 and
 * 407 (forbidden, credentials wanted or wrong) → 0x02 not allowed; 404 and
 * 502 (no such host, the proxy could not reach it) → 0x04 host unreachable;
 * 503 (connection refused or no route, as Squid and ncat send it) → 0x05
 * connection refused; 504 (gateway timeout) → 0x06 TTL expired; anything
 * else → 0x01.
 *
 * @example
 * ```ts
 * import { httpStatusReply } from "@edgesocks/edgesocks";
 * httpStatusReply(403); // 0x02
 * httpStatusReply(504); // 0x06
 * ```
 */
export function httpStatusReply(status: number): ReplyCode {
  if (status === 403 || status === 407) return ReplyCode.NotAllowed;
  if (status === 404 || status === 502) return ReplyCode.HostUnreachable;
  if (status === 503) return ReplyCode.ConnectionRefused;
  if (status === 504) return ReplyCode.TtlExpired;
  return ReplyCode.GeneralFailure;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** `CONNECT host:port HTTP/1.1` with `Host` and, with credentials, `Proxy-Authorization: Basic`. */
export function encodeConnect(
  host: string,
  port: number,
  credentials?: { user: Uint8Array; password?: Uint8Array },
): Uint8Array {
  const authority = formatHostPort({ host, port });
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (credentials) {
    const pair = concatBytes(
      concatBytes(credentials.user, Uint8Array.of(0x3a)),
      credentials.password ?? new Uint8Array(0),
    );
    head += `Proxy-Authorization: Basic ${base64(pair)}\r\n`;
  }
  head += "\r\n";
  const out = new Uint8Array(head.length);
  for (let i = 0; i < head.length; i++) out[i] = head.charCodeAt(i);
  return out;
}

/** What a proxy's answer to CONNECT said. */
export type ConnectResponse =
  | { type: "connected"; early: Uint8Array }
  | { type: "refused"; status: number; reply: ReplyCode; reason: string }
  | { type: "protocol_error"; reason: string };

/** The CONNECT exchange as a {@linkcode Handshake}: reads the response head, bounded. */
export function connectHandshake(request: Uint8Array): Handshake<ConnectResponse> {
  let buffer: Uint8Array = new Uint8Array(0);
  return {
    start: () => ({ write: [request] }),
    receive(chunk) {
      buffer = concatBytes(buffer, chunk);
      let end = -1;
      for (let i = 3; i < buffer.length; i++) {
        if (
          buffer[i] === 0x0a && buffer[i - 1] === 0x0d && buffer[i - 2] === 0x0a && buffer[i - 3] === 0x0d
        ) {
          end = i + 1;
          break;
        }
      }
      if (end < 0) {
        if (buffer.length > MAX_HEAD) {
          return { write: [], result: { type: "protocol_error", reason: "response head too long" } };
        }
        return { write: [] };
      }
      let line = "";
      for (let i = 0; i < end && buffer[i] !== 0x0d; i++) line += String.fromCharCode(buffer[i]);
      const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(line);
      if (!m) return { write: [], result: { type: "protocol_error", reason: "not an HTTP response" } };
      const status = Number(m[1]);
      if (status >= 200 && status < 300) {
        return { write: [], result: { type: "connected", early: buffer.slice(end) } };
      }
      return {
        write: [],
        result: {
          type: "refused",
          status,
          reply: httpStatusReply(status),
          reason: `${status} ${m[2] ?? ""}`.trim(),
        },
      };
    },
    closed: () => ({ type: "protocol_error", reason: "proxy closed before answering CONNECT" }),
  };
}

/**
 * The upstream through an HTTP proxy: CONNECT only.
 *
 * @example
 * ```ts
 * import { httpUpstream, parseHop, type RuntimeAdapter } from "@edgesocks/edgesocks";
 * declare const adapter: RuntimeAdapter;
 * const corp = httpUpstream(parseHop("corp", "http://proxy.corp.example:3128"), adapter.dial, adapter.resolver(), {
 *   passthrough: false,
 *   dialTimeout: 0,
 * });
 * ```
 */
export function httpUpstream(
  hop: Hop,
  dial: (options: DialOptions) => Promise<ByteConnection>,
  resolver: Resolver,
  options: HopOptions,
): HopUpstream {
  const where = `${hop.name}/${formatHostPort(hop.address)}`;
  const unsupported = (kind: string) =>
    Promise.reject(
      new UpstreamError(
        ReplyCode.CommandNotSupported,
        `${kind} cannot go through HTTP upstream ${hop.name}`,
        {
          code: "unsupported",
        },
      ),
    );
  return {
    hop,
    async open(request: ProxyRequest, policy: DestinationPolicy, signal: AbortSignal): Promise<Opened> {
      let host = request.target.host;
      if (canonicalIP(host)) host = (await allowedAddresses(resolver, request, policy))[0];
      else checkRemoteName(request, policy);
      const credentials = credentialsFor(hop, request, options.passthrough);
      const conn = await dialHop(hop, dial, resolver, signal, options.dialTimeout);
      const answer = await drive(
        conn,
        connectHandshake(encodeConnect(host, request.target.port, credentials)),
        signal,
      );
      if (answer.type !== "connected") {
        conn.close();
        const reply = answer.type === "refused" ? answer.reply : ReplyCode.GeneralFailure;
        throw new UpstreamError(reply, `upstream ${hop.name}: ${answer.reason}`, {
          code: "upstream_failed",
          dialed: where,
        });
      }
      // What the proxy bound is not said in HTTP: the reply carries 0.0.0.0:0.
      return { conn: withEarly(conn, answer.early), bound: { host: "0.0.0.0", port: 0 }, dialed: where };
    },
    lookup: () => unsupported("RESOLVE"),
    reverse: () => unsupported("RESOLVE_PTR"),
  };
}
