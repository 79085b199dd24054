/**
 * A burst of simultaneous SOCKS5 CONNECTs through the CLI proxy (a
 * subprocess) to a fast loopback sender (another subprocess, which writes its
 * payload the moment it accepts): every tunnel must be granted (0x00) and
 * carry the whole payload, and no client connection may have needed a TCP
 * retransmission. On loopback nothing is lost on the wire, so a retransmitted
 * segment (the kernel's `retrans` count, read with `ss -ti` while the client
 * sockets are still open) means the proxy's accept queue overflowed and the
 * kernel dropped a SYN or a handshake's last ACK: that connection then waits
 * 1, 3, 7 s... for TCP to try again, which under a longer burst ends in the
 * proxy's "handshake timeout" or a client's own. The burst is twice the
 * accept queue runtimes give by default (511), so a proxy listening with the
 * default queue fails this test (most runs) even when every tunnel ends up
 * being served; speed is never asserted.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import process from "node:process";
import { join } from "node:path";
import {
  type ProxyProcess,
  ROOT,
  run,
  RUNTIME,
  socks5ConnectBytes,
  spawnProxy,
  toHex,
  until,
} from "./_fixtures.ts";
import { senderPayload } from "./_burst_payload.ts";

const TUNNELS = 1_000;
/**
 * Whether the runtime's adapter gives its listener an accept queue deeper than
 * the burst: Deno's does (`tcpBacklog`) and Node's (`server.listen({ backlog })`),
 * 4096 each. `Bun.listen` has no backlog option (it stays 512): there the
 * dropped SYNs are counted and reported, and only the tunnels themselves are
 * asserted.
 */
const DEEP_ACCEPT_QUEUE: Record<typeof RUNTIME, boolean> = { deno: true, node: true, bun: false };
const BYTES = 64 * 1024;

interface Tunnel {
  socket: Socket;
  localPort?: number;
  reply?: string;
  received: Uint8Array[];
  length: number;
  ended: boolean;
  error?: string;
  connectMs?: number;
}

/** The sender as a subprocess of the runtime running this file. */
function senderProgram(): { cmd: string; args: string[] } {
  const file = join(ROOT, "tests", "_burst_sender.ts");
  return RUNTIME === "deno"
    ? { cmd: process.execPath, args: ["run", "-A", file] }
    : { cmd: process.execPath, args: [file] };
}

/** Opens one tunnel: greeting and CONNECT pipelined, then reads the 10-byte reply and the payload to EOF. */
function open(proxyPort: number, destPort: number): Tunnel {
  const t0 = Date.now();
  // allowHalfOpen: the socket stays open after the sender's FIN, so that `ss` can still read its counters.
  const socket = connect({ host: "127.0.0.1", port: proxyPort, allowHalfOpen: true });
  const t: Tunnel = { socket, received: [], length: 0, ended: false };
  let head = new Uint8Array(0);
  socket.on("connect", () => {
    t.connectMs = Date.now() - t0;
    t.localPort = socket.localPort;
    socket.write(socks5ConnectBytes(destPort));
  });
  socket.on("data", (d: Uint8Array) => {
    if (t.reply === undefined) {
      head = Buffer.concat([head, d]);
      if (head.length < 12) return;
      t.reply = toHex(head.subarray(0, 12));
      d = head.subarray(12);
    }
    t.received.push(d);
    t.length += d.length;
  });
  socket.on("end", () => (t.ended = true));
  socket.on("error", (e: Error & { code?: string }) => {
    t.error ??= e.code ?? e.message;
    t.ended = true;
  });
  socket.on("close", () => (t.ended = true));
  return t;
}

/** Total retransmitted segments of each TCP socket from a local port to `peerPort`, as `ss -tin` reports them. */
async function retransmits(peerPort: number): Promise<Map<number, number>> {
  const r = await run("ss", ["-tinH"], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`ss failed: ${r.stderr}`);
  const lines = r.stdout.split("\n");
  const out = new Map<number, number>();
  for (let i = 0; i < lines.length; i++) {
    const f = lines[i].trim().split(/\s+/);
    if (f.length < 5 || !f[4].endsWith(`:${peerPort}`)) continue;
    const local = Number(f[3].slice(f[3].lastIndexOf(":") + 1));
    // The info line follows its socket's line; retrans:CURRENT/TOTAL is absent when nothing was retransmitted.
    const m = /\bretrans:\d+\/(\d+)/.exec(lines[i + 1] ?? "");
    out.set(local, m ? Number(m[1]) : 0);
  }
  return out;
}

