/**
 * The connection record: one per connection, built by the session alone and
 * handed to its readers (the log today; metrics next) when the connection
 * ends. Its `outcome` is a stable code that readers can count on; `reason`
 * says the same in words, with details.
 *
 * @module
 */
import type { Protocol, RequestKind } from "./core/request.ts";

/**
 * How a connection ended, as a stable code:
 *
 * - `tunnel_done`: a tunnel ran and both sides sent their FIN.
 * - `tunnel_idle`, `tunnel_error`: a tunnel was cut at the idle timeout, or by a failure of one side.
 * - `resolved`: a RESOLVE or RESOLVE_PTR was answered.
 * - `refused_client`: the client is not allowed (client rules).
 * - `refused_limit`: a connection cap was reached.
 * - `refused_backoff`: the client's logins failed too often lately; it must wait.
 * - `refused_policy`: the destination or the command is not allowed.
 * - `auth_failed`: wrong credentials; `auth_unavailable`: no method both sides accept (or SOCKS4
 *   where a password is required).
 * - `protocol_error`: malformed or unknown bytes; `http_request`: HTTP sent to the SOCKS port.
 * - `unsupported`: a command this server does not serve.
 * - `handshake_timeout`, `client_closed`, `client_error`: the client was too slow, left, or failed
 *   before a request was answered.
 * - `dns_failed`: the name has no usable address; `upstream_failed`: the destination could not be
 *   reached; `connect_timeout`: DNS and connect took longer than the connect timeout.
 * - `refused_proxy_source`: a PROXY protocol listener's peer is not trusted to send the header;
 *   `proxy_header_invalid`: the PROXY header is missing or malformed; `proxy_header_timeout`: it was
 *   not complete within its deadline. All three close the connection without a reply.
 * - `shutdown`: the server was stopping; `error`: anything else (a bug).
 *
 * @example
 * ```ts
 * import type { Outcome } from "@edgesocks/edgesocks";
 * const refused = (o: Outcome) => o.startsWith("refused_") || o === "auth_failed";
 * ```
 */
export type Outcome =
  | "tunnel_done"
  | "tunnel_idle"
  | "tunnel_error"
  | "resolved"
  | "refused_client"
  | "refused_limit"
  | "refused_backoff"
  | "refused_policy"
  | "auth_failed"
  | "auth_unavailable"
  | "protocol_error"
  | "http_request"
  | "unsupported"
  | "handshake_timeout"
  | "client_closed"
  | "client_error"
  | "dns_failed"
  | "upstream_failed"
  | "connect_timeout"
  | "refused_proxy_source"
  | "proxy_header_invalid"
  | "proxy_header_timeout"
  | "shutdown"
  | "error";

/**
 * One record per connection, when it ends. Never holds a password.
 *
 * @example
 * ```ts
 * import type { ConnectionLog } from "@edgesocks/edgesocks";
 * const onLog = (e: ConnectionLog) =>
 *   console.log(`${e.client} ${e.command} ${e.target} ${e.outcome} up=${e.up} down=${e.down} ${e.durationMs}ms`);
 * ```
 */
export interface ConnectionLog {
  /** The client's address, when known. */
  client?: string;
  /** 4 or 5, once a SOCKS request was parsed. */
  version?: 4 | 5;
  /** The protocol spoken (`socks4`, `socks5`, `http`), once known. */
  protocol?: Protocol;
  /** The HTTP status sent, for an HTTP client. */
  status?: number;
  /** The command asked for. */
  command?: RequestKind;
  /** The destination or name asked for, `host:port`. */
  target?: string;
  /** The IP address actually dialled. */
  dialed?: string;
  /** The authenticated user (or SOCKS4 user id). */
  user?: string;
  /** Reply sent: `"granted"` for a tunnel, else the reply byte (SOCKS5 REP or SOCKS4 CD) as `"0x05"`, or `"none"`. */
  reply: string;
  /** How it ended, as a stable code. */
  outcome: Outcome;
  /** Bytes client → destination (early data included). */
  up: number;
  /** Bytes destination → client. */
  down: number;
  /** Milliseconds from accept to close. */
  durationMs: number;
  /** Why it ended, in words. */
  reason: string;
}

/**
 * The same record under the name the design uses for it.
 *
 * @example
 * ```ts
 * import type { ConnectionRecord } from "@edgesocks/edgesocks";
 * const bytes = (r: ConnectionRecord) => r.up + r.down;
 * ```
 */
export type ConnectionRecord = ConnectionLog;

/** A fresh record: nothing known yet but, maybe, the client. */
export function newRecord(client: string | undefined): ConnectionLog {
  const record: ConnectionLog = {
    reply: "none",
    outcome: "error",
    up: 0,
    down: 0,
    durationMs: 0,
    reason: "",
  };
  if (client !== undefined) record.client = client;
  return record;
}

/** `0x05`: a reply byte as records show it. */
export function replyText(code: number): string {
  return `0x${code.toString(16).padStart(2, "0")}`;
}
