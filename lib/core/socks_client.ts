/**
 * The sans-IO SOCKS client machine: what edgesocks says to an upstream SOCKS
 * server (SOCKS5 with RFC 1929 and Tor's RESOLVE / RESOLVE_PTR, SOCKS4 and
 * SOCKS4A). Same shape as the server machine: {@linkcode SocksClientMachine.start}
 * gives the first bytes to send, {@linkcode SocksClientMachine.receive} takes
 * what the upstream answers and returns what to send next and what it means.
 * No awaits, timers or runtime globals.
 *
 * @module
 */
import { type HostPort, parseIPv4, parseIPv6, type SocksAddress } from "./address.ts";
import { concatBytes } from "./bytes.ts";
import { readSocks5Request } from "./_socks_decode.ts";
import {
  AddressType,
  AuthMethod,
  AuthStatus,
  Limits,
  ReplyCode,
  Socks4ReplyCode,
  SocksCommand,
  SocksVersion,
} from "./wire.ts";

/**
 * The protocols the client speaks: `socks5` (names sent as ATYP 3, or
 * addresses), `socks4` (IPv4 only) and `socks4a` (names as SOCKS4A).
 *
 * @example
 * ```ts
 * import type { SocksClientProtocol } from "@edgesocks/edgesocks";
 * const torPort: SocksClientProtocol = "socks5";
 * ```
 */
export type SocksClientProtocol = "socks5" | "socks4" | "socks4a";

/**
 * What to ask the upstream.
 *
 * @example
 * ```ts
 * import type { SocksClientRequest } from "@edgesocks/edgesocks";
 * const request: SocksClientRequest = {
 *   protocol: "socks5",
 *   command: "connect",
 *   target: { host: "example.org", type: "domain", port: 443 },
 *   login: { user: new TextEncoder().encode("alice"), password: new TextEncoder().encode("s3cret") },
 * };
 * ```
 */
export interface SocksClientRequest {
  /** The upstream's protocol. */
  protocol: SocksClientProtocol;
  /** CONNECT, or Tor's RESOLVE / RESOLVE_PTR (SOCKS5; RESOLVE also over SOCKS4A). */
  command: "connect" | "resolve" | "resolve_ptr";
  /** The destination, the name to resolve, or the address to reverse-resolve. */
  target: SocksAddress;
  /** SOCKS5: RFC 1929 credentials, sent byte for byte (1-255 bytes each); absent: no authentication. */
  login?: { user: Uint8Array; password: Uint8Array };
  /** SOCKS4 / 4A: the user id, sent byte for byte (no NUL in it). */
  userId?: Uint8Array;
}

/**
 * What a failure of the upstream was, as a stable word: `refused` (it
 * answered the request with a failure reply), `auth_failed` (it refused the
 * credentials), `auth_unavailable` (no method both sides accept),
 * `protocol_error` (bytes that are not SOCKS, or the upstream closed early).
 *
 * @example
 * ```ts
 * import type { SocksClientFailure } from "@edgesocks/edgesocks";
 * const blameUpstream = (f: SocksClientFailure) => f !== "refused";
 * ```
 */
export type SocksClientFailure = "refused" | "auth_failed" | "auth_unavailable" | "protocol_error";

/**
 * What the driver must do after feeding the client machine.
 *
 * - `need_more`: send `write`, read more bytes from the upstream, call `receive()`.
 * - `connected`: the tunnel is open; `bound` is what the upstream reported; `early` holds bytes that
 *   came after the reply (already the target's): hand them to the client first.
 * - `resolved` / `resolved_name`: RESOLVE's / RESOLVE_PTR's answer; close the connection.
 * - `failed`: close the connection; `reply` is the SOCKS5 reply for our own client (the upstream's own
 *   code for a SOCKS5 refusal, Tor's extended codes 0xF0-0xF7 included), `upstreamReply` the byte the
 *   upstream sent, when it sent one.
 *
 * @example
 * ```ts
 * import type { SocksClientAction } from "@edgesocks/edgesocks";
 * const done = (a: SocksClientAction) => a.type !== "need_more";
 * ```
 */