describe(`burst: the CLI proxy on ${RUNTIME} as a subprocess`, () => {
  it(`${TUNNELS} simultaneous CONNECTs to a fast sender: all granted, all payloads whole, no SYN dropped`, {
    timeout: 90_000,
  }, async () => {
    const expected = senderPayload(BYTES);
    let sender: ProxyProcess | undefined;
    let proxy: ProxyProcess | undefined;
    const tunnels: Tunnel[] = [];
    try {
      sender = await spawnProxy([String(BYTES)], senderProgram());
      proxy = await spawnProxy(["--listen", "127.0.0.1:0", "--allow-private"]);
      // Warm the proxy up (the runtime compiles the session path on first use) with one tunnel.
      const first = open(proxy.port, sender.port);
      tunnels.push(first);
      await until(20_000, () => `warm-up tunnel: reply ${first.reply}, ${first.length} B`, () => first.ended);
      assert.equal(first.length, BYTES, `warm-up tunnel: reply ${first.reply}, error ${first.error}`);
      first.socket.destroy();
      tunnels.length = 0;

      // The burst: every socket is opened in the same tick.
      const t0 = Date.now();
      for (let i = 0; i < TUNNELS; i++) tunnels.push(open(proxy.port, sender.port));
      const pending = () => tunnels.filter((t) => !t.ended).length;
      await until(
        75_000,
        () =>
          `${pending()} of ${TUNNELS} tunnels still open; ${
            tunnels.filter((t) => t.reply).length
          } got a reply`,
        () => pending() === 0,
      );
      const burstMs = Date.now() - t0;

      const bad: string[] = [];
      const granted = "05 00 05 00 00 01"; // method "no auth", then VER REP=00 RSV ATYP=IPv4
      for (const [i, t] of tunnels.entries()) {
        if (t.error) bad.push(`tunnel ${i}: ${t.error} (reply ${t.reply ?? "none"}, ${t.length} B)`);
        else if (!t.reply?.startsWith(granted)) bad.push(`tunnel ${i}: reply ${t.reply ?? "none"}`);
        else if (t.length !== BYTES) bad.push(`tunnel ${i}: ${t.length} of ${BYTES} bytes`);
        else if (Buffer.compare(Buffer.concat(t.received), expected) !== 0) {
          bad.push(`tunnel ${i}: bytes differ`);
        }
      }
      assert.equal(
        bad.length,
        0,
        `${bad.length} of ${TUNNELS} tunnels failed, first ones:\n${bad.slice(0, 10).join("\n")}`,
      );

      // The kernel's witness: a retransmission on loopback is a segment the proxy's listener dropped.
      const counts = await retransmits(proxy.port);
      const ours = tunnels.map((t) => counts.get(t.localPort!));
      const missing = ours.filter((n) => n === undefined).length;
      assert.equal(missing, 0, `ss did not list ${missing} of the ${TUNNELS} client sockets`);
      const retransmitted = ours.filter((n) => n! > 0).length;
      const slowest = Math.max(...tunnels.map((t) => t.connectMs ?? 0));
      const dropped = `${retransmitted} of ${TUNNELS} client connections needed a TCP retransmission (the ` +
        `proxy's accept queue overflowed); slowest connect ${slowest} ms`;
      if (DEEP_ACCEPT_QUEUE[RUNTIME]) assert.equal(retransmitted, 0, dropped);
      else if (retransmitted > 0) console.log(`# burst on ${RUNTIME} (known, not asserted): ${dropped}`);
      console.log(
        `# burst on ${RUNTIME}: ${TUNNELS} tunnels × ${BYTES} B in ${burstMs} ms, slowest connect ${slowest} ms`,
      );
    } finally {
      for (const t of tunnels) t.socket.destroy();
      await proxy?.stop();
      await sender?.stop();
    }
  });
});
