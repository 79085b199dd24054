/**
 * The contract every front-end machine meets (the SOCKS machine today; HTTP
 * CONNECT and others later), so the session that drives one does not care
 * which protocol it serves: bytes in, a {@linkcode Step} out; a parsed
 * {@linkcode ProxyRequest} is answered with one {@linkcode Answer}.
 *
 * Misuse by the driver (an answer at the wrong time, input after the end)
 * throws a `TypeError`; misbehaviour by the peer is a value: a `close` step
 * with a {@linkcode CloseCode}.
 *
 * @module
 */
import type { HostPort, SocksAddress } from "./address.ts";
import type { ReplyCode } from "./wire.ts";

/**
 * What a request asks the server to do. `bind` and `udp_associate` are parsed
 * only by a machine told to accept them; otherwise they are answered
 * "command not supported" by the machine itself.
 *
 * @example
 * ```ts
 * import type { RequestKind } from "@edgesocks/edgesocks";
 * const opensTunnel = (kind: RequestKind) => kind === "connect" || kind === "connect_dir";
 * ```
 */
export type RequestKind = typeof REQUEST_KINDS[number];

/**
 * Every request kind, in the order of their commands.
 *
 * @example
 * ```ts
 * import { REQUEST_KINDS } from "@edgesocks/edgesocks";
 * const serveAll = { commands: REQUEST_KINDS }; // machine options that hand every kind to the driver
 * ```
 */
export const REQUEST_KINDS = [
  "connect",
  "connect_dir",
  "resolve",
  "resolve_ptr",
  "bind",
  "udp_associate",
] as const;

/**
 * A parsed, well-formed request that the driver must act on. `K` narrows
 * the kinds a machine can hand out (a SOCKS machine built without `bind`
 * never asks for one).
 *
 * @example
 * ```ts
 * import type { ProxyRequest } from "@edgesocks/edgesocks";
 * const request: ProxyRequest = {
 *   version: 5,
 *   kind: "connect",
 *   target: { host: "example.org", type: "domain", port: 443 },
 * };
 * ```
 */
export interface ProxyRequest<K extends RequestKind = RequestKind> {
  /** 4 for SOCKS4 and 4A, 5 for SOCKS5. */
  version: 4 | 5;
  /** What is asked: one of the kinds the machine was told to hand out. */
  kind: K;
  /** The destination (or the name / address to resolve). */
  target: SocksAddress;
  /** SOCKS4 user id or RFC 1929 user name, when given (bytes as Latin-1). Never the password. */
  user?: string;
  /**
   * The RFC 1929 login as sent, only from a machine told to keep it
   * (`keepLogin`): what an upstream is given under `--upstream-auth
   * passthrough`. Never logged.
   */
  login?: { user: Uint8Array; password: Uint8Array };
  /** `"http"` when the request came as an HTTP CONNECT; absent for SOCKS. */
  protocol?: "http";
}

/**
 * The driver's answer to a pending request.
 *
 * - `connected`: a CONNECT / CONNECT_DIR tunnel is open; `bound` is the outbound socket's local end.
 * - `bound`: BIND's first reply, the address the server listens on.
 * - `peer`: BIND's second reply, the peer that connected.
 * - `associated`: UDP ASSOCIATE's reply, the relay socket's address.
 * - `resolved`: RESOLVE's answer, an IP address as text.
 * - `resolved_name`: RESOLVE_PTR's answer, a host name.
 * - `rejected`: a refusal with a SOCKS5 reply code (any failure becomes 0x5B on SOCKS4).
 *
 * @example
 * ```ts
 * import { type Answer, ReplyCode } from "@edgesocks/edgesocks";
 * const refused: Answer = { type: "rejected", reply: ReplyCode.ConnectionRefused };
 * ```
 */
export type Answer =
  | { type: "connected"; bound: HostPort }
  | { type: "bound"; bound: HostPort }
  | { type: "peer"; peer: HostPort }
  | { type: "associated"; bound: HostPort }
  | { type: "resolved"; address: string }
  | { type: "resolved_name"; name: string }
  | { type: "rejected"; reply: ReplyCode };

