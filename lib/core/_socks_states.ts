/**
 * The SOCKS server machine's transitions, in one table: for every state and
 * every kind of input (client bytes, or one of the driver's answers) the
 * handler that decides. Misuse by the driver throws a `TypeError` and changes
 * nothing; misbehaviour by the client is a `close` step.
 *
 * @module
 */
import { canonicalIP, type HostPort, hostType, type SocksAddress } from "./address.ts";
import { concatBytes } from "./bytes.ts";
import {
  decodeLatin1,
  type INCOMPLETE,
  readAuth,
  readGreeting,
  readSocks4Request,
  readSocks5Request,
} from "./_socks_decode.ts";
import {
  encodeAuthStatus,
  encodeMethodSelection,
  encodeSocks4Reply,
  encodeSocks5NameReply,
  encodeSocks5Reply,
  fitsSocks4,
  HTTP_RESISTANCE_RESPONSE,
} from "./replies.ts";
import type { Answer, CloseCode, ProxyRequest, RequestKind, Step } from "./request.ts";
import {
  AuthMethod,
  HttpFirstBytes,
  Limits,
  ReplyCode,
  Socks4ReplyCode,
  SocksCommand,
  SocksVersion,
  TorReplyCode,
} from "./wire.ts";

/** Every input the machine takes: client bytes, or an answer from the driver. */
export type Input = { type: "bytes"; chunk: Uint8Array } | Answer;
/** The kinds of input, the table's columns. */
export type InputKind = Input["type"];

/**
 * The states of a SOCKS server machine, the rows of its transition table.
 *
 * @example
 * ```ts
 * import { SocksServerMachine, type SocksState } from "@edgesocks/edgesocks";
 * const inHandshake = (state: SocksState) => state === "start" || /^s[45]_/.test(state);
 * inHandshake(new SocksServerMachine().state); // true
 * ```
 */
export type SocksState =
  | "start"
  | "s5_greeting"
  | "s5_auth"
  | "s5_request"
  | "s4_request"
  | "connect_pending"
  | "resolve_pending"
  | "resolve_ptr_pending"
  | "bind_pending"
  | "bind_waiting"
  | "udp_pending"
  | "relaying"
  | "holding"
  | "closed";

/** What a machine knows about its connection. Only the table's handlers change it. */
export interface Context {
  state: SocksState;
  /** Bytes of an incomplete message (a copy, never a view of a caller's chunk). */
  buffer: Uint8Array;
  authenticate?: (user: Uint8Array, password: Uint8Array) => boolean;
  allowSocks4: boolean;
  /** The request kinds handed to the driver; any other command is refused "not supported". */
  commands: ReadonlySet<RequestKind>;
  request?: ProxyRequest;
  /** The RFC 1929 user, once authenticated. */
  user?: string;
  /** Without `authenticate`: ask a client that offers username/password for it, and accept any. */
  acceptAnyLogin?: boolean;
  /** Hand the RFC 1929 login, as sent, to the driver with the request (`ProxyRequest.login`). */
  keepLogin?: boolean;
  /** The login as sent, when `keepLogin`. */
  login?: { user: Uint8Array; password: Uint8Array };
}

type Handler<K extends InputKind> = (ctx: Context, input: Extract<Input, { type: K }>) => Step;
type Row = { readonly [K in InputKind]: Handler<K> };

/** The empty buffer, shared: nothing ever writes into a zero-length array. */
export const NOTHING: Uint8Array = new Uint8Array(0);

// ------------------------------------------------------------------ steps

function needMore(write: Uint8Array[]): Step {
  return { write, action: { type: "need_more" } };
}

function close(ctx: Context, write: Uint8Array[], code: CloseCode, reason: string, reply?: number): Step {
  ctx.state = "closed";
  ctx.buffer = NOTHING;
  const step: Step = { write, action: { type: "close", code, reason } };
  if (reply !== undefined) step.reply = reply;
  return step;
}

/**
 * True for the RFC 1928 failure codes (0x01-0x08) and Tor's extended ones
 * (0xF0-0xF7, passed on from a Tor upstream); anything else is sent as a
 * general failure.
 */
function isFailureCode(code: number): code is ReplyCode {
  return Number.isInteger(code) &&
    ((code >= ReplyCode.GeneralFailure && code <= ReplyCode.AddressTypeNotSupported) ||
      (code >= TorReplyCode.OnionServiceNotFound && code <= TorReplyCode.OnionServiceIntroTimedOut));
}

