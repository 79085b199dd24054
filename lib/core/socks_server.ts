/**
 * The sans-IO SOCKS server state machine: bytes in, replies and actions out.
 * No awaits, timers or runtime globals.
 *
 * @module
 */
import { canonicalIP, formatIPv4, formatIPv6, type SocksAddress } from "./address.ts";
import { concatBytes } from "./bytes.ts";
import {
  encodeAuthStatus,
  encodeMethodSelection,
  encodeSocks4Reply,
  encodeSocks5NameReply,
  encodeSocks5Reply,
  fitsSocks4,
  HTTP_RESISTANCE_RESPONSE,
} from "./replies.ts";
import {
  AddressType,
  AuthMethod,
  HttpFirstBytes,
  Limits,
  ReplyCode,
  Socks4ReplyCode,
  SocksCommand,
  SocksVersion,
} from "./wire.ts";

/**
 * What a request asks the server to do.
 *
 * @example
 * ```ts
 * import type { RequestKind } from "./mod.ts";
 * const opensTunnel = (kind: RequestKind) => kind === "connect" || kind === "connect_dir";
 * ```
 */
export type RequestKind = "connect" | "connect_dir" | "resolve" | "resolve_ptr";

/**
 * A parsed, well-formed request that the driver must act on.
 *
 * @example
 * ```ts
 * import type { SocksRequest } from "./mod.ts";
 * const request: SocksRequest = {
 *   version: 5,
 *   kind: "connect",
 *   target: { host: "example.org", type: "domain", port: 443 },
 * };
 * ```
 */
export interface SocksRequest {
  /** 4 for SOCKS4 and 4A, 5 for SOCKS5. */
  version: 4 | 5;
  /** What is asked. */
  kind: RequestKind;
  /** The destination (or the name / address to resolve). */
  target: SocksAddress;
  /** SOCKS4 user id or RFC 1929 user name, when given. Never the password. */
  user?: string;
}

/**
 * What the driver must do after feeding the machine.
 *
 * @example
 * ```ts
 * import type { Action } from "./mod.ts";
 * function describe(action: Action): string {
 *   return action.type === "request" ? `${action.request.kind} ${action.request.target.host}` : action.type;
 * }
 * ```
 */
export type Action =
  /** Read more bytes from the client. */
  | { type: "need_more" }
  /** Act on `request`, then call one of the machine's answer methods. `early` holds bytes the client sent after the request: forward them upstream once connected. */
  | { type: "request"; request: SocksRequest; early: Uint8Array }
  /** The tunnel is granted: relay bytes both ways. */
  | { type: "relay" }
  /** Write the output, then close the connection. */
  | { type: "close"; reason: string };

/**
 * The result of one call into the machine: bytes to write, in order, then an action.
 *
 * @example
 * ```ts
 * import type { ByteConnection, Step } from "./mod.ts";
 * async function apply(client: ByteConnection, step: Step) {
 *   for (const bytes of step.write) await client.write(bytes);
 *   return step.action;
 * }
 * ```
 */
export interface Step {
  /** Messages to write to the client, in order, before doing `action`. */
  write: Uint8Array[];
  /** What to do next. */
  action: Action;
}

/**
 * How the machine authenticates and which protocol versions it serves.
 *
 * @example
 * ```ts
 * import { createAuthenticator, type MachineOptions, SocksServerMachine } from "./mod.ts";
 * const options: MachineOptions = { authenticate: createAuthenticator(new Map([["alice", "secret"]])) };
 * const machine = new SocksServerMachine(options); // SOCKS5 with username/password only
 * ```
 */
export interface MachineOptions {
  /**
   * Checks RFC 1929 credentials (raw bytes as sent). When set, SOCKS5 clients
   * must use username/password and "no auth" is refused with 0xFF.
   */
  authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  /** Serve SOCKS4/4A (which has no password). Default: true when no `authenticate` is set, else false. */
  allowSocks4?: boolean;
}

type State =
  | "start"
  | "s5_greeting"
  | "s5_auth"
  | "s5_request"
  | "s4_request"
  | "pending"
  | "relaying"
  | "closed";

/** Decodes a host name, refusing empty names, NUL, controls, spaces and non-ASCII. */
function decodeName(bytes: Uint8Array): string | null {
  if (bytes.length === 0) return null;
  let s = "";
  for (const b of bytes) {
    if (b <= 0x20 || b >= 0x7f) return null;
    s += String.fromCharCode(b);
  }
  return s;
}

function decodeLatin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** True for the RFC 1928 failure codes (0x01-0x08); anything else is sent as a general failure. */
function isFailureCode(code: number): code is ReplyCode {
  return Number.isInteger(code) && code >= ReplyCode.GeneralFailure &&
    code <= ReplyCode.AddressTypeNotSupported;
}

