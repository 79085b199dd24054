/**
 * `edgesocks bridge`: a local TCP listener whose every connection becomes
 * one WebSocket to an edge that serves SOCKS over WebSocket (`--listen-ws`,
 * or a worker's `fetch`). The bridge does not speak SOCKS: it carries the
 * client's bytes, so the SOCKS handshake, users and policy are the edge's.
 *
 * The WebSocket is opened as soon as a connection is accepted; the
 * client's first bytes wait (one chunk: the relay reads no more meanwhile)
 * until it is open, and go out in its first round trip.
 *
 * @module
 */
import type { HostPort, Listener, RuntimeAdapter } from "../runtime.ts";
import { formatHostPort } from "../core/address.ts";
import { fromWebSocket, WEBSOCKET_PROTOCOL } from "../ingress/websocket.ts";
import { relay } from "../relay.ts";
import { isLoopbackHost } from "../serve.ts";
import { VERSION } from "../version.ts";
import { listenFailure, readFailure } from "./errors.ts";
import { parseHostPort } from "./flags.ts";

/** The process services the bridge uses (a part of main.ts's `CliHost`). */
export interface BridgeHost {
  /** Command-line arguments after the script (`bridge` first). */
  args(): string[];
  /** The command that started this program, for `--help`. */
  command(): string;
  /** Reads a UTF-8 file. */
  readTextFile(path: string): Promise<string>;
  /** Calls `fn` on the signal. */
  onSignal(signal: "SIGINT" | "SIGTERM", fn: () => void): void;
  /** Ends the process. */
  exit(code: number): void;
  /** Writes a line to standard output. */
  stdout(line: string): void;
  /** Writes a line to standard error. */
  stderr(line: string): void;
}

/** What `edgesocks bridge` was asked. */
export interface BridgeOptions {
  /** `--listen`, default 127.0.0.1:1080. */
  listen: HostPort[];
  /** `--to`: the edge's ws:// or wss:// URL. */
  to: string;
  /** `--token-file`. */
  tokenFile?: string;
  /** `--ca`: PEM file of certificates to trust for wss://. */
  caFile?: string;
  /** `--log text`: one line per tunnel that failed. */
  log: "text" | "quiet";
  /** `--help`. */
  help: boolean;
}

/** The bridge's `--help`. */
export function bridgeUsage(command: string): string {
  return `edgesocks ${VERSION} bridge - local SOCKS port to an edgesocks WebSocket edge

Usage: ${command} bridge --to ws[s]://HOST[:PORT]/PATH [--token-file FILE] [flags]

  --listen HOST:PORT       local address, repeatable (default 127.0.0.1:1080)
  --to URL                 the edge: ws:// or wss:// and the path it serves (required)
  --token-file FILE        the bearer token (the file's first line), sent as Authorization: Bearer
  --ca FILE                PEM certificates to trust for wss:// besides the system's (a private CA)
  --log text|quiet         one line per tunnel that failed (default quiet)
  -h, --help               show this help

Each accepted connection is one WebSocket to URL carrying its bytes (binary messages; an empty one is
the end of a direction). SOCKS users, rules and caps are the edge's.
`;
}

/** Parses the bridge's arguments (after `bridge`); throws a TypeError for the user on bad input. */
export function parseBridgeArgs(args: string[]): BridgeOptions {
  const opts: BridgeOptions = { listen: [], to: "", log: "quiet", help: false };
  for (let i = 0; i < args.length; i++) {
    let name = args[i];
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (name.startsWith("--") && eq > 0) [name, value] = [name.slice(0, eq), name.slice(eq + 1)];
    if (name === "--help" || name === "-h") {
      opts.help = true;
      continue;
    }
    if (!["--listen", "--to", "--token-file", "--ca", "--log"].includes(name)) {
      throw new TypeError(`bridge: unknown argument ${JSON.stringify(args[i])} (see bridge --help)`);
    }
    if (value === undefined) {
      if (i + 1 >= args.length) throw new TypeError(`bridge: ${name} needs a value`);
      value = args[++i];
    }
    if (name === "--listen") {
      try {
        opts.listen.push(parseHostPort(value));
      } catch (error) {
        throw new TypeError(`bridge: --listen: ${(error as Error).message}`);
      }
    } else if (name === "--to") {
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        throw new TypeError(`bridge: --to needs a ws:// or wss:// URL, got ${JSON.stringify(value)}`);
      }
      if (url.protocol !== "ws:" && url.protocol !== "wss:") {
        throw new TypeError(`bridge: --to needs a ws:// or wss:// URL, got ${JSON.stringify(value)}`);
      }
      opts.to = url.href;
    } else if (name === "--token-file") opts.tokenFile = value;
    else if (name === "--ca") opts.caFile = value;
    else if (value === "text" || value === "quiet") opts.log = value;
    else throw new TypeError(`bridge: --log must be text or quiet, got ${JSON.stringify(value)}`);
  }
  if (!opts.help && !opts.to) throw new TypeError("bridge: --to ws[s]://HOST/PATH is required");
  if (opts.listen.length === 0) opts.listen.push({ host: "127.0.0.1", port: 1080 });
  return opts;
}