/** Refuses the request with `code` (SOCKS4 has one refusal, 0x5B) and closes. */
function refuse(ctx: Context, version: 4 | 5, code: ReplyCode, closeCode: CloseCode, reason: string): Step {
  if (version === 4) {
    return close(
      ctx,
      [encodeSocks4Reply(Socks4ReplyCode.Rejected)],
      closeCode,
      reason,
      Socks4ReplyCode.Rejected,
    );
  }
  const rep = isFailureCode(code) ? code : ReplyCode.GeneralFailure;
  return close(ctx, [encodeSocks5Reply(rep)], closeCode, reason, rep);
}

/** A success reply carrying `address` (BIND's, UDP ASSOCIATE's, CONNECT's), then `action`. */
function grant(ctx: Context, address: HostPort, next: SocksState, action: Step["action"]): Step {
  const version = ctx.request!.version;
  ctx.state = next;
  return version === 4
    ? {
      write: [encodeSocks4Reply(Socks4ReplyCode.Granted, address.host, address.port)],
      action,
      reply: Socks4ReplyCode.Granted,
    }
    : { write: [encodeSocks5Reply(ReplyCode.Succeeded, address.host, address.port)], action, reply: 0 };
}

// ------------------------------------------------------------------ misuse

const MISUSE: { readonly [K in InputKind]: string } = {
  bytes: "unexpected input",
  connected: "connected() without a pending tunnel request",
  bound: "bound() without a pending BIND",
  peer: "peer() without a BIND waiting for its peer",
  associated: "associated() without a pending UDP ASSOCIATE",
  resolved: "resolved() without a pending RESOLVE",
  resolved_name: "resolvedName() without a pending RESOLVE_PTR",
  rejected: "rejected() without a pending request",
};

/** The driver called at the wrong time: a bug in the driver, not in the client. Changes nothing. */
function misuse(ctx: Context, input: Input): never {
  throw new TypeError(
    input.type === "bytes"
      ? `${MISUSE.bytes} in state ${ctx.state}`
      : `${MISUSE[input.type]} (state ${ctx.state})`,
  );
}

// ------------------------------------------------------------------ the handshake: bytes

/** What a state's reader made of the bytes it was given. */
type Parsed =
  | typeof INCOMPLETE
  /** One message read; the state has changed: the rest goes to the new state. */
  | { type: "next"; consumed: number; write?: Uint8Array }
  /** A whole request: handed to the driver (the state is set by the caller). */
  | { type: "request"; consumed: number; request: ProxyRequest }
  /** The machine closes, after `step`'s writes. */
  | { type: "done"; step: Step };

/**
 * The `bytes` handler of a handshake state: joins the chunk to what is
 * buffered, lets `read` take one message, and hands the rest to the state it
 * moved to (through the table again), so a pipelined greeting, login and
 * request in one chunk are read in one call.
 */
function reading(read: (ctx: Context, data: Uint8Array) => Parsed): Handler<"bytes"> {
  return (ctx, { chunk }) => {
    const data = ctx.buffer.length === 0 ? chunk : concatBytes(ctx.buffer, chunk);
    ctx.buffer = NOTHING;
    if (data.length === 0) return needMore([]);
    const parsed = read(ctx, data);
    switch (parsed.type) {
      case "incomplete":
        // Copy: never keep a view of the caller's buffer, which it may reuse.
        ctx.buffer = data.slice();
        return needMore([]);
      case "done":
        return parsed.step;
      case "request": {
        ctx.request = parsed.request;
        ctx.state = PENDING[parsed.request.kind];
        const early = parsed.consumed === data.length ? NOTHING : data.slice(parsed.consumed);
        return { write: [], action: { type: "request", request: parsed.request, early } };
      }
      case "next": {
        const step = parsed.consumed === data.length
          ? needMore([])
          : TRANSITIONS[ctx.state].bytes(ctx, { type: "bytes", chunk: data.subarray(parsed.consumed) });
        if (parsed.write) step.write.unshift(parsed.write);
        return step;
      }
    }
  };
}

