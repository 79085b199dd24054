/**
 * The sans-IO HTTP CONNECT machine (RFC 9110 §9.3.6): the second front end,
 * meeting the same {@linkcode RequestMachine} contract as the SOCKS machine,
 * so the session serves it unchanged. It reads one request head (bounded in
 * size), hands a `CONNECT host:port` to the driver as a `connect` request,
 * and turns the driver's answer into `200 Connection established` or an
 * error status. Any other method gets the SOCKS port's 501 page.
 *
 * @module
 */
import { canonicalIP, hostType, type SocksAddress } from "./address.ts";
import { concatBytes } from "./bytes.ts";
import { HTTP_RESISTANCE_RESPONSE } from "./replies.ts";
import type { Answer, CloseCode, ProxyRequest, RequestMachine, Step } from "./request.ts";
import { Limits, ReplyCode } from "./wire.ts";

/**
 * Largest request head (request line and headers, up to the blank line) the
 * machine buffers: 8 KiB, as nginx's and HAProxy's defaults. A longer one is
 * answered 431.
 *
 * @example
 * ```ts
 * import { HTTP_MAX_HEAD } from "@edgesocks/edgesocks";
 * HTTP_MAX_HEAD; // 8192
 * ```
 */
export const HTTP_MAX_HEAD = 8192;

/**
 * Options of an {@linkcode HttpConnectMachine}.
 *
 * @example
 * ```ts
 * import { createAuthenticator, type HttpConnectOptions } from "@edgesocks/edgesocks";
 * const options: HttpConnectOptions = { authenticate: createAuthenticator(new Map([["alice", "secret"]])) };
 * ```
 */
export interface HttpConnectOptions {
  /**
   * Checks `Proxy-Authorization: Basic` credentials (raw bytes of the user
   * and the password). When set, a request without valid credentials is
   * answered 407.
   */
  authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
}

/** Where an {@linkcode HttpConnectMachine} is. */
type HttpState = "head" | "pending" | "relaying" | "closed";

const CONNECT_PREFIX = "CONNECT ";
const encoder = new TextEncoder();

/** A response with no body that ends the connection. */
function response(status: number, text: string, headers = ""): Uint8Array {
  return encoder.encode(
    `HTTP/1.1 ${status} ${text}\r\n${headers}Content-Length: 0\r\nConnection: close\r\n\r\n`,
  );
}

/** What a refusal with a SOCKS5 reply code is in HTTP: 403 refused, 504 timed out, 502 anything else. */
export function httpStatusOf(reply: number): number {
  if (reply === ReplyCode.NotAllowed) return 403;
  if (reply === ReplyCode.TtlExpired) return 504;
  return 502;
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

const ESTABLISHED = encoder.encode("HTTP/1.1 200 Connection established\r\n\r\n");
const PROXY_AUTHENTICATE = 'Proxy-Authenticate: Basic realm="edgesocks"\r\n';

/** The reply code a status stands for in the step (what the session reads to tell success from failure). */
const STATUS_REPLY: Readonly<Record<number, number>> = {
  400: ReplyCode.GeneralFailure,
  403: ReplyCode.NotAllowed,
  407: ReplyCode.NotAllowed,
  431: ReplyCode.GeneralFailure,
  502: ReplyCode.GeneralFailure,
  504: ReplyCode.TtlExpired,
};

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A reg-name as a CONNECT target: letters, digits, '-', '_', '.'; no userinfo, no percent-encoding. */
const REG_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Decodes padded standard base64 (RFC 4648 §4); null when it is not that. */
export function decodeBase64(text: string): Uint8Array | null {
  if (text.length % 4 !== 0) return null;
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = text[i + j];
      const last = i + 4 === text.length;
      const v = c === "=" && last && j >= 4 - pad ? 0 : B64.indexOf(c);
      if (v < 0) return null;
      n = n << 6 | v;
    }
    if (o < out.length) out[o++] = n >> 16 & 0xff;
    if (o < out.length) out[o++] = n >> 8 & 0xff;
    if (o < out.length) out[o++] = n & 0xff;
  }
  return out;
}

/** Parses a CONNECT request-target (authority-form, RFC 9112 §3.2.3): `host:port`, IPv6 in brackets. */
export function parseAuthority(text: string): SocksAddress | null {
  let host: string, portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return null;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    const ip = canonicalIP(host);
    if (ip === null || hostType(ip) !== "ipv6") return null;
    host = ip;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return null;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) return null; // an IPv6 address must be in brackets
    if (host.length > Limits.MaxField || !REG_NAME.test(host)) return null;
    host = canonicalIP(host) ?? host;
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  return { host, type: hostType(host), port };
}

