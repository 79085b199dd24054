/**
 * Helpers for the admin endpoint, drain and reload tests: scraping with curl,
 * checking with promtool, reading one sample out of the text format, a
 * SOCKS5 login, and a slow download server.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import process from "node:process";
import { curl, type ProxyProcess, RawClient, run, startTcp, until, within } from "./_fixtures.ts";

/** The admin port from a startup line (`admin on http://127.0.0.1:PORT/`). */
export function adminPort(startup: string): number {
  const m = /admin on http:\/\/127\.0\.0\.1:(\d+)\//.exec(startup);
  assert.ok(m, `no admin address in ${startup}`);
  return Number(m[1]);
}

/** GET `path` from the admin endpoint with curl: status and body. */
export async function adminGet(
  port: number,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string }> {
  const r = await curl(["-X", method, "-w", "\n%{http_code}", `http://127.0.0.1:${port}${path}`]);
  assert.equal(r.code, 0, r.stderr);
  const nl = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
}

/** Runs `promtool check metrics` on `text`; asserts it finds nothing wrong. */
export async function promtoolCheck(text: string): Promise<void> {
  const r = await run("promtool", ["check", "metrics"], { input: text });
  assert.equal(r.code, 0, `promtool: ${r.stdout}${r.stderr}\n${text}`);
  assert.equal(r.stdout + r.stderr, "", `promtool found problems:\n${r.stdout}${r.stderr}`);
}

/** The value of the sample `name{labels}` (labels exactly as written, in order), or undefined. */
export function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Scrapes until `cond(text)` holds (records reach the metrics when connections end); returns the text. */
export async function scrapeUntil(
  port: number,
  what: string,
  cond: (text: string) => boolean,
): Promise<string> {
  let text = "";
  const t0 = Date.now();
  for (;;) {
    text = (await adminGet(port, "/metrics")).body;
    if (cond(text)) return text;
    if (Date.now() - t0 > 15_000) assert.fail(`timed out waiting for ${what}:\n${text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Greeting offering username/password, the RFC 1929 login and a CONNECT to 127.0.0.1:`port`. */
export function loginConnect(user: string, password: string, port: number, host = "127.0.0.1"): Uint8Array {
  const ip = host.split(".").map(Number);
  return Uint8Array.from([
    5,
    1,
    2,
    1,
    user.length,
    ...Buffer.from(user),
    password.length,
    ...Buffer.from(password),
    5,
    1,
    0,
    1,
    ...ip,
    port >> 8,
    port & 0xff,
  ]);
}

/** Opens a tunnel through the proxy with a login; asserts the replies say so. */
export async function openTunnel(proxyPort: number, user: string, password: string, port: number) {
  const c = await RawClient.open(proxyPort);
  c.send(loginConnect(user, password, port));
  const reply = await c.readExactly(2 + 2 + 10);
  assert.equal(reply.subarray(0, 5).toString("hex"), "0502010005", `login and connect as ${user}`);
  return c;
}

/** The bytes of the slow download: byte i is i mod 251 (a pattern a lost or repeated chunk breaks). */
export function pattern(length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = i % 251;
  return b;
}

/**
 * A server that sends {@linkcode pattern}(chunks × size) in `chunks` pieces,
 * one every `everyMs`, then its FIN: a download that takes a while.
 */
export function startSlowServer(chunks: number, size: number, everyMs: number) {
  const all = pattern(chunks * size);
  return startTcp((s) => {
    let i = 0;
    const timer = setInterval(() => {
      if (s.destroyed) return clearInterval(timer);
      s.write(all.subarray(i * size, (i + 1) * size));
      if (++i === chunks) {
        clearInterval(timer);
        s.end();
      }
    }, everyMs);
    s.on("close", () => clearInterval(timer));
    s.resume();
  });
}

/** Sends `signal` to the proxy process. */
export function signal(proxy: ProxyProcess, sig: "SIGTERM" | "SIGINT" | "SIGHUP"): void {
  process.kill(proxy.child.pid!, sig);
}

/** Resolves with the exit code once the proxy has exited (at most `ms`). */
export function exited(proxy: ProxyProcess, ms = 20_000): Promise<number | null> {
  if (proxy.child.exitCode !== null) return Promise.resolve(proxy.child.exitCode);
  return within(
    ms,
    "proxy exit",
    new Promise((resolve) => proxy.child.once("exit", (code) => resolve(code))),
  );
}

/** Waits for a line matching `re` on the proxy's standard error. */
export function stderrLine(proxy: ProxyProcess, re: RegExp, ms = 10_000): Promise<number> {
  return until(ms, () => `${re} in stderr: ${proxy.errors()}`, () => re.test(proxy.errors()));
}

/** True when a TCP connect to 127.0.0.1:`port` is refused. */
export async function refused(port: number): Promise<boolean> {
  try {
    const c = await RawClient.open(port);
    c.destroy();
    return false;
  } catch (error) {
    return (error as { code?: string }).code === "ECONNREFUSED";
  }
}