function readVersion(ctx: Context, data: Uint8Array): Parsed {
  const v = data[0];
  if (v === SocksVersion.Socks5) ctx.state = "s5_greeting";
  else if (v === SocksVersion.Socks4) ctx.state = "s4_request";
  else if (HttpFirstBytes.has(v)) {
    return {
      type: "done",
      step: close(ctx, [HTTP_RESISTANCE_RESPONSE], "http_request", "HTTP request on SOCKS port"),
    };
  } else {
    return {
      type: "done",
      step: close(ctx, [], "protocol_error", `unknown protocol version 0x${v.toString(16)}`),
    };
  }
  return { type: "next", consumed: 0 };
}

function readMethods(ctx: Context, data: Uint8Array): Parsed {
  const greeting = readGreeting(data);
  if (greeting.type === "incomplete") return greeting;
  // Asked for credentials it will not check, a client that offers them gets to send them (Tor does the same).
  const login = ctx.authenticate !== undefined ||
    (ctx.acceptAnyLogin === true && greeting.methods.includes(AuthMethod.UserPass));
  const wanted = login ? AuthMethod.UserPass : AuthMethod.NoAuth;
  if (!greeting.methods.includes(wanted)) {
    const reason = ctx.authenticate
      ? "client did not offer username/password"
      : "client did not offer no-auth";
    return {
      type: "done",
      step: close(ctx, [encodeMethodSelection(AuthMethod.NoAcceptable)], "auth_unavailable", reason),
    };
  }
  ctx.state = login ? "s5_auth" : "s5_request";
  return { type: "next", consumed: greeting.consumed, write: encodeMethodSelection(wanted) };
}

function readLogin(ctx: Context, data: Uint8Array): Parsed {
  const auth = readAuth(data);
  if (auth.type === "incomplete") return auth;
  if (auth.type === "unreadable") {
    return { type: "done", step: close(ctx, [encodeAuthStatus(false)], "protocol_error", auth.reason) };
  }
  const { user, password } = auth;
  // RFC 1929 fields are 1-255 bytes: an empty one is never asked about.
  if (user.length === 0 || password.length === 0 || (ctx.authenticate && !ctx.authenticate(user, password))) {
    const step = close(ctx, [encodeAuthStatus(false)], "auth_failed", "authentication failed");
    // The name that was tried, for the record (a log shows who is being guessed at); never the password.
    if (step.action.type === "close") step.action.user = decodeLatin1(user);
    return { type: "done", step };
  }
  ctx.user = decodeLatin1(user);
  if (ctx.keepLogin) ctx.login = { user: user.slice(), password: password.slice() };
  ctx.state = "s5_request";
  return { type: "next", consumed: auth.consumed, write: encodeAuthStatus(true) };
}

const SOCKS5_KINDS: Readonly<Record<number, RequestKind>> = {
  [SocksCommand.Connect]: "connect",
  [SocksCommand.Bind]: "bind",
  [SocksCommand.UdpAssociate]: "udp_associate",
  [SocksCommand.Resolve]: "resolve",
  [SocksCommand.ResolvePtr]: "resolve_ptr",
  [SocksCommand.ConnectDir]: "connect_dir",
};

/** SOCKS4 has no UDP and no RESOLVE_PTR (Tor serves neither over it). */
const SOCKS4_KINDS: Readonly<Record<number, RequestKind>> = {
  [SocksCommand.Connect]: "connect",
  [SocksCommand.Bind]: "bind",
  [SocksCommand.Resolve]: "resolve",
  [SocksCommand.ConnectDir]: "connect_dir",
};

/**
 * A tunnel to port 0 is refused before any dial, the same on every runtime
 * (each runtime's connect error differs), as Tor's SocksPort refuses it:
 * connection_edge.c, "Application asked to connect to port 0. Refusing.",
 * END_STREAM_REASON_TORPROTOCOL, which reasons.c sends as SOCKS5 general
 * failure (SOCKS4: rejected). BIND and UDP ASSOCIATE may name port 0.
 */
function isPortZeroTunnel(kind: RequestKind, target: SocksAddress): boolean {
  return target.port === 0 && (kind === "connect" || kind === "connect_dir");
}

