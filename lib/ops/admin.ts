/**
 * The admin endpoint (`--admin HOST:PORT`): `/metrics` (Prometheus text
 * format), `/healthz` (200 while the process runs), `/readyz` (200, or 503
 * while draining), 404 for anything else.
 *
 * It is a tiny HTTP/1.1 responder over the runtime adapter's TCP `listen`,
 * not each runtime's own HTTP server: one code path for Deno, Bun and Node
 * (three servers would each differ in how they bind, report errors and
 * close), nothing new in the adapter contract, and all it ever answers is a
 * GET of three paths. It reads one request head (at most 8 KiB, within 5 s),
 * answers it with a `Content-Length` and `Connection: close`, and closes; at
 * most 64 connections at once.
 *
 * @module
 */
import type { ByteConnection, HostPort, Listener, RuntimeAdapter } from "../runtime.ts";

/**
 * What the endpoint reports.
 *
 * @example
 * ```ts
 * import { type AdminSource, emptySnapshot, exposition } from "@edgesocks/edgesocks";
 * const source: AdminSource = { metrics: () => exposition(emptySnapshot()), ready: () => true };
 * ```
 */
export interface AdminSource {
  /** The `/metrics` body (Prometheus text format 0.0.4). */
  metrics(): string | Promise<string>;
  /** False while draining: `/readyz` answers 503 then. */
  ready(): boolean;
}

/** The longest request head read. */
const MAX_HEAD = 8 * 1024;
/** Time to send a complete request head. */
const HEAD_TIMEOUT_MS = 5_000;
/** Admin connections served at once; more are closed at once (a scraper needs one). */
const MAX_ADMIN_CONNECTIONS = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The answer to one request line, as status, content type and body. */
export async function answer(
  method: string,
  target: string,
  source: AdminSource,
): Promise<{ status: number; type: string; body: string }> {
  const text = "text/plain; charset=utf-8";
  if (method !== "GET" && method !== "HEAD") return { status: 405, type: text, body: "method not allowed\n" };
  const path = target.split("?")[0];
  if (path === "/metrics") {
    return { status: 200, type: "text/plain; version=0.0.4; charset=utf-8", body: await source.metrics() };
  }
  if (path === "/healthz") return { status: 200, type: text, body: "ok\n" };
  if (path === "/readyz") {
    return source.ready()
      ? { status: 200, type: text, body: "ready\n" }
      : { status: 503, type: text, body: "draining\n" };
  }
  return { status: 404, type: text, body: "not found: try /metrics, /healthz or /readyz\n" };
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** The whole response, head and (unless `head`) body. */
export function response(status: number, type: string, body: string, head = false): Uint8Array {
  const bytes = encoder.encode(body);
  const lines = [
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}`,
    `Content-Type: ${type}`,
    `Content-Length: ${bytes.length}`,
    "Connection: close",
    "Cache-Control: no-store",
  ];
  if (status === 405) lines.push("Allow: GET, HEAD");
  const top = encoder.encode(lines.join("\r\n") + "\r\n\r\n");
  if (head) return top;
  const out = new Uint8Array(top.length + bytes.length);
  out.set(top);
  out.set(bytes, top.length);
  return out;
}

/** Reads up to the end of the request head; undefined when too long, cut short or too slow. */
async function readHead(conn: ByteConnection): Promise<string | "too_long" | undefined> {
  let head = "";
  for (;;) {
    const chunk = await conn.read();
    if (chunk === null) return undefined;
    head += decoder.decode(chunk, { stream: true });
    const end = head.indexOf("\r\n\r\n");
    const endLf = head.indexOf("\n\n");
    if (end >= 0 || endLf >= 0) return head;
    if (head.length > MAX_HEAD) return "too_long";
  }
}

/**
 * Listens on `address` with `adapter` and answers admin requests from
 * `source`. Resolves once listening.
 *
 * @example
 * ```ts
 * import { emptySnapshot, exposition, serveAdmin } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * let draining = false;
 * const admin = await serveAdmin(nodeAdapter, { host: "127.0.0.1", port: 9090 }, {
 *   metrics: () => exposition(emptySnapshot()),
 *   ready: () => !draining,
 * });
 * ```
 */
export function serveAdmin(
  adapter: Pick<RuntimeAdapter, "listen">,
  address: HostPort,
  source: AdminSource,
): Promise<Listener> {
  let open = 0;
  return adapter.listen(address, (conn) => {
    if (open >= MAX_ADMIN_CONNECTIONS) return conn.close();
    open++;
    const timer = setTimeout(() => conn.close(), HEAD_TIMEOUT_MS);
    void (async () => {
      try {
        const head = await readHead(conn);
        if (head === undefined) return;
        let reply: Uint8Array;
        const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]\r?\n/.exec(head);
        if (head === "too_long") {
          reply = response(431, "text/plain; charset=utf-8", "request head too long\n");
        } else if (!m) reply = response(400, "text/plain; charset=utf-8", "bad request\n");
        else {
          try {
            const a = await answer(m[1], m[2], source);
            reply = response(a.status, a.type, a.body, m[1] === "HEAD");
          } catch (error) {
            reply = response(500, "text/plain; charset=utf-8", `error: ${String(error)}\n`);
          }
        }
        await conn.write(reply);
        await conn.closeWrite();
        // What the client still sends is read and dropped, so that our answer is not lost to a reset.
        while (await conn.read() !== null) { /* drop */ }
      } catch {
        // The client went away.
      } finally {
        open--;
        clearTimeout(timer);
        conn.close();
      }
    })();
  });
}
