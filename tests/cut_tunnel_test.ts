/**
 * A tunnel the proxy cuts must not look complete: a download cut by the
 * server's shutdown (server.close() in-process, SIGTERM to the CLI) or by a
 * reset from the upstream reaches the client as a reset on Node and Bun,
 * never as a clean end of stream, and the upstream of a cut tunnel is reset
 * too. Deno's `Deno.Conn` cannot send a reset: there a client that is only
 * receiving gets a FIN after what was already sent (the limitation, pinned
 * so that a change shows), a client still sending gets the FIN and then a
 * reset from Linux, and the upstream a reset. Real TCP on 127.0.0.1, on each
 * runtime's own relay and on the generic one.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import type { RuntimeAdapter } from "../lib/runtime.ts";
import { RUNTIME, socks5ConnectBytes, spawnProxy, startProxy, startTcp, until } from "./_fixtures.ts";

/** Deno has no way to send a reset (RUNTIME_NOTES.md). */
const CAN_RESET = RUNTIME !== "deno";
const CHUNK = new Uint8Array(16 * 1024).fill(0x61);

/** Keeps writing to `s` as fast as it takes bytes, until it closes. */
function stream(s: Socket): void {
  const more = () => {
    while (!s.destroyed && !s.writableEnded) {
      if (!s.write(CHUNK)) return void s.once("drain", more);
    }
  };
  more();
}

/** How a socket's stream ended, as its owner sees it. */
interface Outcome {
  bytes: number;
  /** "fin" for a clean end of stream, else the error code (ECONNRESET): the first sign of the end. */
  end: string | undefined;
  /** Every sign of the end, in order. */
  seen: string[];
}

function watchEnd(s: Socket, o: Outcome): void {
  s.on("data", (d: Uint8Array) => (o.bytes += d.length));
  const saw = (what: string) => (o.seen.push(what), o.end ??= what);
  s.on("end", () => saw("fin"));
  s.on("error", (e: Error & { code?: string }) => saw(e.code ?? e.message));
  s.on("close", () => saw("closed"));
}

/** A download through the proxy on `port` from the sender on `target`: the reply read, then bytes counted. */
async function download(port: number, target: number, upload = false): Promise<{ s: Socket; o: Outcome }> {
  const s = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  const o: Outcome = { bytes: 0, end: undefined, seen: [] };
  s.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("error", reject);
  });
  s.write(socks5ConnectBytes(target));
  // Method choice (2) and reply (10), then the stream.
  let head = 12;
  s.on("data", function reply(d: Uint8Array) {
    const n = Math.min(head, d.length);
    head -= n;
    o.bytes -= n;
  });
  watchEnd(s, o);
  if (upload) {
    const tick = setInterval(() => !s.destroyed && !s.writableEnded && s.write("u"), 5);
    s.on("close", () => clearInterval(tick));
  }
  return { s, o };
}

function onGeneric(adapter: RuntimeAdapter): RuntimeAdapter {
  return { ...adapter, relay: undefined };
}

const LONG = 60_000;

for (const kind of ["native", "generic"] as const) {
  describe(`a tunnel cut by the proxy on ${RUNTIME}, ${kind} relay`, () => {
    for (const upload of [false, true]) {
      const what = upload ? "download and upload" : "download";
      it(`server.close() during a ${what}: the client sees ${CAN_RESET ? "a reset" : "a FIN"}`, async () => {
        const upstream: Outcome[] = [];
        const sender = await startTcp((s) => {
          const o: Outcome = { bytes: 0, end: undefined, seen: [] };
          upstream.push(o);
          watchEnd(s, o);
          stream(s);
        });
        const proxy = await startProxy(
          { policy: { allowPrivate: true } },
          kind === "generic" ? onGeneric : undefined,
        );
        let client: Socket | undefined;
        try {
          const d = await download(proxy.port, sender.port, upload);
          client = d.s;
          await until(LONG, () => `the download (${d.o.bytes} bytes)`, () => d.o.bytes >= 1 << 20);
          await proxy.close();
          await until(LONG, () => "the client's end", () => d.o.end !== undefined);
          await until(LONG, () => "the upstream's end", () => upstream[0]?.end !== undefined);
          if (CAN_RESET) {
            assert.equal(d.o.end, "ECONNRESET", "the client saw a cut tunnel end cleanly");
            assert.equal(upstream[0].end, "ECONNRESET", "the upstream saw a cut tunnel end cleanly");
          } else {
            // Deno: a client only receiving gets a FIN. A client still sending is reset by Linux: at once when
            // its bytes were unread at the close, else after the FIN, when its next bytes reach a closed socket.
            if (upload) {
              await until(LONG, () => `the client's reset (${d.o.seen})`, () => d.o.seen.includes("closed"));
              assert.ok(d.o.seen.some((e) => /^(ECONNRESET|EPIPE)$/.test(e)), `the client saw ${d.o.seen}`);
            } else assert.equal(d.o.end, "fin");
            // The upstream, still sending, is reset: its data unread, or more of it sent to a closed socket.
            await until(
              LONG,
              () => `the upstream's reset (${upstream[0].seen})`,
              () => upstream[0].seen.includes("closed"),
            );
            assert.ok(
              upstream[0].seen.some((e) => /^(ECONNRESET|EPIPE)$/.test(e)),
              `upstream: ${upstream[0].seen}`,
            );
          }
        } finally {
          client?.destroy();
          await proxy.close();
          await sender.close();
        }
      });
    }

    it(`an upstream reset mid-download reaches the client as ${CAN_RESET ? "a reset" : "a FIN"}`, async () => {
      let cut: () => void = () => {};
      const sender = await startTcp((s) => {
        stream(s);
        cut = () => s.resetAndDestroy();
      });
      const proxy = await startProxy(
        { policy: { allowPrivate: true } },
        kind === "generic" ? onGeneric : undefined,
      );
      let client: Socket | undefined;
      try {
        const d = await download(proxy.port, sender.port);
        client = d.s;
        await until(LONG, () => `the download (${d.o.bytes} bytes)`, () => d.o.bytes >= 1 << 20);
        cut();
        await until(LONG, () => "the client's end", () => d.o.end !== undefined);
        if (CAN_RESET) assert.equal(d.o.end, "ECONNRESET", "the client saw a reset tunnel end cleanly");
        else assert.equal(d.o.end, "fin");
      } finally {
        client?.destroy();
        await proxy.close();
        await sender.close();
      }
    });
  });
}

describe(`the CLI on ${RUNTIME} stopped by SIGTERM`, () => {
  it(`resets a download in flight${CAN_RESET ? "" : " (Deno: ends it with a FIN)"}`, async () => {
    const sender = await startTcp(stream);
    const proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private"]);
    let client: Socket | undefined;
    try {
      const d = await download(proxy.port, sender.port);
      client = d.s;
      await until(LONG, () => `the download (${d.o.bytes} bytes)`, () => d.o.bytes >= 1 << 20);
      assert.equal(await proxy.stop("SIGTERM"), 0);
      await until(LONG, () => "the client's end", () => d.o.end !== undefined);
      assert.equal(d.o.end, CAN_RESET ? "ECONNRESET" : "fin");
    } finally {
      client?.destroy();
      await proxy.stop();
      await sender.close();
    }
  });
});