function readSocks5(ctx: Context, data: Uint8Array): Parsed {
  const req = readSocks5Request(data);
  if (req.type === "incomplete") return req;
  const done = (code: ReplyCode, closeCode: CloseCode, reason: string): Parsed => ({
    type: "done",
    step: refuse(ctx, 5, code, closeCode, reason),
  });
  if (req.type === "unreadable") {
    return req.badAddressType
      ? done(ReplyCode.AddressTypeNotSupported, "protocol_error", req.reason)
      : done(ReplyCode.GeneralFailure, "protocol_error", req.reason);
  }
  const kind = SOCKS5_KINDS[req.cmd];
  if (kind === undefined || !ctx.commands.has(kind)) {
    return done(
      ReplyCode.CommandNotSupported,
      "unsupported",
      `unsupported command 0x${req.cmd.toString(16)}`,
    );
  }
  let target = req.target;
  if (target === null) return done(ReplyCode.GeneralFailure, "protocol_error", "malformed domain name");
  if (kind === "resolve_ptr" && target.type === "domain") {
    // An address sent as text (ATYP 3 "192.0.2.1") is that address, as CONNECT and RESOLVE take it.
    const literal = canonicalIP(target.host);
    if (literal === null) {
      return done(ReplyCode.AddressTypeNotSupported, "unsupported", "RESOLVE_PTR needs an IP address");
    }
    target = { host: literal, type: hostType(literal), port: target.port };
  }
  if (isPortZeroTunnel(kind, target)) {
    return done(ReplyCode.GeneralFailure, "protocol_error", "connect to port 0 refused");
  }
  const request: ProxyRequest = {
    version: 5,
    kind,
    target,
    ...(ctx.user !== undefined ? { user: ctx.user } : {}),
    ...(ctx.login !== undefined ? { login: ctx.login } : {}),
  };
  return { type: "request", consumed: req.consumed, request };
}

function readSocks4(ctx: Context, data: Uint8Array): Parsed {
  const req = readSocks4Request(data);
  if (req.type === "incomplete") return req;
  const done = (closeCode: CloseCode, reason: string): Parsed => ({
    type: "done",
    step: refuse(ctx, 4, ReplyCode.GeneralFailure, closeCode, reason),
  });
  if (req.type === "unreadable") return done("protocol_error", req.reason);
  if (req.target === null) return done("protocol_error", "malformed SOCKS4A host name");
  const kind = SOCKS4_KINDS[req.cmd];
  if (kind === undefined || !ctx.commands.has(kind)) {
    return done("unsupported", `unsupported SOCKS4 command 0x${req.cmd.toString(16)}`);
  }
  if (!ctx.allowSocks4) return done("auth_unavailable", "SOCKS4 refused: authentication is required");
  if (isPortZeroTunnel(kind, req.target)) return done("protocol_error", "connect to port 0 refused");
  const request: ProxyRequest = {
    version: 4,
    kind,
    target: req.target,
    ...(req.user.length > 0 ? { user: req.user } : {}),
  };
  return { type: "request", consumed: req.consumed, request };
}

// ------------------------------------------------------------------ the answers

const onConnected: Handler<"connected"> = (ctx, { bound }) =>
  grant(ctx, bound, "relaying", { type: "relay" });

const onBound: Handler<"bound"> = (ctx, { bound }) => grant(ctx, bound, "bind_waiting", { type: "wait" });

const onPeer: Handler<"peer"> = (ctx, { peer }) => grant(ctx, peer, "relaying", { type: "relay" });

const onAssociated: Handler<"associated"> = (ctx, { bound }) =>
  grant(ctx, bound, "holding", { type: "hold" });

/**
 * RESOLVE's answer, an IP address as text. SOCKS4 can carry only IPv4: an
 * IPv6 answer is refused there. Text that is not an IP address is no answer
 * (HostUnreachable), never a success.
 */
const onResolved: Handler<"resolved"> = (ctx, { address }) => {
  if (canonicalIP(address) === null) {
    return onRejected(ctx, { type: "rejected", reply: ReplyCode.HostUnreachable });
  }
  if (ctx.request!.version === 4) {
    if (!fitsSocks4(address)) {
      return close(
        ctx,
        [encodeSocks4Reply(Socks4ReplyCode.Rejected)],
        "answered",
        "IPv6 answer cannot be sent over SOCKS4",
        Socks4ReplyCode.Rejected,
      );
    }
    return close(
      ctx,
      [encodeSocks4Reply(Socks4ReplyCode.Granted, address, 0)],
      "answered",
      "resolved",
      Socks4ReplyCode.Granted,
    );
  }
  return close(ctx, [encodeSocks5Reply(ReplyCode.Succeeded, address, 0)], "answered", "resolved", 0);
};