/** The end of the head: the index just past the blank line (CRLF CRLF, or bare LFs), or -1. */
function headEnd(data: Uint8Array, from: number): number {
  for (let i = Math.max(from, 1); i < data.length; i++) {
    if (data[i] !== 0x0a) continue;
    if (data[i - 1] === 0x0a) return i + 1;
    if (i >= 2 && data[i - 1] === 0x0d && data[i - 2] === 0x0a) return i + 1;
  }
  return -1;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/**
 * One client connection's HTTP CONNECT request: feed it bytes with
 * {@linkcode HttpConnectMachine.receive}; when it returns a `request`
 * action (always a `connect`), dial and call
 * {@linkcode HttpConnectMachine.answer} with `connected` or `rejected`.
 *
 * It never buffers more than {@linkcode HTTP_MAX_HEAD} bytes; a client's
 * bytes never make it throw. Statuses: 200 after `connected`; 403 / 502 /
 * 504 for a refusal with NotAllowed / a failure / TtlExpired; 400 for a
 * malformed request; 407 (with `Proxy-Authenticate: Basic realm="edgesocks"`)
 * when credentials are wanted and missing or wrong; 431 for a head over 8
 * KiB; any method other than CONNECT gets the SOCKS port's 501 page.
 *
 * @example
 * ```ts
 * import { HttpConnectMachine } from "@edgesocks/edgesocks";
 * const m = new HttpConnectMachine();
 * const step = m.receive(new TextEncoder().encode("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"));
 * // step.action: { type: "request", request: { kind: "connect", target: { host: "example.org", port: 443, ... } } }
 * const granted = m.answer({ type: "connected", bound: { host: "192.0.2.1", port: 40000 } });
 * // granted.write: ["HTTP/1.1 200 Connection established\r\n\r\n"]; granted.action: { type: "relay" }
 * ```
 */
export class HttpConnectMachine implements RequestMachine<"connect"> {
  #state: HttpState = "head";
  #buffer: Uint8Array = new Uint8Array(0);
  #scanned = 0;
  #authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  #request?: ProxyRequest<"connect">;
  /** The HTTP status of the last response written, once one was. */
  status?: number;

  /** Creates a machine for one connection. */
  constructor(options: HttpConnectOptions = {}) {
    if (options.authenticate) this.#authenticate = options.authenticate;
  }

  /** Always `"http"`: the protocol this machine serves (records carry it). */
  get protocol(): "http" {
    return "http";
  }

  /** The request being served, once parsed. */
  get request(): ProxyRequest<"connect"> | undefined {
    return this.#request;
  }

  /** Bytes held while waiting for the rest of the head. */
  get buffered(): number {
    return this.#buffer.length;
  }

  #close(
    write: Uint8Array[],
    code: CloseCode,
    reason: string,
    status?: number,
    user?: string,
  ): Step<"connect"> {
    this.#state = "closed";
    this.#buffer = new Uint8Array(0);
    const step: Step<"connect"> = { write, action: { type: "close", code, reason } };
    if (user !== undefined && step.action.type === "close") step.action.user = user;
    if (status !== undefined) {
      this.status = step.status = status;
      step.reply = STATUS_REPLY[status] ?? ReplyCode.GeneralFailure;
    }
    return step;
  }

  #error(status: number, code: CloseCode, reason: string): Step<"connect"> {
    return this.#close([response(status, STATUS_TEXT[status])], code, reason, status);
  }

  /**
   * Feeds bytes from the client. Call only while the last action was
   * `need_more` (else it throws a `TypeError`); bytes after the head come back
   * as `early`.
   */
  receive(chunk: Uint8Array): Step<"connect"> {
    if (this.#state !== "head") throw new TypeError(`unexpected input in state ${this.#state}`);
    const data = this.#buffer.length === 0 ? chunk : concatBytes(this.#buffer, chunk);
    // The method first: anything that is not CONNECT gets the 501 page as soon as that is certain.
    const known = Math.min(data.length, CONNECT_PREFIX.length);
    for (let i = 0; i < known; i++) {
      if (data[i] !== CONNECT_PREFIX.charCodeAt(i)) {
        return this.#close([HTTP_RESISTANCE_RESPONSE], "http_request", "HTTP request other than CONNECT");
      }
    }
    const end = headEnd(data, this.#scanned);
    if (end < 0) {
      if (data.length > HTTP_MAX_HEAD) {
        return this.#error(431, "protocol_error", "HTTP request head too large");
      }
      this.#buffer = data.slice();
      this.#scanned = Math.max(0, data.length - 3);
      return { write: [], action: { type: "need_more" } };
    }
    if (end > HTTP_MAX_HEAD) return this.#error(431, "protocol_error", "HTTP request head too large");
    const head = latin1(data.subarray(0, end));
    const early = end === data.length ? new Uint8Array(0) : data.slice(end);
    this.#buffer = new Uint8Array(0);
    return this.#head(head, early);
  }

  #head(head: string, early: Uint8Array): Step<"connect"> {
    const lines = head.split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
    lines.length -= 2; // the blank line and what follows its LF
    const parts = lines[0].split(" ");
    if (parts.length !== 3) return this.#error(400, "protocol_error", "malformed CONNECT request line");
    const [, authority, version] = parts;
    if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
      return this.#error(400, "protocol_error", "unsupported HTTP version");
    }
    const target = parseAuthority(authority);
    if (target === null) return this.#error(400, "protocol_error", "CONNECT target is not host:port");
    let authorization: string | undefined;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      // No obsolete line folding, no header without a name (RFC 9112 §5.2: a proxy rejects them).
      if (colon <= 0 || !TOKEN.test(line.slice(0, colon))) {
        return this.#error(400, "protocol_error", "malformed HTTP header");
      }
      if (line.slice(0, colon).toLowerCase() === "proxy-authorization") {
        if (authorization !== undefined) {
          return this.#error(400, "protocol_error", "Proxy-Authorization twice");
        }
        authorization = line.slice(colon + 1).trim();
      }
    }
    let user: string | undefined;
    if (this.#authenticate) {
      const challenge = (code: CloseCode, reason: string, tried?: string) =>
        this.#close(
          [response(407, STATUS_TEXT[407], PROXY_AUTHENTICATE)],
          code,
          reason,
          407,
          tried,
        );
      if (authorization === undefined) return challenge("auth_unavailable", "no Proxy-Authorization");
      const basic = /^basic +([A-Za-z0-9+/=]+)$/i.exec(authorization);
      if (!basic) return challenge("auth_unavailable", "Proxy-Authorization is not Basic");
      const credentials = decodeBase64(basic[1]);
      const colon = credentials ? credentials.indexOf(0x3a) : -1;
      if (!credentials || colon < 0) return challenge("auth_failed", "malformed Basic credentials");
      const name = credentials.subarray(0, colon);
      const password = credentials.subarray(colon + 1);
      const tried = latin1(name);
      if (
        name.length === 0 || password.length === 0 || name.length > Limits.MaxField ||
        password.length > Limits.MaxField || !this.#authenticate(name, password)
      ) {
        return challenge("auth_failed", "authentication failed", tried);
      }
      user = tried;
    }
    const request: ProxyRequest<"connect"> = {
      version: 5,
      kind: "connect",
      target,
      protocol: "http",
      ...(user !== undefined ? { user } : {}),
    };
    this.#request = request;
    this.#state = "pending";
    return { write: [], action: { type: "request", request, early } };
  }

  /**
   * Answers the pending CONNECT: `connected` (200, then relay) or `rejected`
   * (403 / 502 / 504, then close). Any other answer, or one with no request
   * pending, throws a `TypeError`.
   */
  answer(answer: Answer): Step<"connect"> {
    if (this.#state !== "pending") {
      throw new TypeError(`${answer.type}() without a pending request (state ${this.#state})`);
    }
    if (answer.type === "connected") {
      this.#state = "relaying";
      this.status = 200;
      return { write: [ESTABLISHED], action: { type: "relay" }, reply: ReplyCode.Succeeded, status: 200 };
    }
    if (answer.type === "rejected") {
      const status = httpStatusOf(answer.reply);
      const step = this.#close(
        [response(status, STATUS_TEXT[status])],
        "answered",
        `rejected with ${status}`,
        status,
      );
      step.reply = answer.reply >= 1 && answer.reply <= 8 ? answer.reply : ReplyCode.GeneralFailure;
      return step;
    }
    throw new TypeError(`${answer.type}() does not answer an HTTP CONNECT`);
  }
}