const SOCKS5_KINDS: Record<number, RequestKind> = {
  [SocksCommand.Connect]: "connect",
  [SocksCommand.ConnectDir]: "connect_dir",
  [SocksCommand.Resolve]: "resolve",
  [SocksCommand.ResolvePtr]: "resolve_ptr",
};

const SOCKS4_KINDS: Record<number, RequestKind> = {
  [SocksCommand.Connect]: "connect",
  [SocksCommand.ConnectDir]: "connect_dir",
  [SocksCommand.Resolve]: "resolve",
};

/** The empty buffer, shared: nothing ever writes into a zero-length array. */
const NOTHING = new Uint8Array(0);

/**
 * One client connection's SOCKS handshake. Feed it bytes with
 * {@linkcode SocksServerMachine.receive}; when it returns a `request` action,
 * do the work and answer with {@linkcode SocksServerMachine.connected},
 * {@linkcode SocksServerMachine.resolved}, {@linkcode SocksServerMachine.resolvedName}
 * or {@linkcode SocksServerMachine.rejected}.
 *
 * It never buffers more than {@linkcode Limits.MaxHandshakeBuffer} bytes and
 * never throws on any input.
 *
 * @example
 * ```ts
 * import { SocksServerMachine } from "./mod.ts";
 * const m = new SocksServerMachine();
 * const step = m.receive(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80));
 * // step.write: [05 00]; step.action: { type: "request", request: { kind: "connect", ... } }
 * ```
 */
export class SocksServerMachine {
  #state: State = "start";
  #buffer: Uint8Array = NOTHING;
  #authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  #allowSocks4: boolean;
  #request?: SocksRequest;
  #user?: string;

  /** Creates a machine for one connection. */
  constructor(options: MachineOptions = {}) {
    this.#authenticate = options.authenticate;
    this.#allowSocks4 = options.allowSocks4 ?? !options.authenticate;
  }

  /** The request being served, once parsed. */
  get request(): SocksRequest | undefined {
    return this.#request;
  }

  /** Bytes held while waiting for the rest of a handshake message. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /**
   * Feeds bytes from the client. Call only while the last action was
   * `need_more`; bytes that follow a complete request come back as `early`.
   */
  receive(chunk: Uint8Array): Step {
    if (this.#state === "pending" || this.#state === "relaying" || this.#state === "closed") {
      return this.#close([], `unexpected input in state ${this.#state}`);
    }
    let data: Uint8Array;
    if (this.#buffer.length === 0) data = chunk;
    else data = concatBytes(this.#buffer, chunk);
    const write: Uint8Array[] = [];
    let offset = 0;
    for (;;) {
      const rest = data.subarray(offset);
      if (rest.length === 0) {
        this.#buffer = NOTHING;
        return { write, action: { type: "need_more" } };
      }
      const step = this.#parseOne(rest);
      if (step.kind === "incomplete") {
        // Copy: never keep a view of the caller's buffer, which it may reuse.
        this.#buffer = rest.slice();
        return { write, action: { type: "need_more" } };
      }
      if (step.write) write.push(step.write);
      offset += step.consumed;
      if (step.kind === "close") return this.#close(write, step.reason);
      if (step.kind === "request") {
        this.#buffer = NOTHING;
        this.#state = "pending";
        return {
          write,
          action: {
            type: "request",
            request: this.#request!,
            early: offset === data.length ? NOTHING : data.slice(offset),
          },
        };
      }
    }
  }

  /** Grants a CONNECT / CONNECT_DIR; `bound` is the outbound socket's local address. */
  connected(bound: { host: string; port: number }): Step {
    const req = this.#expectPending();
    if (!req || (req.kind !== "connect" && req.kind !== "connect_dir")) {
      return this.#close([], "connected() without a pending tunnel request");
    }
    this.#state = "relaying";
    const reply = req.version === 4
      ? encodeSocks4Reply(Socks4ReplyCode.Granted, bound.host, bound.port)
      : encodeSocks5Reply(ReplyCode.Succeeded, bound.host, bound.port);
    return { write: [reply], action: { type: "relay" } };
  }

  /**
   * Answers a RESOLVE with an IP address (text). SOCKS4 can carry only IPv4;
   * an IPv6 answer becomes 0x5B there. Text that is not an IP address is
   * treated as no answer (HostUnreachable), never as a success.
   */
  resolved(address: string): Step {
    const req = this.#expectPending();
    if (!req || req.kind !== "resolve") return this.#close([], "resolved() without a pending RESOLVE");
    if (canonicalIP(address) === null) return this.rejected(ReplyCode.HostUnreachable);
    if (req.version === 4) {
      if (!fitsSocks4(address)) {
        return this.#close(
          [encodeSocks4Reply(Socks4ReplyCode.Rejected)],
          "IPv6 answer cannot be sent over SOCKS4",
        );
      }
      return this.#close([encodeSocks4Reply(Socks4ReplyCode.Granted, address, 0)], "resolved");
    }
    return this.#close([encodeSocks5Reply(ReplyCode.Succeeded, address, 0)], "resolved");
  }

  /** Answers a RESOLVE_PTR with a host name (ASCII, 1-255 bytes; anything else becomes HostUnreachable). */
  resolvedName(name: string): Step {
    const req = this.#expectPending();
    if (!req || req.kind !== "resolve_ptr") {
      return this.#close([], "resolvedName() without a pending RESOLVE_PTR");
    }
    if (name.length === 0 || name.length > Limits.MaxField || /[^\x21-\x7e]/.test(name)) {
      return this.rejected(ReplyCode.HostUnreachable);
    }
    return this.#close([encodeSocks5NameReply(ReplyCode.Succeeded, name, 0)], "resolved");
  }

  /** Refuses the pending request with `code` (any non-success code becomes 0x5B on SOCKS4). */
  rejected(code: ReplyCode): Step {
    const req = this.#expectPending();
    if (!req) return this.#close([], "rejected() without a pending request");
    const reply = req.version === 4
      ? encodeSocks4Reply(Socks4ReplyCode.Rejected)
      : encodeSocks5Reply(isFailureCode(code) ? code : ReplyCode.GeneralFailure);
    return this.#close([reply], `rejected with 0x${code.toString(16).padStart(2, "0")}`);
  }

  #expectPending(): SocksRequest | undefined {
    return this.#state === "pending" ? this.#request : undefined;
  }