/** RESOLVE_PTR's answer, a host name: ASCII, 1-255 bytes; anything else becomes HostUnreachable. */
const onResolvedName: Handler<"resolved_name"> = (ctx, { name }) => {
  if (name.length === 0 || name.length > Limits.MaxField || /[^\x21-\x7e]/.test(name)) {
    return onRejected(ctx, { type: "rejected", reply: ReplyCode.HostUnreachable });
  }
  return close(ctx, [encodeSocks5NameReply(ReplyCode.Succeeded, name, 0)], "answered", "resolved", 0);
};

/** A refusal: the code as sent in SOCKS5 (a non-failure code becomes 0x01), 0x5B in SOCKS4. */
const onRejected: Handler<"rejected"> = (ctx, { reply }) =>
  refuse(
    ctx,
    ctx.request!.version,
    reply,
    "answered",
    `rejected with 0x${reply.toString(16).padStart(2, "0")}`,
  );

// ------------------------------------------------------------------ the table

/** Where a request of each kind waits for its answer. */
const PENDING = {
  connect: "connect_pending",
  connect_dir: "connect_pending",
  resolve: "resolve_pending",
  resolve_ptr: "resolve_ptr_pending",
  bind: "bind_pending",
  udp_associate: "udp_pending",
} as const satisfies Record<RequestKind, SocksState>;

/** No request is there to answer: every answer is a misuse. */
const NO_ANSWER = {
  connected: misuse,
  bound: misuse,
  peer: misuse,
  associated: misuse,
  resolved: misuse,
  resolved_name: misuse,
  rejected: misuse,
} as const;

/** A handshake state: it reads bytes, and no request is there to answer. */
const handshake = (read: (ctx: Context, data: Uint8Array) => Parsed): Row => ({
  bytes: reading(read),
  ...NO_ANSWER,
});

/** A state that takes no input at all: the machine's part is over. */
const FINISHED: Row = { bytes: misuse, ...NO_ANSWER };

/**
 * (state × input kind) → handler. `misuse` throws a `TypeError`; every other
 * handler returns a step. A request waits in the state of its kind, so an
 * answer that does not fit it is misuse by the table itself.
 */
export const TRANSITIONS = {
  /** Nothing read yet: the first byte picks SOCKS4, SOCKS5 or the HTTP page. */
  start: handshake(readVersion),
  /** SOCKS5: waiting for the method list. */
  s5_greeting: handshake(readMethods),
  /** SOCKS5: username/password selected, waiting for the RFC 1929 login. */
  s5_auth: handshake(readLogin),
  /** SOCKS5: waiting for the request. */
  s5_request: handshake(readSocks5),
  /** SOCKS4 / 4A: waiting for the rest of the request. */
  s4_request: handshake(readSocks4),
  /** A CONNECT or CONNECT_DIR waits for the driver's dial. */
  connect_pending: { ...FINISHED, connected: onConnected, rejected: onRejected },
  /** A RESOLVE waits for the driver's lookup. */
  resolve_pending: { ...FINISHED, resolved: onResolved, rejected: onRejected },
  /** A RESOLVE_PTR waits for the driver's reverse lookup. */
  resolve_ptr_pending: { ...FINISHED, resolved_name: onResolvedName, rejected: onRejected },
  /** A BIND waits for the driver's listening socket. */
  bind_pending: { ...FINISHED, bound: onBound, rejected: onRejected },
  /** BIND's first reply is out; the driver waits for the peer to connect. */
  bind_waiting: { ...FINISHED, peer: onPeer, rejected: onRejected },
  /** A UDP ASSOCIATE waits for the driver's relay socket. */
  udp_pending: { ...FINISHED, associated: onAssociated, rejected: onRejected },
  /** A tunnel is granted: the driver relays, the machine takes nothing more. */
  relaying: FINISHED,
  /** A UDP association is open: the driver holds the connection, the machine takes nothing more. */
  holding: FINISHED,
  /** Closed: after a final answer, a refusal or a protocol error. */
  closed: FINISHED,
} as const satisfies Record<SocksState, Row>;

/** Feeds one input to the handler the table names for it. */
export function dispatch(ctx: Context, input: Input): Step {
  return (TRANSITIONS[ctx.state][input.type] as Handler<InputKind>)(ctx, input as never);
}
