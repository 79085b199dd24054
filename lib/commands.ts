/**
 * One handler per request kind: what the session does between a parsed
 * request and the machine's answer. A kind without a handler is answered
 * "command not supported" by the machine itself, so adding a command (BIND,
 * UDP ASSOCIATE) is adding a handler here.
 *
 * @module
 */
import { SocksError } from "./core/errors.ts";
import type { Answer, ProxyRequest, RequestKind } from "./core/request.ts";
import { ReplyCode } from "./core/wire.ts";
import { checkCommand } from "./policy.ts";
import type { Rules } from "./rules.ts";
import type { HostPort } from "./core/address.ts";
import type { Binding, Opened, Upstream } from "./upstream/upstream.ts";
import type { Association, UdpService } from "./upstream/udp.ts";

/**
 * What a handler gets: the request, the rules the session took at accept,
 * the way out, and the signal that ends the work (connect timeout, shutdown).
 *
 * @example
 * ```ts
 * import type { CommandContext } from "@edgesocks/edgesocks";
 * const target = (ctx: CommandContext) => `${ctx.request.target.host}:${ctx.request.target.port}`;
 * ```
 */
export interface CommandContext {
  /** The parsed request. */
  request: ProxyRequest;
  /** The rules the session took at accept. */
  rules: Rules;
  /** The way out. */
  upstream: Upstream;
  /** Aborts the work: the connect timeout fired, or the server is shutting down. */
  signal: AbortSignal;
  /** The control connection's local address (where a BIND listens, where a UDP relay binds), when known. */
  local?: HostPort;
  /** The control connection's peer: the client (UDP ASSOCIATE takes its datagrams from its address). */
  client?: HostPort;
  /** UDP ASSOCIATE's service, when the server serves it. */
  udp?: UdpService;
}

/**
 * A handler's result: the answer for the machine and, for a tunnel, the open
 * connection to relay to.
 *
 * @example
 * ```ts
 * import type { CommandResult } from "@edgesocks/edgesocks";
 * const opensTunnel = (r: CommandResult) => r.tunnel !== undefined;
 * ```
 */
export interface CommandResult {
  /** What the machine answers the client. */
  answer: Answer;
  /** For a tunnel: the open connection to relay to. */
  tunnel?: Opened;
  /** For a BIND: the listener waiting for its peer (the session waits, then closes it). */
  binding?: Binding;
  /** For UDP ASSOCIATE: the open association, held while the client connection lasts. */
  association?: Association;
}

/**
 * Serves one request kind; rejects with a `SocksError` to refuse it.
 *
 * @example
 * ```ts
 * import type { CommandHandler } from "@edgesocks/edgesocks";
 * const refuseAll: CommandHandler = () => Promise.resolve({ answer: { type: "rejected", reply: 0x02 } });
 * ```
 */
export type CommandHandler = (ctx: CommandContext) => Promise<CommandResult>;

/** What a CONNECT reply carries when the bound address is hidden. */
const NO_ADDRESS = { host: "0.0.0.0", port: 0 } as const;

function tunnel({ request, rules, upstream, signal }: CommandContext): Promise<CommandResult> {
  const hide = rules.hideBoundAddress;
  return upstream.open(request, rules.policy, signal).then((o) => {
    // A connection that completes after the deadline is closed, not leaked (nobody takes the result).
    if (signal.aborted) o.conn.close();
    return { answer: { type: "connected", bound: hide ? NO_ADDRESS : o.bound }, tunnel: o };
  });
}

/** BIND: listen for the peer; the first reply carries where (the session then waits for the peer). */
function bind({ request, rules, upstream, local, signal }: CommandContext): Promise<CommandResult> {
  if (!upstream.bind) {
    return Promise.reject(
      new SocksError(ReplyCode.CommandNotSupported, "bind not supported", { code: "unsupported" }),
    );
  }
  const opening = upstream.bind(request, rules.policy, local);
  // A listener that opens after the deadline is closed, not leaked.
  opening.then((b) => signal.aborted && b.close(), () => {});
  return opening.then((binding) => ({ answer: { type: "bound", bound: binding.address }, binding }));
}

/** UDP ASSOCIATE: open a relay socket; the reply carries where (the session then holds the connection). */
function associate({ request, rules, signal, client, local, udp }: CommandContext): Promise<CommandResult> {
  if (!udp) {
    return Promise.reject(
      new SocksError(ReplyCode.CommandNotSupported, "udp_associate not supported", { code: "unsupported" }),
    );
  }
  const opening = udp.associate({
    request,
    policy: rules.policy,
    ...(client ? { client } : {}),
    ...(local ? { local } : {}),
    idleTimeout: rules.timeouts.idle,
  });
  opening.then((a) => signal.aborted && a.close(), () => {});
  return opening.then((a) => ({ answer: { type: "associated", bound: a.bound }, association: a }));
}

/** The handlers of the commands every server serves. */
export const COMMANDS: Readonly<Partial<Record<RequestKind, CommandHandler>>> = {
  connect: tunnel,
  connect_dir: tunnel,
  resolve: ({ request, rules, upstream, signal }) =>
    upstream.lookup(request, rules.policy, signal).then((address) => ({
      answer: { type: "resolved", address },
    })),
  resolve_ptr: ({ request, rules, upstream, signal }) =>
    upstream.reverse(request, rules.policy, signal).then((name) => ({
      answer: { type: "resolved_name", name },
    })),
  bind,
  udp_associate: associate,
};

/** Runs the handler of `ctx.request.kind` after the command check of the policy. */
export function runCommand(ctx: CommandContext): Promise<CommandResult> {
  const kind = ctx.request.kind;
  const handler = COMMANDS[kind];
  if (!handler) {
    return Promise.reject(
      new SocksError(ReplyCode.CommandNotSupported, `${kind} not supported`, { code: "unsupported" }),
    );
  }
  const denied = checkCommand(kind, ctx.rules.policy);
  if (denied !== null) {
    return Promise.reject(
      new SocksError(denied, `${kind} not allowed by policy`, { code: "refused_policy" }),
    );
  }
  return handler(ctx);
}