  #close(write: Uint8Array[], reason: string): Step {
    this.#state = "closed";
    this.#buffer = NOTHING;
    return { write, action: { type: "close", reason } };
  }

  #parseOne(
    data: Uint8Array,
  ):
    | { kind: "incomplete" }
    | { kind: "continue"; consumed: number; write?: Uint8Array }
    | { kind: "request"; consumed: number; write?: Uint8Array }
    | { kind: "close"; consumed: number; write?: Uint8Array; reason: string } {
    switch (this.#state) {
      case "start": {
        const v = data[0];
        if (v === SocksVersion.Socks5) this.#state = "s5_greeting";
        else if (v === SocksVersion.Socks4) {
          this.#state = "s4_request";
        } else if (HttpFirstBytes.has(v)) {
          return {
            kind: "close",
            consumed: data.length,
            write: HTTP_RESISTANCE_RESPONSE,
            reason: "HTTP request on SOCKS port",
          };
        } else {
          return {
            kind: "close",
            consumed: data.length,
            reason: `unknown protocol version 0x${v.toString(16)}`,
          };
        }
        return { kind: "continue", consumed: 0 };
      }
      case "s5_greeting":
        return this.#greeting(data);
      case "s5_auth":
        return this.#auth(data);
      case "s5_request":
        return this.#socks5Request(data);
      case "s4_request":
        return this.#socks4Request(data);
      default:
        return { kind: "close", consumed: data.length, reason: "unexpected input" };
    }
  }

  #greeting(data: Uint8Array) {
    if (data.length < 2) return { kind: "incomplete" } as const;
    const n = data[1];
    if (data.length < 2 + n) return { kind: "incomplete" } as const;
    const methods = data.subarray(2, 2 + n);
    const wanted = this.#authenticate ? AuthMethod.UserPass : AuthMethod.NoAuth;
    if (!methods.includes(wanted)) {
      return {
        kind: "close",
        consumed: 2 + n,
        write: encodeMethodSelection(AuthMethod.NoAcceptable),
        reason: this.#authenticate
          ? "client did not offer username/password"
          : "client did not offer no-auth",
      } as const;
    }
    this.#state = this.#authenticate ? "s5_auth" : "s5_request";
    return { kind: "continue", consumed: 2 + n, write: encodeMethodSelection(wanted) } as const;
  }

  #auth(data: Uint8Array) {
    if (data[0] !== SocksVersion.UserPassAuth) {
      return {
        kind: "close",
        consumed: data.length,
        write: encodeAuthStatus(false),
        reason: "bad auth version",
      } as const;
    }
    if (data.length < 2) return { kind: "incomplete" } as const;
    const ulen = data[1];
    if (data.length < 3 + ulen) return { kind: "incomplete" } as const;
    const plen = data[2 + ulen];
    const end = 3 + ulen + plen;
    if (data.length < end) return { kind: "incomplete" } as const;
    const user = data.subarray(2, 2 + ulen);
    const pass = data.subarray(3 + ulen, end);
    const ok = ulen > 0 && plen > 0 && this.#authenticate!(user, pass);
    if (!ok) {
      return {
        kind: "close",
        consumed: end,
        write: encodeAuthStatus(false),
        reason: "authentication failed",
      } as const;
    }
    this.#user = decodeLatin1(user);
    this.#state = "s5_request";
    return { kind: "continue", consumed: end, write: encodeAuthStatus(true) } as const;
  }

  #socks5Request(data: Uint8Array) {
    const fail = (code: ReplyCode, consumed: number, reason: string) =>
      ({ kind: "close", consumed, write: encodeSocks5Reply(code), reason }) as const;
    if (data[0] !== SocksVersion.Socks5) {
      return fail(ReplyCode.GeneralFailure, data.length, "bad request version");
    }
    if (data.length < 4) return { kind: "incomplete" } as const;
    const cmd = data[1];
    const atyp = data[3];
    let addrLen: number;
    if (atyp === AddressType.IPv4) addrLen = 4;
    else if (atyp === AddressType.IPv6) addrLen = 16;
    else if (atyp === AddressType.DomainName) {
      if (data.length < 5) return { kind: "incomplete" } as const;
      addrLen = 1 + data[4];
    } else {return fail(
        ReplyCode.AddressTypeNotSupported,
        data.length,
        `bad address type 0x${atyp.toString(16)}`,
      );}
    const end = 4 + addrLen + 2;
    if (data.length < end) return { kind: "incomplete" } as const;
    const addr = data.subarray(4, 4 + addrLen);
    const port = (data[end - 2] << 8) | data[end - 1];
    const kind = SOCKS5_KINDS[cmd];
    if (!kind) return fail(ReplyCode.CommandNotSupported, end, `unsupported command 0x${cmd.toString(16)}`);
    let target: SocksAddress;
    if (atyp === AddressType.IPv4) target = { host: formatIPv4(addr), type: "ipv4", port };
    else if (atyp === AddressType.IPv6) target = { host: formatIPv6(addr), type: "ipv6", port };
    else {
      const name = decodeName(addr.subarray(1));
      if (name === null) return fail(ReplyCode.GeneralFailure, end, "malformed domain name");
      target = { host: name, type: "domain", port };
    }
    if (kind === "resolve_ptr" && target.type === "domain") {
      return fail(ReplyCode.AddressTypeNotSupported, end, "RESOLVE_PTR needs an IP address");
    }
    this.#request = { version: 5, kind, target, ...(this.#user !== undefined ? { user: this.#user } : {}) };
    return { kind: "request", consumed: end, write: undefined } as const;
  }

  #socks4Request(data: Uint8Array) {
    const reject = (consumed: number, reason: string) =>
      ({ kind: "close", consumed, write: encodeSocks4Reply(Socks4ReplyCode.Rejected), reason }) as const;
    if (data.length < 8) return { kind: "incomplete" } as const;
    const cmd = data[1];
    const port = (data[2] << 8) | data[3];
    const ip = data.subarray(4, 8);
    const userEnd = data.indexOf(0, 8);
    // Check the limits whether or not the NUL has arrived, so chunking never changes the outcome.
    if ((userEnd < 0 ? data.length : userEnd) - 8 > Limits.MaxSocks4UserId) {
      return reject(data.length, "SOCKS4 user id too long");
    }
    if (userEnd < 0) return { kind: "incomplete" } as const;
    const user = decodeLatin1(data.subarray(8, userEnd));
    let end = userEnd + 1;
    let target: SocksAddress;
    const isSocks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
    if (isSocks4a) {
      const hostEnd = data.indexOf(0, end);
      if ((hostEnd < 0 ? data.length : hostEnd) - end > Limits.MaxSocks4Host) {
        return reject(data.length, "SOCKS4A host name too long");
      }
      if (hostEnd < 0) return { kind: "incomplete" } as const;
      const name = decodeName(data.subarray(end, hostEnd));
      end = hostEnd + 1;
      if (name === null) return reject(end, "malformed SOCKS4A host name");
      target = { host: name, type: "domain", port };
    } else {
      target = { host: formatIPv4(ip), type: "ipv4", port };
    }
    const kind = SOCKS4_KINDS[cmd];
    if (!kind) return reject(end, `unsupported SOCKS4 command 0x${cmd.toString(16)}`);
    if (!this.#allowSocks4) return reject(end, "SOCKS4 refused: authentication is required");
    this.#request = { version: 4, kind, target, ...(user.length > 0 ? { user } : {}) };
    return { kind: "request", consumed: end, write: undefined } as const;
  }
}