export type SocksClientAction =
  | { type: "need_more" }
  | { type: "connected"; bound: HostPort; early: Uint8Array }
  | { type: "resolved"; address: string }
  | { type: "resolved_name"; name: string }
  | { type: "failed"; failure: SocksClientFailure; reply: number; upstreamReply?: number; reason: string };

/**
 * One call's result: bytes to send to the upstream, in order, then an action.
 *
 * @example
 * ```ts
 * import type { SocksClientStep } from "@edgesocks/edgesocks";
 * const bytesOut = (s: SocksClientStep) => s.write.reduce((n, b) => n + b.length, 0);
 * ```
 */
export interface SocksClientStep {
  /** Messages to send to the upstream, in order. */
  write: Uint8Array[];
  /** What to do next. */
  action: SocksClientAction;
}

type State = "new" | "s5_method" | "s5_auth" | "s5_reply" | "s4_reply" | "done";

const encoder = new TextEncoder();
const NOTHING = new Uint8Array(0);

const COMMAND_BYTES = {
  connect: SocksCommand.Connect,
  resolve: SocksCommand.Resolve,
  resolve_ptr: SocksCommand.ResolvePtr,
} as const;

/** SOCKS5's DST.ADDR: IPv4, IPv6 or a name. */
function encodeAddress(target: SocksAddress): Uint8Array {
  const v4 = parseIPv4(target.host);
  if (v4) return Uint8Array.of(AddressType.IPv4, ...v4);
  const v6 = parseIPv6(target.host);
  if (v6) return Uint8Array.of(AddressType.IPv6, ...v6);
  const name = encoder.encode(target.host);
  return Uint8Array.of(AddressType.DomainName, name.length, ...name);
}

/** Checks the request before any byte is sent; a driver's mistake is a TypeError. */
function validate(req: SocksClientRequest): void {
  const bad = (why: string) => new TypeError(`SOCKS client request: ${why}`);
  const { host, port } = req.target;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad(`port ${port} out of range`);
  const literal = parseIPv4(host) ?? parseIPv6(host);
  if (!literal && (host.length === 0 || encoder.encode(host).length > Limits.MaxField)) {
    throw bad("a name must be 1-255 bytes");
  }
  if (req.protocol === "socks5") {
    const login = req.login;
    if (
      login && (login.user.length < 1 || login.user.length > 255 || login.password.length < 1 ||
        login.password.length > 255)
    ) throw bad("RFC 1929 user and password must be 1-255 bytes");
  } else {
    if (req.command === "resolve_ptr") throw bad("SOCKS4 has no RESOLVE_PTR");
    if (req.protocol === "socks4" && !parseIPv4(host)) throw bad("SOCKS4 carries IPv4 addresses only");
    if (req.protocol === "socks4a" && parseIPv6(host)) throw bad("SOCKS4A carries no IPv6 address");
    if (req.userId?.includes(0)) throw bad("a SOCKS4 user id cannot hold a NUL");
  }
}

/**
 * One upstream connection's SOCKS handshake, from the client's side.
 *
 * @example
 * ```ts
 * import { SocksClientMachine } from "@edgesocks/edgesocks";
 * const m = new SocksClientMachine({
 *   protocol: "socks5",
 *   command: "connect",
 *   target: { host: "example.org", type: "domain", port: 443 },
 * });
 * m.start().write; // [05 01 00]
 * m.receive(Uint8Array.of(5, 0)).write; // [05 01 00 03 0b "example.org" 01bb]
 * m.receive(Uint8Array.of(5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40)).action; // { type: "connected", ... }
 * ```
 */
export class SocksClientMachine {
  readonly #req: SocksClientRequest;
  #state: State = "new";
  #buffer: Uint8Array = NOTHING;

  /** Checks `request` (a TypeError when it cannot be sent in its protocol). */
  constructor(request: SocksClientRequest) {
    validate(request);
    this.#req = request;
  }

