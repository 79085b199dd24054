/**
 * What the `deno serve` edge (`lib/cli/deno_serve.ts`) needs from Deno
 * itself, kept here with the other Deno code: the upgrade of a request to a
 * WebSocket, the process's environment, and exit.
 *
 * @module
 */
import type { WebSocketLike } from "../runtime.ts";

/**
 * `Deno.upgradeWebSocket`, selecting `protocol` when given. Throws (a
 * TypeError) for a request Deno will not upgrade (no `Sec-WebSocket-Key`, a
 * version other than 13, ...). The socket cannot pause reading: measured on
 * Deno 2.9, it reads every message as it arrives, and its `bufferedAmount`
 * counts what `send()` queued and the network has not taken yet.
 */
export function upgradeWebSocketDeno(
  request: Request,
  protocol: string | undefined,
): { socket: WebSocketLike; response: Response } {
  const { socket, response } = Deno.upgradeWebSocket(request, protocol ? { protocol } : {});
  return { socket, response };
}

/** The process's environment variables (needs `--allow-env`). */
export function denoEnvironment(): Record<string, string> {
  return Deno.env.toObject();
}

/** Ends the process with `code`. */
export function denoExit(code: number): never {
  Deno.exit(code);
}