/**
 * Why a machine closed, as a stable code (logs and metrics read it):
 * `answered` (a final answer was sent: a RESOLVE's, a refusal), `protocol_error`
 * (malformed or unknown bytes, or a tunnel to port 0), `http_request` (HTTP sent
 * to the SOCKS port), `auth_failed` (wrong credentials), `auth_unavailable` (no
 * acceptable method, or SOCKS4 where a password is required), `unsupported` (a
 * command not served, or a RESOLVE_PTR of a name).
 *
 * @example
 * ```ts
 * import type { CloseCode } from "@edgesocks/edgesocks";
 * const isClientFault = (code: CloseCode) => code === "protocol_error" || code === "http_request";
 * ```
 */
export type CloseCode =
  | "answered"
  | "protocol_error"
  | "http_request"
  | "auth_failed"
  | "auth_unavailable"
  | "unsupported";

/**
 * What the driver must do after feeding the machine.
 *
 * - `need_more`: read more bytes from the client, then call `receive()`.
 * - `request`: act on `request`, then call `answer()`. `early` holds bytes the client sent after the
 *   request: forward them upstream once connected.
 * - `wait`: BIND's first reply is out; wait for the peer to connect, then answer `peer` (or `rejected`).
 * - `relay`: the tunnel is granted: relay bytes both ways.
 * - `hold`: UDP ASSOCIATE's reply is out; keep the connection open and relay nothing on it until the
 *   client closes it (the association lives as long as this connection).
 * - `close`: write the output, then close the connection. After a failed login, `user` is the user name
 *   that was tried (never the password).
 *
 * @example
 * ```ts
 * import type { Action } from "@edgesocks/edgesocks";
 * function describe(action: Action): string {
 *   return action.type === "request" ? `${action.request.kind} ${action.request.target.host}` : action.type;
 * }
 * ```
 */
export type Action<K extends RequestKind = RequestKind> =
  | { type: "need_more" }
  | { type: "request"; request: ProxyRequest<K>; early: Uint8Array }
  | { type: "wait" }
  | { type: "relay" }
  | { type: "hold" }
  | { type: "close"; code: CloseCode; reason: string; user?: string };

/**
 * The result of one call into a machine: bytes to write, in order, then an action.
 *
 * @example
 * ```ts
 * import type { ByteConnection, Step } from "@edgesocks/edgesocks";
 * async function apply(client: ByteConnection, step: Step) {
 *   for (const bytes of step.write) await client.write(bytes);
 *   return step.action;
 * }
 * ```
 */
export interface Step<K extends RequestKind = RequestKind> {
  /** Messages to write to the client, in order, before doing `action`. */
  write: Uint8Array[];
  /** What to do next. */
  action: Action<K>;
  /**
   * The reply code the last reply written carries (SOCKS5 REP or SOCKS4 CD),
   * set exactly when this step wrote a reply to a request, whether answering
   * the driver or refusing on its own: what logs show, never read back out
   * of the bytes.
   */
  reply?: number;
  /** The HTTP status of the response this step wrote (HTTP front ends only). */
  status?: number;
}

/**
 * A front-end protocol machine: sans-IO, one per client connection. A call
 * that throws (driver misuse) leaves the machine as it was.
 *
 * @example
 * ```ts
 * import type { RequestMachine } from "@edgesocks/edgesocks";
 * declare const machine: RequestMachine;
 * const step = machine.receive(Uint8Array.of(5, 1, 0)); // a SOCKS5 greeting
 * if (step.action.type === "request") machine.answer({ type: "rejected", reply: 0x02 });
 * ```
 */
export interface RequestMachine<K extends RequestKind = RequestKind> {
  /** Feeds bytes from the client; call only while the last action was `need_more`, else it throws a `TypeError`. */
  receive(chunk: Uint8Array): Step<K>;
  /**
   * Answers the pending request: once after a `request` action, and once more
   * after a `wait`. An answer at any other time, or one that does not fit the
   * request, throws a `TypeError`.
   */
  answer(answer: Answer): Step<K>;
  /** Bytes held while waiting for the rest of a message. */
  readonly buffered: number;
  /** The protocol being spoken, once known (records carry it). */
  readonly protocol?: Protocol;
}

/**
 * The front-end protocols a connection may speak.
 *
 * @example
 * ```ts
 * import type { Protocol } from "@edgesocks/edgesocks";
 * const isSocks = (p: Protocol) => p !== "http";
 * ```
 */
export type Protocol = "socks4" | "socks5" | "http";