  /** The first bytes to send: the SOCKS5 greeting, or the whole SOCKS4 request. Once. */
  start(): SocksClientStep {
    if (this.#state !== "new") throw new TypeError("start() called twice");
    const req = this.#req;
    if (req.protocol === "socks5") {
      this.#state = "s5_method";
      const greeting = req.login
        ? Uint8Array.of(SocksVersion.Socks5, 1, AuthMethod.UserPass)
        : Uint8Array.of(SocksVersion.Socks5, 1, AuthMethod.NoAuth);
      return { write: [greeting], action: { type: "need_more" } };
    }
    this.#state = "s4_reply";
    return { write: [this.#socks4Request()], action: { type: "need_more" } };
  }

  /** Feeds bytes from the upstream; only while the last action was `need_more`. */
  receive(chunk: Uint8Array): SocksClientStep {
    if (this.#state === "new" || this.#state === "done") {
      throw new TypeError(`receive() in state ${this.#state}`);
    }
    const data = this.#buffer.length === 0 ? chunk : concatBytes(this.#buffer, chunk);
    this.#buffer = NOTHING;
    return this.#read(data, []);
  }

  /** The upstream closed before the handshake was over. */
  closed(): SocksClientStep {
    if (this.#state === "done") throw new TypeError("closed() after the end");
    return this.#fail("protocol_error", ReplyCode.GeneralFailure, "upstream closed during the handshake");
  }

  #fail(failure: SocksClientFailure, reply: number, reason: string, upstreamReply?: number): SocksClientStep {
    this.#state = "done";
    this.#buffer = NOTHING;
    const action: SocksClientAction = { type: "failed", failure, reply, reason };
    if (upstreamReply !== undefined) action.upstreamReply = upstreamReply;
    return { write: [], action };
  }

  /** Reads what `data` holds; what was to be sent before a failure is still sent (it may be, chunked otherwise). */
  #read(data: Uint8Array, write: Uint8Array[]): SocksClientStep {
    const step = this.#readState(data, write);
    if (step.write !== write) step.write.unshift(...write);
    return step;
  }

  #readState(data: Uint8Array, write: Uint8Array[]): SocksClientStep {
    const incomplete = () => {
      this.#buffer = data.slice();
      return { write, action: { type: "need_more" } } as SocksClientStep;
    };
    switch (this.#state) {
      case "s5_method": {
        if (data.length < 2) return incomplete();
        if (data[0] !== SocksVersion.Socks5) {
          return this.#fail("protocol_error", ReplyCode.GeneralFailure, "upstream is not a SOCKS5 server");
        }
        const method = data[1];
        const login = this.#req.login;
        if (method === AuthMethod.UserPass && login) {
          this.#state = "s5_auth";
          write.push(Uint8Array.of(
            SocksVersion.UserPassAuth,
            login.user.length,
            ...login.user,
            login.password.length,
            ...login.password,
          ));
        } else if (method === AuthMethod.NoAuth) {
          this.#state = "s5_reply";
          write.push(this.#socks5Request());
        } else {
          return this.#fail(
            "auth_unavailable",
            ReplyCode.NotAllowed,
            method === AuthMethod.NoAcceptable
              ? `upstream accepts no method we offered (${login ? "username/password" : "no auth"})`
              : `upstream chose method 0x${method.toString(16)}, which we did not offer`,
          );
        }
        return this.#next(data, 2, write);
      }
      case "s5_auth": {
        if (data.length < 2) return incomplete();
        if (data[1] !== AuthStatus.Success) {
          return this.#fail("auth_failed", ReplyCode.NotAllowed, "upstream refused the credentials");
        }
        this.#state = "s5_reply";
        write.push(this.#socks5Request());
        return this.#next(data, 2, write);
      }
      case "s5_reply": {
        // The reply has the request's layout: VER REP RSV ATYP BND.ADDR BND.PORT.
        const reply = readSocks5Request(data);
        if (reply.type === "incomplete") return incomplete();
        if (reply.type === "unreadable") {
          return this.#fail("protocol_error", ReplyCode.GeneralFailure, `upstream reply: ${reply.reason}`);
        }
        const rep = reply.cmd;
        if (rep !== ReplyCode.Succeeded) {
          const known = (rep >= 0x01 && rep <= 0x08) || (rep >= 0xf0 && rep <= 0xf7);
          return this.#fail(
            "refused",
            known ? rep : ReplyCode.GeneralFailure,
            `upstream replied 0x${rep.toString(16).padStart(2, "0")}`,
            rep,
          );
        }
        if (reply.target === null) {
          return this.#fail("protocol_error", ReplyCode.GeneralFailure, "upstream reply: malformed name");
        }
        return this.#success(reply.target, data.subarray(reply.consumed), write);
      }
      case "s4_reply": {
        if (data.length < 8) return incomplete();
        const cd = data[1];
        if (data[0] !== SocksVersion.Socks4Reply) {
          return this.#fail("protocol_error", ReplyCode.GeneralFailure, "upstream is not a SOCKS4 server");
        }
        if (cd !== Socks4ReplyCode.Granted) {
          // SOCKS4 has one "rejected or failed"; 0x5C/0x5D are identd failures, i.e. about who we are.
          const reply = cd === Socks4ReplyCode.NoIdentd || cd === Socks4ReplyCode.IdentMismatch
            ? ReplyCode.NotAllowed
            : ReplyCode.GeneralFailure;
          return this.#fail("refused", reply, `upstream replied 0x${cd.toString(16)}`, cd);
        }
        const host = `${data[4]}.${data[5]}.${data[6]}.${data[7]}`;
        const port = (data[2] << 8) | data[3];
        return this.#success({ host, type: "ipv4", port }, data.subarray(8), write);
      }
      default:
        throw new TypeError(`receive() in state ${this.#state}`);
    }
  }

  #next(data: Uint8Array, consumed: number, write: Uint8Array[]): SocksClientStep {
    if (consumed >= data.length) return { write, action: { type: "need_more" } };
    return this.#readState(data.subarray(consumed), write);
  }