/** Runs `edgesocks bridge` (the arguments after `bridge`). Resolves once it listens. */
export async function bridgeMain(adapter: RuntimeAdapter, host: BridgeHost): Promise<void> {
  let opts: BridgeOptions;
  let token: string | undefined;
  let ca: string | undefined;
  const read = async (what: string, path: string) => {
    try {
      return await host.readTextFile(path);
    } catch (error) {
      throw new TypeError(`bridge: ${readFailure(what, path, error)}`);
    }
  };
  try {
    opts = parseBridgeArgs(host.args().slice(1));
    if (opts.tokenFile !== undefined) {
      token = (await read("token file", opts.tokenFile)).split(/\r?\n/)[0].trim();
      if (!token) throw new TypeError(`bridge: token file ${opts.tokenFile}: its first line is empty`);
    }
    if (opts.caFile !== undefined) ca = await read("CA file", opts.caFile);
    if (!adapter.connectWebSocket) throw new TypeError(`bridge: ${adapter.name} has no WebSocket client`);
  } catch (error) {
    host.stderr(`edgesocks: ${error instanceof Error ? error.message : String(error)}`);
    return host.exit(2);
  }
  if (opts.help) return host.stdout(bridgeUsage(host.command()));
  const connect = adapter.connectWebSocket.bind(adapter);
  const wsOptions = {
    headers: token !== undefined ? { authorization: `Bearer ${token}` } : undefined,
    protocols: [WEBSOCKET_PROTOCOL],
    ca,
  };
  const shutdown = new AbortController();
  let open = 0;
  let stopping = false;
  const tunnel = (conn: Parameters<Parameters<RuntimeAdapter["listen"]>[1]>[0]) => {
    open++;
    connect(opts.to, wsOptions).then((ws) => relay(conn, fromWebSocket(ws), { signal: shutdown.signal }))
      .then((result) => {
        open--;
        if (result.end === "error" && opts.log === "text") {
          const reason = result.error instanceof Error ? result.error.message : String(result.error);
          host.stderr(`edgesocks: bridge: tunnel to ${opts.to} failed: ${reason}`);
        }
      }, (error) => {
        open--;
        conn.abort ? conn.abort() : conn.close();
        if (opts.log === "text") host.stderr(`edgesocks: bridge: ${opts.to}: ${(error as Error).message}`);
      });
  };
  const listeners: Listener[] = [];
  for (const address of opts.listen) {
    try {
      listeners.push(await adapter.listen(address, tunnel));
    } catch (error) {
      host.stderr(`edgesocks: bridge: ${listenFailure(address, error)}`);
      await Promise.all(listeners.map((l) => l.close()));
      return host.exit(1);
    }
  }
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    const count = open;
    Promise.all(listeners.map((l) => l.close())).then(() => {
      shutdown.abort();
      host.stderr(
        `edgesocks: bridge: ${why}: stopped (${count} open tunnel${count === 1 ? "" : "s"} closed)`,
      );
      host.exit(0);
    });
  };
  host.onSignal("SIGINT", () => stop("SIGINT"));
  host.onSignal("SIGTERM", () => stop("SIGTERM"));
  host.stdout(
    `edgesocks ${VERSION} bridge on ${adapter.name}: listening on ${
      listeners.map((l) => formatHostPort(l.address)).join(", ")
    } → ${opts.to}${token === undefined ? " (no token)" : ""}`,
  );
  if (opts.listen.some((a) => !isLoopbackHost(a.host))) {
    host.stderr(
      "WARNING: the bridge is listening on a non-loopback address: anyone who can reach it uses the " +
        "edge with your token.",
    );
  }
}