  #success(address: SocksAddress, rest: Uint8Array, write: Uint8Array[]): SocksClientStep {
    this.#state = "done";
    const command = this.#req.command;
    if (command === "connect") {
      const early = rest.length === 0 ? NOTHING : rest.slice();
      return {
        write,
        action: { type: "connected", bound: { host: address.host, port: address.port }, early },
      };
    }
    if (command === "resolve") {
      if (address.type === "domain") {
        return this.#fail(
          "protocol_error",
          ReplyCode.GeneralFailure,
          "upstream answered RESOLVE with a name",
        );
      }
      return { write, action: { type: "resolved", address: address.host } };
    }
    return { write, action: { type: "resolved_name", name: address.host } };
  }

  #socks5Request(): Uint8Array {
    const { command, target } = this.#req;
    const addr = encodeAddress(target);
    const out = new Uint8Array(3 + addr.length + 2);
    out.set([SocksVersion.Socks5, COMMAND_BYTES[command], 0]);
    out.set(addr, 3);
    out[3 + addr.length] = target.port >> 8;
    out[4 + addr.length] = target.port & 0xff;
    return out;
  }

  /** `04 CMD PORT IPv4 USERID 00`, and for SOCKS4A `0.0.0.x` then the name and a NUL. */
  #socks4Request(): Uint8Array {
    const { command, target, userId = NOTHING } = this.#req;
    const v4 = parseIPv4(target.host);
    const name = v4 ? NOTHING : encoder.encode(target.host);
    const head = Uint8Array.of(
      SocksVersion.Socks4,
      COMMAND_BYTES[command],
      target.port >> 8,
      target.port & 0xff,
      ...(v4 ?? [0, 0, 0, 1]),
    );
    const parts = [head, userId, Uint8Array.of(0)];
    if (!v4) parts.push(name, Uint8Array.of(0));
    return parts.reduce((a, b) => concatBytes(a, b));
  }
}
